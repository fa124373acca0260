"""The viewer's queries over real outputs (`raydspy.viewer.output`): filtered pages, a rollout
with its trace, the reward histogram and the error breakdown, the runs of a folder. Outputs are
written by raydspy's own writers (tests/viewer_outputs.py; `Collect` for a real two-predictor
program); each answer is checked against the rows `read_rollouts` reads back. No Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from dspy.utils import DummyLM
from viewer_outputs import error_of, record, write_parts

from raydspy import Collect
from raydspy.core.stats import RolloutStats, error_type
from raydspy.core.storage import StorageOptions
from raydspy.pipeline.part_counts import PartCounts
from raydspy.pipeline.summary import read_rollouts
from raydspy.programs import orders
from raydspy.viewer import output as output_module
from raydspy.viewer.filters import ANY_ERROR, NO_ERROR, RolloutFilter
from raydspy.viewer.output import LIST_COLUMNS, OutputView
from raydspy.viewer.overview import MAX_EXACT_BARS, OVERVIEW_COLUMNS, Overview
from raydspy.viewer.sources import FolderRuns, RunUnknown

ROWS, PER_FILE = 230, 37  # 7 parts, the last one short


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    location = write_parts(str(tmp_path_factory.mktemp("viewer") / "run"), ROWS, PER_FILE)
    return location, read_rollouts(location).to_pylist()


class SpyView(OutputView):
    """An `OutputView` that records which files and columns each Parquet read touches (its
    queries', and its per-file counts')."""

    def __init__(self, *args, **kwargs):
        reads: list[tuple[tuple[str, ...], str, tuple[str, ...]]] = []

        class Counts(PartCounts):
            def read(self, location, path):
                reads.append(((path,), "batches", tuple(self.columns)))
                return super().read(location, path)

        super().__init__(*args, counts=Counts(Overview.of, OVERVIEW_COLUMNS), **kwargs)
        self.reads = reads

    def _dataset(self, files):
        dataset, reads = super()._dataset(files), self.reads

        class Recorded:
            def to_table(self, columns=None, filter=None):
                reads.append((tuple(files), "table", tuple(columns)))
                return dataset.to_table(columns=columns, filter=filter)

            def to_batches(self, columns=None):
                reads.append((tuple(files), "batches", tuple(columns)))
                return dataset.to_batches(columns=columns)

            def count_rows(self, filter=None):
                reads.append((tuple(files), "count", ()))
                return dataset.count_rows(filter=filter)

        return Recorded()


def _expected(rows, flt: RolloutFilter) -> list[dict]:
    def keep(row) -> bool:
        reward, error = row["reward"], row["error"]
        if flt.min_reward is not None and (reward is None or reward < flt.min_reward):
            return False
        if flt.max_reward is not None and (reward is None or reward > flt.max_reward):
            return False
        if flt.error == NO_ERROR and error is not None:
            return False
        if flt.error == ANY_ERROR and error is None:
            return False
        if flt.error not in (None, NO_ERROR, ANY_ERROR) and (error is None or error.split(":", 1)[0] != flt.error):
            return False
        return flt.example_id is None or row["example_id"] == flt.example_id

    return [row for row in rows if keep(row)]


FILTERS = [
    RolloutFilter(),
    RolloutFilter(min_reward=0.5),
    RolloutFilter(max_reward=0.25),
    RolloutFilter(min_reward=0.25, max_reward=0.5),
    RolloutFilter(min_reward=1.0, max_reward=1.0),
    RolloutFilter(error=NO_ERROR),
    RolloutFilter(error=ANY_ERROR),
    RolloutFilter(error="AdapterParseError"),
    RolloutFilter(error="Value"),  # not ValueError: a type is matched whole
    RolloutFilter(error="ValueError"),
    RolloutFilter(error="RewardError"),  # an error without a message
    RolloutFilter(example_id="ex-40"),
    RolloutFilter(min_reward=0.0, error=NO_ERROR, example_id="ex-12"),
    RolloutFilter(example_id="nope"),
]


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: str(f.params()) or "all")
def test_every_page_of_a_filter_together_is_exactly_its_rows_in_file_order(parts, flt):
    location, rows = parts
    view = OutputView(location.uri)
    expected = _expected(rows, flt)
    got, offset = [], 0
    while True:
        page = view.page(flt, offset, limit=17)
        assert page.total == len(expected) and page.offset == offset
        got += page.rows
        offset += 17
        if offset >= page.total:
            break
    assert [r["rollout_id"] for r in got] == [r["rollout_id"] for r in expected]
    for row in got:
        assert set(row) == {*LIST_COLUMNS, "part"}  # never the trace or the inputs
        assert isinstance(row["rewards"], dict) and (row["outputs"] is None or "reply" in row["outputs"])


def test_a_page_reads_the_list_columns_of_only_the_files_that_hold_it(parts):
    location, rows = parts
    view = SpyView(location.uri)
    files = view.files()
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
    k = next(k for k in range(1, len(files)) if sizes[k] == PER_FILE)  # a full part after the first
    offset = sum(sizes[:k]) + 3  # the part holds rows offset … offset + 9
    page = view.page(RolloutFilter(), offset=offset, limit=10)
    assert [r["rollout_id"] for r in page.rows] == [r["rollout_id"] for r in rows[offset:][:10]]
    tables = [(f, cols) for f, kind, cols in view.reads if kind == "table"]
    assert tables == [((files[k],), tuple(LIST_COLUMNS))]
    assert not [r for r in view.reads if r[1] == "count"]  # no filter: counts from the files' footers

    view.reads.clear()
    page = view.page(RolloutFilter(error=ANY_ERROR), offset=0, limit=5)
    counted = {f for f, kind, _ in view.reads if kind == "count"}
    assert counted == {(f,) for f in files}  # each part counted on the filter's columns
    view.reads.clear()
    view.page(RolloutFilter(error=ANY_ERROR), offset=5, limit=5)
    assert not [r for r in view.reads if r[1] == "count"]  # counts are cached per (file, filter)


def test_opening_a_rollout_reads_its_trace_from_its_part_only(parts, monkeypatch):
    location, rows = parts
    view = OutputView(location.uri)
    wanted = rows[3 * PER_FILE + 7]
    part = view.page(RolloutFilter(), 3 * PER_FILE + 7, 1).rows[0]["part"]
    assert part in {p.rsplit("/", 1)[-1] for p in view.files()}
    opened = []
    real = output_module.pq.read_table
    monkeypatch.setattr(output_module.pq, "read_table", lambda path, **kw: opened.append(path) or real(path, **kw))
    row = view.rollout(wanted["rollout_id"], part)
    assert opened == [location.join(part)]
    assert [call["predictor"] for call in row["trace"]] == ["extract", "confirm"]
    assert row["trace"][1]["completion"] == wanted["trace"][1]["completion"]
    assert row["inputs"] == json.loads(wanted["inputs"]) and row["part"] == part

    opened.clear()
    assert view.rollout(wanted["rollout_id"], "../../etc/passwd")["rollout_id"] == wanted["rollout_id"]
    assert location.join("../../etc/passwd") not in opened  # only committed files are ever opened
    assert view.rollout("0" * 32) is None


def test_the_error_breakdown_counts_as_the_run_summary_does(parts):
    location, rows = parts
    totals = OutputView(location.uri).totals().stats
    stats = RolloutStats.of(read_rollouts(location))
    assert totals.rows == stats.rows == ROWS
    assert totals.errors_by_type == stats.errors_by_type
    assert set(totals.errors_by_type) == {"AdapterParseError", "Value", "ValueError", "RewardError"}
    assert totals.errors_by_count[0] == (
        "AdapterParseError",
        sum(1 for i in range(ROWS) if (error_of(i) or "").startswith("AdapterParseError")),
    )
    assert totals.mean_reward == pytest.approx(stats.mean_reward)
    assert totals.format_rate == pytest.approx(stats.format_rate)
    # One type counts: the viewer's counts are RolloutStats of the columns it reads, part by part.
    assert totals == RolloutStats.of(read_rollouts(location).select(OVERVIEW_COLUMNS))


def test_one_rule_types_errors_in_python_in_arrow_and_in_a_scan(parts):
    location, rows = parts
    errors = [r["error"] for r in rows if r["error"] is not None] + ["", "A:b:c", "NoColon"]
    array = error_type(pa.array(errors)).to_pylist()
    assert array == [error_type(e) for e in errors] == [e.split(":", 1)[0] for e in errors]
    view = OutputView(location.uri)
    for kind in set(array) - {""}:  # ("" is no filter)
        wanted = [r["rollout_id"] for r in rows if r["error"] is not None and error_type(r["error"]) == kind]
        assert [r["rollout_id"] for r in view.page(RolloutFilter(error=kind), 0, ROWS).rows] == wanted
    table = pads.dataset(pa.table({"error": ["A:b: c", "A", "AB: x", None]}))
    counts = {kind: table.count_rows(filter=RolloutFilter(error=kind).expression()) for kind in ("A", "A:b", "AB")}
    assert counts == {"A": 2, "A:b": 0, "AB": 1}  # a type never holds a colon


def test_few_distinct_rewards_get_one_bar_each(parts):
    location, rows = parts
    totals, bars = OutputView(location.uri).overview()
    counts = Counter(r["reward"] for r in rows if r["reward"] is not None)
    assert [(b.low, b.high, b.count) for b in bars] == [(v, v, counts[v]) for v in sorted(counts)]
    assert all(b.exact for b in bars) and bars[1].label == "0.25"


def test_continuous_rewards_get_equal_bins_over_their_range(tmp_path):
    location = write_parts(str(tmp_path / "run"), 60, 25)
    rows = read_rollouts(location)
    rewards = np.linspace(-1.0, 3.0, 60) ** 2  # 60 distinct values: more than MAX_EXACT_BARS
    assert len(set(rewards)) > MAX_EXACT_BARS
    for path in sorted(tmp_path.glob("run/*.parquet")):  # rewrite each part's rewards in place
        table = pq.read_table(path)
        ids = table.column("rollout_id").to_pylist()
        index = [rows.column("rollout_id").to_pylist().index(i) for i in ids]
        table = table.set_column(table.schema.get_field_index("reward"), "reward", [[float(rewards[i]) for i in index]])
        pq.write_table(table, path)
    totals, bars = OutputView(location.uri).overview(bins=8)
    expected, edges = np.histogram(rewards, bins=8)
    assert [b.count for b in bars] == expected.tolist() and sum(b.count for b in bars) == 60
    assert [b.low for b in bars] == pytest.approx(edges[:-1].tolist()) and bars[-1].high == pytest.approx(9.0)
    assert totals.spread.exact is None and not bars[0].exact


def test_totals_of_a_live_run_read_only_the_new_parts(tmp_path):
    location = write_parts(str(tmp_path / "run"), 40, 20, manifest=False)
    view = SpyView(location.uri)
    assert view.totals().stats.rows == 40
    before = set(view.files())
    view.reads.clear()
    write_parts(location.uri, 20, 20, start=40, manifest=False)
    assert view.totals().stats.rows == 60
    (new,) = set(view.files()) - before
    assert view.reads == [((new,), "batches", tuple(OVERVIEW_COLUMNS))]  # one new part, 3 columns
    assert view.totals() == OutputView(location.uri).totals()


def test_filters_validate_and_round_trip_as_query_parameters():
    with pytest.raises(ValueError, match="finite"):
        RolloutFilter(min_reward=float("inf"))
    flt = RolloutFilter(min_reward=0.1, max_reward=0.30000000000000004, error="X", example_id="e 1")
    assert flt.params() == {"min_reward": "0.1", "max_reward": "0.30000000000000004", "error": "X", "example_id": "e 1"}
    assert RolloutFilter().empty and RolloutFilter().expression() is None and not flt.empty


def test_a_collect_output_of_the_two_stage_program(tmp_path):
    """`Collect` on the orders program (two predictors), a DummyLM answering: some parse, one does not."""
    answers = [{"city": "Oslo", "quantity": "3", "item": "chairs"}, {"reply": "Three chairs to Oslo."}] * 3
    lm = DummyLM(answers + [{"city": "Oslo", "quantity": "many", "item": "x"}] * 2)
    examples = [
        {"id": "a", "message": "3 chairs to Oslo", "city": "Oslo", "quantity": 3, "item": "chair"},
        {"id": "b", "message": "many to Oslo", "city": "Oslo", "quantity": 2, "item": "x"},
    ]
    Collect(orders.program(), str(tmp_path), reward_fn=orders.rewards(), lm=lm, num_threads=1).collect(examples, n=2)
    view = OutputView(str(tmp_path))
    page = view.page()
    assert page.total == 4 and {r["part"] for r in page.rows} == {p.name for p in tmp_path.glob("rollouts-*.parquet")}
    failed = view.page(RolloutFilter(error="AdapterParseError")).rows
    assert len(failed) == 1 and failed[0]["outputs"] is None
    done = view.rollout(view.page(RolloutFilter(error=NO_ERROR)).rows[0]["rollout_id"])
    assert [c["predictor"] for c in done["trace"]] == ["extract", "confirm"]
    assert done["trace"][1]["completion"].strip().endswith("Three chairs to Oslo.")
    assert view.card().startswith("---\n") and view.manifests() == []


def test_manifests_and_card_of_a_pipeline_output(parts):
    location, _ = parts
    (manifest,) = OutputView(location.uri).manifests()
    assert manifest.kind == "run" and manifest.files == 7 and manifest.stats.rows == ROWS
    assert OutputView(location.uri).card() is None


def test_an_output_on_s3(s3_server):
    storage = StorageOptions(s3_endpoint_url=s3_server)
    location = write_parts("s3://rollouts/viewer/run", 50, 20, storage=storage)
    view = OutputView(location.uri, storage)
    assert view.totals().stats.rows == 50 and len(view.files()) == 3
    page = view.page(RolloutFilter(example_id="ex-7"))
    assert [r["rollout_index"] for r in page.rows] == [0, 1]
    row = view.rollout(page.rows[1]["rollout_id"], page.rows[1]["part"])
    assert row["trace"][0]["completion"] == record(15).trace[0].completion
    runs = FolderRuns("s3://rollouts/viewer", storage).runs()
    assert [(r.id, r.done) for r in runs] == [("run", 50)]


def test_a_folder_of_outputs_is_a_run_each_and_its_state_comes_from_the_files(tmp_path):
    write_parts(str(tmp_path / "a"), 10, 5)
    write_parts(str(tmp_path / "b"), 6, 6)
    (tmp_path / "notes").mkdir()
    source = FolderRuns(str(tmp_path))
    assert [(r.id, r.done, r.output_uri) for r in source.runs()] == [
        ("a", 10, f"{tmp_path}/a"),
        ("b", 6, f"{tmp_path}/b"),
    ]
    assert source.run("a").state == "WRITING"  # parts and no card: a run is committing (or died)
    card = tmp_path / "a" / "README.md"
    card.write_text("---\n---\n")
    newest = max(p.stat().st_mtime for p in (tmp_path / "a").glob("*.parquet"))
    os.utime(card, (newest + 5, newest + 5))
    run = source.run("a")
    assert (run.state, run.terminal, run.errors) == ("WRITTEN", True, sum(error_of(i) is not None for i in range(10)))
    with pytest.raises(RunUnknown):
        source.run("notes")
    single = FolderRuns(str(tmp_path / "b"))
    assert [r.id for r in single.runs()] == ["b"]


def test_the_viewer_runs_without_ray():
    """``raydspy view`` is for a laptop too: the viewer's modules load no Ray."""
    script = "import raydspy.viewer, raydspy.cli.view, sys; print('ray' in {m.split('.')[0] for m in sys.modules})"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
