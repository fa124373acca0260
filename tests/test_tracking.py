"""MLflow tracking of a collection run (`raydspy collect --mlflow`), in a real local MLflow store."""

from __future__ import annotations

import datetime as dt
import json

import dspy
import pytest

from raydspy.core.rollouts import RolloutRecord, records_to_table
from raydspy.core.stats import RolloutStats
from raydspy.core.storage import resolve
from raydspy.core.tracing import LMCall
from raydspy.errors import ConfigError
from raydspy.pipeline import PipelineConfig
from raydspy.pipeline.commits import commit_rollouts
from raydspy.pipeline.manifests import relative_name, write_manifest
from raydspy.pipeline.summary import RunSummary
from raydspy.programs import orders
from raydspy.teacher.client import TeacherConfig

mlflow = pytest.importorskip("mlflow")

PROGRAM = "raydspy.programs.banking77:program"
REWARDS = "raydspy.programs.banking77:rewards"


def test_mlflow_run_logs_params_metrics_program_and_rollouts(tmp_path):
    from raydspy.pipeline.tracking import MlflowRun

    uri = (tmp_path / "mlruns").as_uri()
    out = str(tmp_path / "out")
    config = PipelineConfig(input_uri="train.csv", output_uri=out, n=2)
    summary = RunSummary(
        rows=4,
        error_rows=1,
        mean_reward=0.5,
        reward_means={"exact_match": 0.25, "format": 0.75},
        completion_tokens=40,
        elapsed_s=2.0,
        output_uri=out,
        planned=4,
        new_rows=4,
    )
    with MlflowRun(PROGRAM, TeacherConfig(), config, rewards=REWARDS, tracking_uri=uri) as tracked:
        tracked.finish(summary)

    run = mlflow.MlflowClient(uri).get_run(tracked.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["program"] == PROGRAM and run.data.params["n"] == "2"
    assert run.data.params["rollouts_uri"] == out and run.data.tags["rollouts_uri"] == out
    assert run.data.metrics["mean_reward"] == 0.5 and run.data.metrics["reward_exact_match"] == 0.25
    assert run.data.metrics["rollouts_per_s"] == 2.0 and run.data.metrics["error_rows"] == 1
    program = mlflow.dspy.load_model(tracked.model_uri)
    assert isinstance(program, dspy.Module)
    assert "label" in program.predict.signature.output_fields


def test_a_failed_run_is_marked_failed(tmp_path):
    from raydspy.pipeline.tracking import MlflowRun

    uri = (tmp_path / "mlruns").as_uri()
    config = PipelineConfig(input_uri="train.csv", output_uri=str(tmp_path / "out"))
    with pytest.raises(RuntimeError):
        with MlflowRun(PROGRAM, TeacherConfig(), config, tracking_uri=uri) as tracked:
            raise RuntimeError("boom")
    assert mlflow.MlflowClient(uri).get_run(tracked.run_id).info.status == "FAILED"


def test_collect_cli_with_mlflow(ray_local, tmp_path, monkeypatch):
    """`raydspy collect --mlflow` on a dry run: the MLflow run holds the summary the CLI printed."""
    from raydspy.cli.main import main
    from raydspy.programs import banking77

    sample = banking77.write_sample(tmp_path / "train.csv", size=6)
    uri = (tmp_path / "mlruns").as_uri()
    code = main(
        [
            "collect",
            "--program",
            PROGRAM,
            "--rewards",
            REWARDS,
            "--input",
            str(sample),
            "--output",
            str(tmp_path / "out"),
            "--n",
            "2",
            "--dry-run",
            "--mlflow",
            "--mlflow-tracking-uri",
            uri,
            "--mlflow-experiment",
            "cli-test",
        ]
    )
    assert code == 0
    experiment = mlflow.MlflowClient(uri).get_experiment_by_name("cli-test")
    (run,) = mlflow.MlflowClient(uri).search_runs([experiment.experiment_id])
    assert run.data.metrics["rows"] == 12 and run.data.params["dry_run"] == "True"
    assert run.data.tags["rollouts_uri"] == str(tmp_path / "out")
    # By default up to 32 rollouts become traces: here all 12, prompts only (a dry run calls no LM).
    traces = mlflow.search_traces(run_id=run.info.run_id, return_type="list")
    assert len(traces) == 12 and all(t.data.spans[0].name == "ChainOfThought.forward" for t in traces)
    assert all(len(t.data.spans) == 2 and t.data.spans[1].outputs is None for t in traces)


# -- rollouts as MLflow traces -------------------------------------------------------------------

ORDERS = "raydspy.programs.orders:program"
ORDERS_REWARDS = "raydspy.programs.orders:rewards"
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=dt.UTC)


def _call(predictor: str, signature: str, completion: str | None, *, latency_s: float, **fields) -> LMCall:
    return LMCall(
        predictor=predictor,
        signature=signature,
        messages=[{"role": "system", "content": f"sys {predictor}"}, {"role": "user", "content": f"ask {predictor}"}],
        completion=completion,
        prompt_tokens=fields.pop("prompt_tokens", 20),
        completion_tokens=fields.pop("completion_tokens", 7),
        latency_s=latency_s,
        cached=False,
        model="openai/fake-model",
        **fields,
    )


def _order(i: int, *, fail: bool = False) -> RolloutRecord:
    """An orders rollout (two LM calls, extract then confirm); failed: confirm's reply did not parse."""
    extract = _call(
        "extract",
        "message -> city, quantity, item",
        json.dumps({"city": "Oslo", "quantity": i, "item": "mugs"}),
        latency_s=0.5,
        outputs=json.dumps({"city": "Oslo", "quantity": i, "item": "mugs"}),
        format_ok=True,
    )
    if fail:
        confirm = _call(
            "confirm",
            "city, quantity, item -> reply",
            "no json here",
            latency_s=0.25,
            parse_error="AdapterParseError: not JSON",
            format_ok=False,
        )
    else:
        confirm = _call(
            "confirm",
            "city, quantity, item -> reply",
            json.dumps({"reply": f"{i} mugs to Oslo"}),
            latency_s=0.25,
            outputs=json.dumps({"reply": f"{i} mugs to Oslo"}),
            format_ok=True,
        )
    return RolloutRecord(
        rollout_id=f"r{i}",
        example_id=f"e{i}",
        rollout_index=0,
        inputs={"message": f"{i} mugs to Oslo please", "id": f"e{i}", "city": "Oslo", "quantity": i, "item": "mugs"},
        outputs=None if fail else {"city": "Oslo", "quantity": i, "item": "mugs", "reply": f"{i} mugs to Oslo"},
        trace=[extract, confirm],
        reward=None if fail else 0.75,
        rewards={} if fail else {"city_match": 1.0, "reply_mentions": 0.5},
        error="AdapterParseError: not JSON" if fail else None,
        dry_run=False,
        program_hash="ph",
        teacher="fake-model",
        created_at=T0 + dt.timedelta(seconds=i),
    )


def _commit_run(out, batches: list[list[RolloutRecord]]) -> str:
    """Commit each batch as a part file and write the run's manifest; returns its path."""
    location = resolve(str(out))
    files = {}
    for batch in batches:
        table = records_to_table(batch)
        path = commit_rollouts(location, table)
        files[relative_name(location, path)] = RolloutStats.of(table)
    return write_manifest(location, files)


def test_a_rollout_is_a_root_span_and_one_span_per_lm_call_in_order():
    from raydspy.pipeline.mlflow_traces import ProgramSpan, rollout_spans

    program = ProgramSpan.of(orders.program())
    assert (program.name, program.span_type, program.input_fields) == ("OrderAssistant.forward", "CHAIN", ("message",))
    row = records_to_table([_order(3)]).to_pylist()[0]
    root, extract, confirm = rollout_spans(row, program)

    assert root.inputs == {"message": "3 mugs to Oslo please"}
    assert root.outputs == {"city": "Oslo", "quantity": 3, "item": "mugs", "reply": "3 mugs to Oslo"}
    assert root.attributes["example_fields"] == {"id": "e3", "city": "Oslo", "quantity": 3, "item": "mugs"}
    assert {k: root.attributes[k] for k in ("rollout_id", "example_id", "rollout_index", "reward", "error")} == {
        "rollout_id": "r3",
        "example_id": "e3",
        "rollout_index": 0,
        "reward": 0.75,
        "error": None,
    }
    assert root.attributes["rewards"] == {"city_match": 1.0, "reply_mentions": 0.5}
    assert "trace_tokens" not in root.attributes  # the rollouts keep token ids, not the spans
    assert root.attributes["mlflow.chat.tokenUsage"] == {"input_tokens": 40, "output_tokens": 14, "total_tokens": 54}
    assert root.error is None

    assert [s.name for s in (extract, confirm)] == ["extract", "confirm"]
    assert {s.span_type for s in (extract, confirm)} == {"CHAT_MODEL"}
    assert extract.inputs == {"messages": row["trace"][0]["messages"]}
    assert extract.outputs == [row["trace"][0]["completion"]]
    assert extract.attributes["parsed"] == {"city": "Oslo", "quantity": 3, "item": "mugs"}
    assert extract.attributes["mlflow.message.format"] == "dspy"
    assert extract.attributes["mlflow.llm.provider"] == "openai"
    for key in ("predictor", "signature", "prompt_tokens", "completion_tokens", "latency_s", "model", "format_ok"):
        assert extract.attributes[key] == row["trace"][0][key], key
    # Back to back, ending when the rollout finished: true durations, the program's span around them.
    end_ns = int((T0 + dt.timedelta(seconds=3)).timestamp() * 1e6) * 1000
    assert (confirm.end_ns, confirm.end_ns - confirm.start_ns) == (end_ns, 250_000_000)
    assert (extract.end_ns, extract.end_ns - extract.start_ns) == (confirm.start_ns, 500_000_000)
    assert (root.start_ns, root.end_ns) == (extract.start_ns, end_ns)


def test_a_failed_rollout_marks_its_root_and_the_call_that_ended_it():
    from raydspy.pipeline.mlflow_traces import ProgramSpan, rollout_spans

    row = records_to_table([_order(1, fail=True)]).to_pylist()[0]
    root, extract, confirm = rollout_spans(row, ProgramSpan.of(orders.program()))
    assert root.error == "AdapterParseError: not JSON" and root.outputs is None
    assert extract.error is None  # it parsed
    assert confirm.error == "AdapterParseError: not JSON" and confirm.outputs == ["no json here"]
    assert confirm.attributes["parse_error"] == "AdapterParseError: not JSON" and confirm.attributes["parsed"] is None


def test_the_sample_takes_failed_rollouts_first_from_the_runs_own_files_only(tmp_path, monkeypatch):
    import raydspy.pipeline.samples as samples
    from raydspy.pipeline.samples import _shares, sample_run_rollouts

    assert _shares(32, failed=3, finished=100) == (3, 29)
    assert _shares(32, failed=100, finished=100) == (16, 16)
    assert _shares(32, failed=100, finished=4) == (28, 4)
    assert _shares(1, failed=1, finished=9) == (1, 0)
    assert _shares(5, failed=0, finished=2) == (0, 2)

    out = tmp_path / "out"
    _commit_run(out, [[_order(i) for i in range(100, 104)]])  # an earlier run's file: never read
    manifest = _commit_run(
        out,
        [
            [_order(i) for i in range(0, 4)],
            [_order(i) for i in range(4, 8)],
            [_order(8), _order(9, fail=True), _order(10), _order(11, fail=True)],
        ],
    )
    opened = []
    real = samples.read_committed
    monkeypatch.setattr(samples, "read_committed", lambda loc, files: opened.extend(files) or real(loc, files))

    rows = sample_run_rollouts(resolve(str(out)), manifest, 4).to_pylist()
    assert sum(r["error"] is not None for r in rows) == 2 and len(rows) == 4
    assert {r["rollout_id"] for r in rows if r["error"]} == {"r9", "r11"}
    assert all(int(r["rollout_id"][1:]) < 100 for r in rows)
    assert rows == sample_run_rollouts(resolve(str(out)), manifest, 4).to_pylist()  # deterministic

    opened.clear()
    only_failed = sample_run_rollouts(resolve(str(out)), manifest, 1).to_pylist()
    assert [r["rollout_id"] for r in only_failed] == ["r9"] and len(opened) == 1  # only the file with errors
    assert sample_run_rollouts(resolve(str(out)), manifest, 0).num_rows == 0
    assert sample_run_rollouts(resolve(str(out)), manifest, 50).num_rows == 12


def test_mlflow_run_logs_a_sample_of_rollouts_as_traces_of_the_run(tmp_path):
    from raydspy.pipeline.tracking import MlflowRun

    uri = (tmp_path / "mlruns").as_uri()
    out = tmp_path / "out"
    records = [_order(i, fail=i in (2, 5)) for i in range(6)]
    manifest = _commit_run(out, [records[:3], records[3:]])
    config = PipelineConfig(input_uri="train.jsonl", output_uri=str(out), n=1)
    summary = RunSummary(rows=6, error_rows=2, output_uri=str(out), manifest=manifest)
    with MlflowRun(ORDERS, TeacherConfig(), config, rewards=ORDERS_REWARDS, tracking_uri=uri, traces=4) as tracked:
        tracked.finish(summary)

    assert len(tracked.trace_ids) == 4
    client = mlflow.MlflowClient(uri)
    traces = client.search_traces(
        locations=[tracked.experiment_id], filter_string=f"metadata.`mlflow.sourceRun` = '{tracked.run_id}'"
    )
    assert sorted(t.info.trace_id for t in traces) == sorted(tracked.trace_ids)
    rows = {r["rollout_id"]: r for r in records_to_table(records).to_pylist()}
    failed = 0
    for trace in traces:
        root, *calls = trace.data.spans
        row = rows[root.attributes["rollout_id"]]
        assert trace.info.trace_metadata["mlflow.sourceRun"] == tracked.run_id
        assert trace.info.tags["raydspy.example_id"] == row["example_id"]
        assert root.name == "OrderAssistant.forward" and root.parent_id is None and root.span_type == "CHAIN"
        assert root.inputs == {"message": json.loads(row["inputs"])["message"]}
        assert root.outputs == (json.loads(row["outputs"]) if row["outputs"] else None)
        assert root.attributes["reward"] == row["reward"] and root.attributes["rewards"] == dict(row["rewards"])
        feedback = {a.name: a.value for a in trace.info.assessments}
        assert feedback == ({} if row["error"] else {"reward": 0.75, "city_match": 1.0, "reply_mentions": 0.5})
        assert [c.name for c in calls] == [c["predictor"] for c in row["trace"]]
        assert all(c.parent_id == root.span_id and c.span_type == "CHAT_MODEL" for c in calls)
        for span, call in zip(calls, row["trace"], strict=True):
            assert span.inputs == {"messages": call["messages"]} and span.outputs == [call["completion"]]
            assert (span.attributes["prompt_tokens"], span.attributes["completion_tokens"]) == (20, 7)
            assert span.attributes["mlflow.chat.tokenUsage"]["total_tokens"] == 27
        if row["error"]:
            failed += 1
            assert trace.info.state.value == "ERROR" and root.status.status_code == "ERROR"
            assert calls[-1].status.status_code == "ERROR" and calls[0].status.status_code == "OK"
            assert calls[-1].events[0].attributes["exception.type"] == "AdapterParseError"
        else:
            assert trace.info.state.value == "OK" and {s.status.status_code for s in trace.data.spans} == {"OK"}
    assert failed == 2  # both failed rollouts are in the sample of 4


def test_no_traces_when_told_so_or_when_the_run_committed_nothing(tmp_path):
    from raydspy.pipeline.tracking import MlflowRun

    uri = (tmp_path / "mlruns").as_uri()
    out = tmp_path / "out"
    manifest = _commit_run(out, [[_order(0), _order(1, fail=True)]])
    config = PipelineConfig(input_uri="train.jsonl", output_uri=str(out))
    with MlflowRun(ORDERS, TeacherConfig(), config, tracking_uri=uri, traces=0) as off:
        off.finish(RunSummary(rows=2, output_uri=str(out), manifest=manifest))
    with MlflowRun(ORDERS, TeacherConfig(), config, tracking_uri=uri) as nothing:
        nothing.finish(RunSummary(rows=0, output_uri=str(out), manifest=None))
    for tracked in (off, nothing):
        assert tracked.trace_ids == [] and mlflow.search_traces(run_id=tracked.run_id, return_type="list") == []
    assert mlflow.MlflowClient(uri).get_run(off.run_id).data.params["mlflow_traces"] == "0"
    with pytest.raises(ConfigError):
        MlflowRun(ORDERS, TeacherConfig(), config, tracking_uri=uri, traces=-1)


def test_the_cli_and_the_service_default_to_the_same_number_of_traces():
    from raydspy.cli.main import build_parser
    from raydspy.pipeline.tracking import DEFAULT_TRACES
    from raydspy.service.schemas import RunRequest

    args = build_parser().parse_args(["collect", "--program", ORDERS, "--output", "out", "--mlflow"])
    assert args.mlflow_traces == DEFAULT_TRACES == RunRequest.model_fields["mlflow_traces"].default
    assert build_parser().parse_args(["collect", "--output", "o", "--mlflow-traces", "0"]).mlflow_traces == 0


def test_collect_on_orders_logs_its_rollouts_as_traces(ray_local, tmp_path):
    """`raydspy collect --task orders --mlflow --mlflow-traces 5` against a fake teacher: five traces
    in the run, the failed rollouts among them, each span what the rollout row recorded."""
    from fake_openai import FakeOpenAI, orders_teacher

    from raydspy.cli.main import main
    from raydspy.pipeline.summary import read_rollouts

    examples = tmp_path / "orders.jsonl"
    messages = [f"{i} mugs to Oslo, please." for i in range(5)] + ["One broken lamp to Oslo."]
    examples.write_text(
        "".join(
            json.dumps({"id": f"o{i}", "message": m, "city": "Oslo", "quantity": 2, "item": "mugs"}) + "\n"
            for i, m in enumerate(messages)
        )
    )
    uri = (tmp_path / "mlruns").as_uri()
    out = tmp_path / "out"
    common = ["collect", "--task", "orders", "--input", str(examples), "--n", "2", "--batch-size", "2"]
    common += ["--no-cache", "--mlflow", "--mlflow-tracking-uri", uri]
    with FakeOpenAI(reply=orders_teacher) as server:
        teacher = ["--teacher-url", server.url, "--teacher-model", "fake-model"]
        assert main([*common, *teacher, "--output", str(out), "--mlflow-traces", "5"]) == 0
        assert main([*common, *teacher, "--output", str(tmp_path / "off"), "--mlflow-traces", "0"]) == 0

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("raydspy")
    on, off = sorted(client.search_runs([experiment.experiment_id]), key=lambda r: r.info.start_time)
    assert mlflow.search_traces(run_id=off.info.run_id, return_type="list") == []
    traces = mlflow.search_traces(run_id=on.info.run_id, return_type="list")
    rows = {r["rollout_id"]: r for r in read_rollouts(resolve(str(out))).to_pylist()}
    assert len(rows) == 12 and sum(r["error"] is not None for r in rows.values()) == 2
    assert len(traces) == 5
    failed = 0
    for trace in traces:
        root, *calls = trace.data.spans
        row = rows[root.attributes["rollout_id"]]
        assert trace.info.trace_metadata["mlflow.sourceRun"] == on.info.run_id
        assert root.name == "OrderAssistant.forward" and root.inputs == {
            "message": json.loads(row["inputs"])["message"]
        }
        assert root.outputs == (json.loads(row["outputs"]) if row["outputs"] else None)
        assert root.attributes["reward"] == row["reward"] and root.attributes["rewards"] == dict(row["rewards"])
        assert root.attributes["example_id"] == row["example_id"] and root.attributes["error"] == row["error"]
        named = {k: v for k, v in row["rewards"] if v is not None}
        expected = {**({"reward": row["reward"]} if row["reward"] is not None else {}), **named}
        assert {a.name: a.value for a in trace.info.assessments} == expected
        assert root.end_time_ns // 1000 == int(row["created_at"].timestamp() * 1e6)
        assert [c.name for c in calls] == [c["predictor"] for c in row["trace"]] == ["extract", "confirm"]
        for span, call in zip(calls, row["trace"], strict=True):
            assert span.inputs == {"messages": call["messages"]} and span.outputs == [call["completion"]]
            assert span.attributes["prompt_tokens"] == call["prompt_tokens"] == 10
            assert span.attributes["completion_tokens"] == call["completion_tokens"] == 5
            assert span.attributes["latency_s"] == call["latency_s"]
            assert span.end_time_ns - span.start_time_ns == int(call["latency_s"] * 1e9)
        if row["error"] is not None:
            failed += 1
            assert trace.info.state.value == "ERROR" and calls[-1].status.status_code == "ERROR"
            assert calls[-1].attributes["parse_error"] == row["trace"][-1]["parse_error"]
        else:
            assert trace.info.state.value == "OK"
    assert failed == 2
