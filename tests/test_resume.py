"""Exactly once and resumable, on a real local Ray, with a fake OpenAI server (these tests are
about the pipeline's bookkeeping, not the LM) behind a fault-injecting proxy."""

from __future__ import annotations

import json

import dspy
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.data
from fake_openai import FakeOpenAI
from fault_proxy import FaultProxy

from raydspy import InputError
from raydspy.core.identity import rollout_seed
from raydspy.core.retries import RetryPolicy
from raydspy.core.rollouts import RolloutRecord, records_to_table
from raydspy.core.runner import RolloutRunner
from raydspy.core.storage import resolve
from raydspy.pipeline import INVALID_DIR, PipelineConfig, run_pipeline
from raydspy.pipeline.commits import commit_rollouts, committed_files, read_committed
from raydspy.pipeline.summary import committed_before, summarize, summarize_committed, summarize_run
from raydspy.pipeline.validation import check_input, input_field_types
from raydspy.teacher.client import TeacherConfig

FAST_RETRY = RetryPolicy(max_attempts=6, initial_wait_s=0.01, max_wait_s=0.05, deadline_s=30)


class QA(dspy.Module):
    input_fields = ["question"]

    def __init__(self):
        super().__init__()
        self.answer = dspy.Predict("question -> answer")

    def forward(self, question):
        return self.answer(question=question)


def _teacher(url: str, **overrides) -> TeacherConfig:
    return TeacherConfig(**{"base_url": url, "model": "fake-model", "cache": False, "retry": FAST_RETRY, **overrides})


def _questions(path, count: int, start: int = 0):
    path.write_text("".join(json.dumps({"question": f"question {i}?"}) + "\n" for i in range(start, start + count)))
    return path


def _rows(uri: str) -> list[dict]:
    return read_committed(resolve(uri))[0].to_pylist()


def test_retrying_lm_rides_out_each_kind_of_fault():
    faults = ["500", "429", "drop", "503"]
    with (
        FakeOpenAI({"answer": "a"}) as server,
        FaultProxy(server.url, lambda k: faults[k] if k < 4 else "pass") as proxy,
    ):
        runner = RolloutRunner(QA(), lm=_teacher(proxy.url).lm())
        result = runner.run({"question": "why?"}, 0)

    assert result.record.error is None and result.prediction.answer.startswith("a")
    assert proxy.faults == {"500": 1, "429": 1, "drop": 1, "503": 1, "pass": 1}
    [call] = result.record.trace  # one LM call, answered on its fifth attempt
    assert call.error is None and call.completion.startswith("[[ ## answer ## ]]")


def test_a_request_that_times_out_is_retried_by_default():
    # A saturated teacher queues requests for minutes; the default retry deadline must outlast the
    # default request timeout, or a request that timed out once would never be sent again.
    teacher = TeacherConfig()
    assert teacher.lm().kwargs["timeout"] == teacher.timeout_s == 600.0
    assert teacher.retry.deadline_s > teacher.timeout_s
    # ... and a timed-out request is retried: the first answer comes after the 0.5 s timeout.
    delays = iter([2.0, 0.0])
    with FakeOpenAI({"answer": "a"}) as server:
        server.delay_for = lambda: next(delays, 0.0)
        runner = RolloutRunner(QA(), lm=_teacher(server.url, timeout_s=0.5).lm())
        result = runner.run({"question": "why?"}, 0)
    assert result.record.error is None and server.arrivals == 2


@pytest.mark.parametrize("resume", ["planner filter", "hash join"])
def test_resume_runs_only_the_missing_rollouts(ray_local, tmp_path, monkeypatch, resume):
    """Both ways a resumed run leaves out what is committed: the planner's filter (up to
    FILTER_COMMITTED_MAX committed rollouts) and, above it, the hash join."""
    from raydspy.pipeline import planning

    monkeypatch.setattr(planning, "FILTER_COMMITTED_MAX", 1_000_000 if resume == "planner filter" else 0)
    joins, join = [], ray.data.Dataset.join
    monkeypatch.setattr(ray.data.Dataset, "join", lambda self, *a, **k: joins.append(1) or join(self, *a, **k))
    out = str(tmp_path / "out")
    with FakeOpenAI({"answer": "a"}) as server:
        teacher = _teacher(server.url)
        first = run_pipeline(
            QA(),
            teacher,
            PipelineConfig(
                input_uri=str(_questions(tmp_path / "q.jsonl", 12)), output_uri=out, n=2, batch_size=4, limit=5
            ),
        )
        assert (first.planned, first.resumed, first.new_rows, first.complete) == (10, 0, 10, True)
        calls_before = len(server.requests)

        config = PipelineConfig(input_uri=str(tmp_path / "q.jsonl"), output_uri=out, n=2, batch_size=4)
        second = run_pipeline(QA(), teacher, config)
        assert (second.planned, second.resumed, second.new_rows) == (24, 10, 14)
        assert len(server.requests) - calls_before == 14  # the missing rollouts, not one more

        third = run_pipeline(QA(), teacher, config)
        assert (third.resumed, third.new_rows, third.rows, third.complete) == (24, 0, 24, True)
        assert len(server.requests) - calls_before == 14
    assert len(joins) == (0 if resume == "planner filter" else 2)

    rows = _rows(out)
    assert len(rows) == 24 and len({r["rollout_id"] for r in rows}) == 24
    assert sorted((r["inputs"], r["rollout_index"]) for r in rows) == sorted(
        (json.dumps({"question": f"question {i}?"}), k) for i in range(12) for k in range(2)
    )
    # The dataset card describes the whole output, not the last run, and `datasets` reads the
    # rollouts it names (not the manifests), less the `rewards` map it cannot read.
    import datasets

    card = (tmp_path / "out" / "README.md").read_text()
    assert "24 rollouts of the DSPy program `QA`, 2 per example, from the teacher `fake-model`" in card
    loaded = datasets.load_dataset(out, split="train", cache_dir=str(tmp_path / "hf"))
    assert sorted(loaded["rollout_id"]) == sorted(r["rollout_id"] for r in rows)
    assert "rewards" not in loaded.column_names and loaded[0]["trace"][0]["completion"]


def test_a_seeded_run_sends_each_rollout_its_own_seed_from_the_workers(ray_local, tmp_path):
    # The seed travels in TeacherConfig to every Collect actor; each request must carry the seed
    # of the rollout it belongs to, so a rerun (or another client given the ids) samples the same.
    out = str(tmp_path / "out")
    with FakeOpenAI({"answer": "a"}) as server:
        config = PipelineConfig(input_uri=str(_questions(tmp_path / "q.jsonl", 4)), output_uri=out, n=2)
        run_pipeline(QA(), _teacher(server.url, seed=3), config)
        sent = sorted(r["seed"] for r in server.requests)
    assert sent == sorted(rollout_seed(r["rollout_id"]) for r in _rows(out)) and len(set(sent)) == 8


def test_unreachable_teacher_defers_rollouts_and_a_rerun_does_them(ray_local, tmp_path):
    out = str(tmp_path / "out")
    config = PipelineConfig(
        input_uri=str(_questions(tmp_path / "q.jsonl", 6)), output_uri=out, n=2, batch_size=3, max_error_rate=1.0
    )
    fast_give_up = RetryPolicy(max_attempts=2, initial_wait_s=0.01, max_wait_s=0.02, deadline_s=5)
    with FakeOpenAI({"answer": "a"}) as server:
        with FaultProxy(server.url, lambda k: "503") as down:
            summary = run_pipeline(QA(), _teacher(down.url, retry=fast_give_up), config)
        assert (summary.new_rows, summary.deferred, summary.missing, summary.complete) == (0, 12, 12, False)
        assert committed_files(resolve(out)) == []  # failures of the teacher are not rows

        summary = run_pipeline(QA(), _teacher(server.url), config)
    assert (summary.new_rows, summary.rows, summary.error_rows, summary.complete) == (12, 12, 0, True)


def test_error_budget_stops_a_run_whose_teacher_is_down(ray_local, tmp_path):
    config = PipelineConfig(
        input_uri=str(_questions(tmp_path / "q.jsonl", 200)),
        output_uri=str(tmp_path / "out"),
        batch_size=4,
        num_actors=1,
        threads_per_actor=4,
        max_error_rate=0.5,
    )
    fast_give_up = RetryPolicy(max_attempts=1, initial_wait_s=0.01, max_wait_s=0.01, deadline_s=1)
    with FakeOpenAI({"answer": "a"}) as server, FaultProxy(server.url, lambda k: "500") as down:
        summary = run_pipeline(QA(), _teacher(down.url, retry=fast_give_up), config)
    assert summary.stopped and summary.stopped.startswith("error budget exceeded")
    assert "LMServerError" in summary.stopped
    assert summary.deferred < 200 and summary.rows == 0


def test_invalid_rows_are_refused_with_their_row_numbers(ray_local, tmp_path):
    path = tmp_path / "q.jsonl"
    rows = [
        {"id": "a", "question": "fine?"},
        {"id": "b", "question": ""},
        {"id": "c", "question": None},
        {"id": "a", "question": "same id?"},
        {"id": "d", "question": "   "},
        {"id": "e", "question": "x" * 4000},
        {"id": "f", "question": "also fine?"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = PipelineConfig(input_uri=str(path), output_uri=str(tmp_path / "out"), id_field="id", dry_run=True)

    with pytest.raises(InputError) as caught:
        run_pipeline(QA(), TeacherConfig(), config)
    message = str(caught.value)
    assert message.startswith(
        f"examples in {str(path)!r}: 5 of 7 rows are invalid: row 0 (id a): duplicate example id (also row 3)"
    )
    assert "row 1 (id b): field 'question' is an empty string" in message
    assert "row 2 (id c): field 'question' is empty (null)" in message
    assert "--skip-invalid" in message
    assert not committed_files(resolve(str(tmp_path / "out")))

    summary = run_pipeline(QA(), TeacherConfig(), config.model_copy(update={"skip_invalid": True}))
    assert summary.invalid_rows == 5 and summary.rows == 2  # rows 5 (4,000 chars) fits: no context known in a dry run
    listed = [json.loads(line) for line in open(summary.invalid_file)]
    assert [r["row"] for r in listed] == [0, 1, 2, 3, 4] and listed[3]["example"]["question"] == "same id?"
    assert f"/{INVALID_DIR}/" in summary.invalid_file


def test_too_long_inputs_are_invalid_against_the_teachers_context(ray_local):
    dataset = ray.data.from_items([{"question": "short"}, {"question": "x" * 4000}])
    checked = check_input(dataset, ["question"], max_input_tokens=512)
    assert [r.describe() for r in checked.invalid] == [
        f"row 1 (id {checked.invalid[0].example_id}): input is ~1000 tokens, over the 512 the teacher's context leaves"
    ]


def test_duplicates_across_blocks_keep_their_rows_and_leave_the_context_as_it_was(ray_local):
    rows = [{"id": f"e{i}", "question": f"q{i}"} for i in range(40)] + [{"id": "e3", "question": "again"}]
    dataset = ray.data.from_items(rows, override_num_blocks=6)
    context = dataset.context
    strategy, order = context.shuffle_strategy, context.execution_options.preserve_order

    checked = check_input(dataset, ["question"], id_field="id")

    assert checked.rows == 41 and [(r.row, r.example_id) for r in checked.invalid] == [(3, "e3"), (40, "e3")]
    assert checked.invalid[0].reason == "duplicate example id (also row 40)"
    # The group-by's sort shuffle and the ordered pass are for the check only: the run's plan
    # (its resume join, its streaming) shares this context.
    assert (context.shuffle_strategy, context.execution_options.preserve_order) == (strategy, order)


def test_values_of_the_wrong_type_are_invalid(ray_local):
    class Count(dspy.Signature):
        items: list[str] = dspy.InputField()
        limit: int = dspy.InputField()
        total: int = dspy.OutputField()

    program = dspy.Predict(Count)
    types = input_field_types(program, ["items", "limit"])
    dataset = ray.data.from_items(
        [
            {"items": ["a"], "limit": 3.0},
            {"items": ["b"], "limit": 2.5},
            {"items": ["c"], "limit": None},
            {"items": None, "limit": 1.0},
        ]
    )
    checked = check_input(dataset, ["items", "limit"], field_types=types)
    assert [(r.row, r.reason) for r in checked.invalid] == [
        (1, "field 'limit' is a float (2.5), expected int"),
        (2, "field 'limit' is empty (null)"),
        (3, "field 'items' is empty (null)"),
    ]
    words = check_input(
        ray.data.from_items([{"items": ["a"], "limit": "three"}]), ["items", "limit"], field_types=types
    )
    assert [r.reason for r in words.invalid] == ["field 'limit' is a str ('three'), expected int"]


def test_unparseable_input_is_an_input_error(ray_local, tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "fine"}\n{"question": ["a", "list"]}\n')
    with pytest.raises(InputError, match=rf"cannot read examples from {str(path)!r}"):
        run_pipeline(
            QA(), TeacherConfig(), PipelineConfig(input_uri=str(path), output_uri=str(tmp_path / "o"), dry_run=True)
        )


def _records(ids: list[str]) -> pa.Table:
    return records_to_table(
        [
            RolloutRecord(
                rollout_id=i,
                example_id="e",
                rollout_index=k,
                inputs={},
                outputs={"a": 1},
                trace=[],
                reward=None,
                rewards={},
                error=None,
                dry_run=False,
                program_hash="p",
                teacher="t",
            )
            for k, i in enumerate(ids)
        ]
    )


def test_a_retried_batch_replaces_its_own_file(tmp_path):
    location = resolve(str(tmp_path))
    first = commit_rollouts(location, _records(["r1", "r2"]))
    again = commit_rollouts(location, _records(["r2", "r1"]))
    assert first == again and committed_files(location) == [first]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_readers_keep_one_row_per_rollout_id(tmp_path):
    location = resolve(str(tmp_path))
    commit_rollouts(location, _records(["r1", "r2"]))
    commit_rollouts(location, _records(["r2", "r3"]))
    (tmp_path / "_invalid").mkdir()
    pq.write_table(_records(["x"]), tmp_path / "_invalid" / "ignored.parquet")
    (tmp_path / ".part-tmp.parquet").write_bytes(b"half a file")
    table, dropped = read_committed(location)
    assert sorted(table.column("rollout_id").to_pylist()) == ["r1", "r2", "r3"] and dropped == 1


def test_the_summary_reads_one_file_at_a_time_and_counts_each_rollout_once(tmp_path):
    location = resolve(str(tmp_path))
    commit_rollouts(location, _records(["r1", "r2"]))
    commit_rollouts(location, _records(["r2", "r3"]))
    summary, dropped = summarize_committed(location)
    whole = summarize(read_committed(location)[0])
    assert dropped == 1 and summary.rows == whole.rows == 3
    assert (summary.error_rows, summary.mean_reward, summary.format_rate, summary.completion_tokens) == (
        whole.error_rows,
        whole.mean_reward,
        whole.format_rate,
        whole.completion_tokens,
    )


def test_a_runs_summary_adds_counts_up_and_reads_back_only_parts_no_manifest_lists(tmp_path, monkeypatch):
    from raydspy.core.stats import RolloutStats
    from raydspy.pipeline import summary as summary_module
    from raydspy.pipeline.manifests import MANIFEST_DIR, read_manifests, write_manifest

    location = resolve(str(tmp_path))
    name = lambda path: path.rsplit("/", 1)[-1]  # noqa: E731
    read = []
    real = summary_module.committed_stats
    monkeypatch.setattr(summary_module, "committed_stats", lambda loc, files: (read.extend(files), real(loc, files))[1])

    def run(ids: list[str]) -> summary_module.RunSummary:
        before = committed_before(location, committed_files(location))
        written = name(commit_rollouts(location, _records(ids)))
        stats = RolloutStats.of(_records(ids))
        write_manifest(location, {written: stats})  # the commit gate's part
        return summarize_run(location, before, stats, elapsed_s=1.0)

    assert run(["r1", "r2"]).rows == 2 and read == []
    # A run whose driver died: its part has no manifest. The next run reads that part, once.
    orphan = name(commit_rollouts(location, _records(["r3"])))
    assert run(["r4", "r5"]).rows == 5 and [name(f) for f in read] == [orphan]
    assert len(list((tmp_path / MANIFEST_DIR).glob("recovered-*.json"))) == 1
    read.clear()
    summary = run(["r6"])
    assert summary.rows == 6 and read == [] and len(summary.files) == 4
    whole, _ = summarize_committed(location)
    assert (summary.rows, summary.completion_tokens, summary.error_rows) == (
        whole.rows,
        whole.completion_tokens,
        whole.error_rows,
    )
    # A part deleted by hand (to collect it again) stops counting, though a manifest lists it.
    (tmp_path / orphan).unlink()
    present = {name(f) for f in committed_files(location)}
    assert read_manifests(location, present).stats.rows == 5 and run(["r3"]).rows == 6


def _in_flight_profile(windows: list[tuple[float, float]]) -> tuple[int, float]:
    """The most requests ever in flight, and their time-weighted mean from the first request's
    start to the last request's start (the part of a run where work was still waiting)."""
    events = sorted([(start, 1) for start, _ in windows] + [(end, -1) for _, end in windows])
    horizon = max(start for start, _ in windows)
    level = peak = 0
    area, previous = 0.0, events[0][0]
    for when, step in events:
        if when > horizon:
            break
        area += level * (when - previous)
        level, previous = level + step, when
        peak = max(peak, level)
    return peak, area / (horizon - events[0][0])


@pytest.fixture
def another_dataset(ray_local):
    """A slow dataset executing meanwhile: Ray Data then splits the cluster's resources between
    the two executions, as it does beside another run on a shared cluster."""
    import time

    iterator = iter(
        ray.data.range(200, override_num_blocks=100)
        .map_batches(lambda batch: (time.sleep(1), batch)[1])
        .iter_batches(batch_size=1)
    )
    next(iterator)
    yield
    del iterator


@pytest.mark.parametrize("beside", ["alone", "beside another dataset"])
def test_every_thread_stays_busy_until_the_work_runs_out(ray_local, tmp_path, request, beside):
    # 2 actors x 3 threads, 24 rollouts of 3 s: six requests in flight, never more, from the first
    # wave until the last rollouts start (less the few tenths of a second Ray Data takes to hand a
    # free thread its next rollout); an actor's own queue would leave the other idle. Beside another
    # dataset, Ray Data's budget admits fewer upstream blocks at a time: the planner's calls must
    # still hand out whole waves (PipelineConfig.plan_size); with one input block each, two requests
    # were in flight of six.
    if beside != "alone":
        request.getfixturevalue("another_dataset")
    with FakeOpenAI({"answer": "a"}, delay_s=3.0) as server:
        config = PipelineConfig(
            input_uri=str(_questions(tmp_path / "q.jsonl", 12)),
            output_uri=str(tmp_path / "out"),
            n=2,
            batch_size=4,
            num_actors=2,
            threads_per_actor=3,
        )
        summary = run_pipeline(QA(), _teacher(server.url), config)
        windows = sorted(server.windows)

    assert summary.complete and summary.rows == 24 and len(windows) == 24
    peak, mean = _in_flight_profile(windows)
    starts = [round(start - windows[0][0], 2) for start, _ in windows]
    print(f"{beside}: peak {peak}, mean in flight {mean:.2f}; starts {starts}")
    assert peak == 6, (peak, starts)
    assert mean >= 0.75 * 6, f"mean in flight {mean:.2f} of 6; requests started at {starts} s"
    # Commits are batched apart from the calls: 4 examples x 2 rollouts a file, rounded up to whole
    # calls of 3 rollouts (PipelineConfig.rows_per_file): 9, 9, and the 6 left.
    sizes = sorted(pq.read_metadata(f).num_rows for f in committed_files(resolve(config.output_uri)))
    assert sizes == [6, 9, 9]


def test_a_run_stopped_by_its_error_budget_summarises_what_its_output_holds(ray_local, tmp_path):
    # Every completion fails to parse: the rollouts are rows (with their error), committed while
    # the driver decides to stop, and more commit after it (the batches in flight). Every figure
    # of the summary must agree with the output.
    config = PipelineConfig(
        input_uri=str(_questions(tmp_path / "q.jsonl", 300)),
        output_uri=str(tmp_path / "out"),
        batch_size=2,
        num_actors=2,
        threads_per_actor=8,
        max_error_rate=0.5,
    )
    with FakeOpenAI(reply=lambda request, k: "no format at all") as server:
        summary = run_pipeline(QA(), _teacher(server.url), config)
    assert summary.stopped and summary.stopped.startswith("error budget exceeded")
    rows = _rows(str(tmp_path / "out"))
    assert summary.rows == len(rows) == summary.new_rows == summary.error_rows > 0
    assert summary.resumed == 0 and summary.planned == 300
    assert summary.missing == summary.planned - summary.new_rows > 0
    assert summary.errors_by_type == {"AdapterParseError": len(rows)}
