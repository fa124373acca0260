"""Token-level traces (``--record-logprobs``): vLLM's token data parsed, recorded per LM call,
stored beside outputs written before it existed, and exported. Against tests/fake_openai.py, which
answers in vLLM's shape (its quirks included); tests/test_e2e_logprobs.py checks the real teacher.

Tests using `ray_local` start a local Ray (heavy: run under the shared lock); the rest are unit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import dspy
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from fake_openai import FakeOpenAI, fake_logprob, fake_prompt, fake_ranking, fake_token_ids, vllm_token_data
from pydantic import ValidationError

from raydspy import Collect
from raydspy.cli.main import build_parser
from raydspy.core.rollouts import ROLLOUT_SCHEMA, records_to_table
from raydspy.core.runner import RolloutRunner
from raydspy.core.stats import RolloutStats
from raydspy.core.token_traces import TokenRequest, parse_token_trace, token_request
from raydspy.distill import transforms
from raydspy.errors import ConfigError
from raydspy.teacher.client import TeacherConfig

OLD_ROLLOUTS = Path(__file__).resolve().parent / "data" / "banking77-rollouts.parquet"  # written before tokens

#: vLLM's own switches that `TokenRequest` sends in ``extra_body``.
VLLM_FLAGS = {"return_token_ids": True, "return_tokens_as_token_ids": True}


class DraftThenAnswer(dspy.Module):
    """Two predictors: the second reads the first's output."""

    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> draft")
        self.answer = dspy.Predict("question, draft -> answer")

    def forward(self, question):
        draft = self.draft(question=question).draft
        return self.answer(question=question, draft=draft)


def _teacher(url: str, **overrides) -> TeacherConfig:
    return TeacherConfig(base_url=url, model="fake-model", cache=False, **overrides)


def _expected_top(ids: list[int], k: int) -> tuple[list[list[int]], list[list[float]]]:
    ranked = [fake_ranking(pos, token_id, k) for pos, token_id in enumerate(ids)]
    return [[t for t, _ in r] for r in ranked], [[lp for _, lp in r] for r in ranked]


def _vllm_response(text: str, request: dict) -> dict:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
    return vllm_token_data({"messages": [{"role": "user", "content": "q?"}], **request}, body)


# -- the request and its settings --------------------------------------------------------------


def test_the_request_asks_vllm_for_token_ids_and_one_alternative_more_than_kept():
    assert TokenRequest(3).lm_kwargs({"priority": 1}) == {
        "logprobs": True,
        "top_logprobs": 4,
        "extra_body": {"priority": 1, "return_token_ids": True, "return_tokens_as_token_ids": True},
    }
    assert "top_logprobs" not in TokenRequest(0).lm_kwargs()
    assert token_request(False) is None and token_request(True, 19) == TokenRequest(19)
    with pytest.raises(ConfigError, match="--record-logprobs"):
        token_request(False, 2)
    with pytest.raises(ConfigError, match="0 … 19"):
        token_request(True, 20)


def test_teacher_flags_and_config_turn_it_on_and_leave_rollout_ids_alone():
    from raydspy.cli.flags import teacher_from

    args = build_parser().parse_args(["collect", "--output", "o", "--record-logprobs", "--top-logprobs", "5"])
    teacher = teacher_from(args, {})
    assert teacher.token_request == TokenRequest(5)
    # The samples do not change: a run resumed with the flag skips the rollouts already done.
    assert teacher.sampling == TeacherConfig().sampling and TeacherConfig().token_request is None
    with pytest.raises(ValidationError, match="record_logprobs"):
        TeacherConfig(top_logprobs=5)
    from raydspy.service.schemas import TeacherSpec

    assert TeacherSpec(record_logprobs=True, top_logprobs=2).top_logprobs == 2  # the service's teacher too


# -- parsing vLLM's answer ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["json", "lm15"])
def test_parse_keeps_the_k_most_likely_tokens_whatever_was_sampled(shape):
    k = 2
    text = "abcdefg"
    body = _vllm_response(text, {"logprobs": True, "top_logprobs": k + 1, **VLLM_FLAGS})
    response = body if shape == "json" else SimpleNamespace(provider_data=body)  # DSPy's native client
    trace = parse_token_trace(response, k)
    ids = fake_token_ids(text)
    assert trace.completion_token_ids == ids
    assert trace.prompt_token_ids == fake_token_ids(fake_prompt([{"role": "user", "content": "q?"}]))
    assert trace.completion_logprobs == [fake_logprob(i) for i in range(len(ids))]
    assert (trace.top_token_ids, trace.top_logprobs) == _expected_top(ids, k)
    # Asking vLLM for K alone would miss a more likely token wherever the sampled one ranks
    # below K (it lists the sampled token first): position 2 ranks it third here.
    short = parse_token_trace(_vllm_response(text, {"logprobs": True, "top_logprobs": k, **VLLM_FLAGS}), k)
    assert short.top_token_ids[2] != _expected_top(ids, k)[0][2]


def test_parse_takes_what_the_server_returned(caplog):
    ids = fake_token_ids("hey")
    # Token ids spelled in the logprobs only: the completion's ids come from them.
    spelled = parse_token_trace(_vllm_response("hey", {"logprobs": True, "return_tokens_as_token_ids": True}))
    assert spelled.completion_token_ids == ids and spelled.prompt_token_ids is None
    # Alternatives spelled as text carry no ids: none are kept.
    text_only = parse_token_trace(
        _vllm_response("hey", {"logprobs": True, "top_logprobs": 2, "return_token_ids": True}), 2
    )
    assert text_only.completion_token_ids == ids and text_only.top_token_ids is None
    assert parse_token_trace(_vllm_response("hey", {})) is None  # nothing asked, nothing returned
    # Logprobs that do not line up with the ids are not stored misaligned.
    body = _vllm_response("hey", {"logprobs": True, **VLLM_FLAGS})
    body["choices"][0]["token_ids"] = ids[:2]
    assert parse_token_trace(body).completion_logprobs is None and "logprobs not recorded" in caplog.text


# -- recording, through DSPy and LiteLLM -------------------------------------------------------


def test_each_lm_call_records_its_tokens_and_the_program_sees_no_logprobs():
    k = 3
    with FakeOpenAI({"draft": "d", "answer": "a"}) as server:
        teacher = _teacher(server.url, record_logprobs=True, top_logprobs=k)
        result = RolloutRunner(DraftThenAnswer(), lm=teacher.lm(), tokens=teacher.token_request).run(
            {"question": "q"}, 0
        )
        plain = RolloutRunner(DraftThenAnswer(), lm=_teacher(server.url).lm()).run({"question": "q"}, 0)
        asked = server.requests[:2]
    record = result.record
    assert record.error is None and set(record.outputs) == set(plain.record.outputs) == {"answer"}
    assert all(r["logprobs"] and r["top_logprobs"] == k + 1 and r["return_token_ids"] for r in asked)
    assert [c.predictor for c in record.trace] == ["draft", "answer"]
    for call in record.trace:
        tokens = call.tokens
        assert tokens.completion_token_ids == fake_token_ids(call.completion)
        assert tokens.prompt_token_ids == fake_token_ids(fake_prompt(call.messages))
        assert len(tokens.completion_logprobs) == len(tokens.completion_token_ids)
        assert (tokens.top_token_ids, tokens.top_logprobs) == _expected_top(tokens.completion_token_ids, k)
    # In the row: a column of its own, one item per call, int32 ids and float32 logprobs.
    table = records_to_table([record, plain.record])
    assert table.schema.equals(ROLLOUT_SCHEMA)
    items = table.column("trace_tokens").to_pylist()
    assert items[1] is None and len(items[0]) == 2
    assert items[0][1]["completion_token_ids"] == record.trace[1].tokens.completion_token_ids
    assert items[0][1]["top_logprobs"] == record.trace[1].tokens.top_logprobs  # multiples of 1/4: exact in float32
    assert "trace_tokens" not in table.column("trace").type.value_type.names
    assert RolloutStats.of(table).token_rows == 1


def test_a_cached_answer_keeps_its_tokens():
    with FakeOpenAI({"answer": "a"}) as server:
        teacher = TeacherConfig(base_url=server.url, model="fake-model", record_logprobs=True)  # DSPy's cache on
        runner = RolloutRunner(dspy.Predict("question -> answer"), lm=teacher.lm(), tokens=teacher.token_request)
        first = runner.run({"question": "cached tokens?"}, 0).record.trace[0]
        again = runner.run({"question": "cached tokens?"}, 0).record.trace[0]
    assert again.cached and again.tokens == first.tokens and first.tokens.completion_logprobs


def test_without_the_flag_no_token_data_is_requested_or_stored(tmp_path):
    with FakeOpenAI({"answer": "a"}) as server:
        collect = Collect(dspy.Predict("question -> answer"), str(tmp_path), lm=_teacher(server.url).lm())
        collect.collect([{"question": "q"}], n=2)
        asked = server.requests
    assert not any({"logprobs", "top_logprobs", "return_token_ids", "extra_body"} & set(r) for r in asked)
    table = pq.read_table(collect.last_path)
    assert table.column("trace_tokens").null_count == table.num_rows == 2
    card = (tmp_path / "README.md").read_text()
    assert "Token-level traces" not in card and "trace_tokens" not in card.split("---")[1]  # datasets' config


def test_collect_records_tokens_and_old_files_beside_them_still_load(tmp_path):
    import datasets

    program = dspy.Predict("question -> answer")
    with FakeOpenAI({"answer": "a"}) as server:
        collect = Collect(program, str(tmp_path), lm=_teacher(server.url).lm(), record_logprobs=True, top_logprobs=1)
        collect.collect([{"question": "q1"}, {"question": "q2"}], n=1)
    card = (tmp_path / "README.md").read_text()
    assert "Token-level traces: 2 of 2 rollouts hold `trace_tokens`" in card
    loaded = datasets.load_dataset(str(tmp_path), split="train", cache_dir=str(tmp_path / ".hf"))
    assert all(len(row["trace_tokens"][0]["top_token_ids"][0]) == 1 for row in loaded)

    # Rows written before token-level traces existed, in the same output: every reader still reads.
    shutil.copy(OLD_ROLLOUTS, tmp_path / "rollouts-0-old.parquet")
    with FakeOpenAI({"answer": "a"}) as server:
        collect = Collect(program, str(tmp_path), lm=_teacher(server.url).lm(), record_logprobs=True)
        collect.collect([{"question": "q3"}], n=1)
    old = pq.read_table(OLD_ROLLOUTS).num_rows
    card = (tmp_path / "README.md").read_text()
    assert f"Token-level traces: 3 of {old + 3} rollouts" in card and "some parts were written before" in card
    # datasets: the card leaves trace_tokens out of what it loads, as the old part lacks it
    loaded = datasets.load_dataset(str(tmp_path), split="train", cache_dir=str(tmp_path / ".hf2"))
    assert loaded.num_rows == old + 3 and "trace_tokens" not in loaded.column_names
    # pyarrow's datasets (the pipeline's reader): null in the old rows
    files = sorted(str(p) for p in tmp_path.glob("rollouts-*.parquet"))
    table = pads.dataset(files, format="parquet", schema=ROLLOUT_SCHEMA).to_table()
    assert table.num_rows == old + 3 and table.column("trace_tokens").null_count == old


# -- exports -----------------------------------------------------------------------------------


def _with_tokens(rows: list[dict], k: int = 2) -> list[dict]:
    """``rows`` (recorded without tokens) as if recorded with them: the fake's tokens of each call."""
    out = []
    for row in rows:
        items = []
        for call in row["trace"]:
            ids = fake_token_ids(call["completion"] or "")
            top_ids, top_logprobs = _expected_top(ids, k)
            items.append(
                {
                    "prompt_token_ids": fake_token_ids(fake_prompt(call["messages"])),
                    "completion_token_ids": ids,
                    "completion_logprobs": [fake_logprob(i) for i in range(len(ids))],
                    "top_token_ids": top_ids,
                    "top_logprobs": top_logprobs,
                }
            )
        out.append({**row, "trace_tokens": items})
    return out


def test_sft_grpo_and_kd_rows_carry_the_calls_tokens_only_when_recorded():
    old = pq.read_table(OLD_ROLLOUTS).to_pylist()  # no trace_tokens key at all
    recorded = _with_tokens(old)
    assert transforms.sft_rows(old) and not any(
        set(transforms.TOKEN_COLUMNS) & set(r) for r in transforms.sft_rows(old)
    )
    assert transforms.kd_rows(old) == []
    sft = transforms.sft_rows(recorded)
    assert len(sft) == len(transforms.sft_rows(old))
    for row in sft:
        assert row["completion_token_ids"] == fake_token_ids(row["messages"][-1]["content"])
        assert row["prompt_token_ids"] == fake_token_ids(fake_prompt(row["messages"][:-1]))
        assert len(row["completion_logprobs"]) == len(row["completion_token_ids"]) and "top_token_ids" not in row
    kd = transforms.kd_rows(recorded)
    assert [r["rollout_id"] for r in kd] == [r["rollout_id"] for r in sft]
    assert all(len(r["top_token_ids"]) == len(r["completion_token_ids"]) for r in kd)
    for row in transforms.grpo_rows(recorded):
        assert row["prompt_token_ids"] == fake_token_ids(fake_prompt(row["prompt"]))
        assert row["completion_token_ids"] == fake_token_ids(json.loads(row["replay"])[row["call_index"]])


# -- an output written before token-level traces, resumed with and without them (Ray) -------


def _questions(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"question": f"question {i}?"}) + "\n" for i in range(count)))
    return path


def full_marks(inputs: dict, outputs: dict) -> float:
    """A reward every rollout passes (the exports keep rewarded rollouts)."""
    return 1.0


def _as_written_before_tokens(out: Path) -> None:
    """Rewrite a run's parts and manifests as a version without token-level traces wrote them."""
    for part in out.glob("part-*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns(["trace_tokens"]), part)
    for manifest in (out / "_runs").glob("*.json"):
        data = json.loads(manifest.read_text())
        for name, stats in data["files"].items():  # RolloutStats.to_json() of each part
            counts = json.loads(stats)
            del counts["token_rows"]
            data["files"][name] = json.dumps(counts)
        manifest.write_text(json.dumps(data))


def test_an_old_output_resumes_with_and_without_tokens_and_exports(ray_local, tmp_path):
    import datasets

    from raydspy.core.storage import resolve
    from raydspy.distill import exports
    from raydspy.pipeline import PipelineConfig, run_pipeline
    from raydspy.pipeline.summary import read_rollouts

    out = tmp_path / "out"
    program = DraftThenAnswer()
    with FakeOpenAI({"draft": "d", "answer": "a"}) as server:
        plain, recording = _teacher(server.url), _teacher(server.url, record_logprobs=True, top_logprobs=2)

        def run(teacher, count):
            config = PipelineConfig(
                input_uri=str(_questions(tmp_path / f"q{count}.jsonl", count)), output_uri=str(out), n=2
            )
            before = len(server.requests)
            summary = run_pipeline(program, teacher, config, rewards=full_marks)
            return summary, server.requests[before:]

        first, _ = run(plain, 2)
        _as_written_before_tokens(out)
        assert "trace_tokens" not in pq.read_schema(next(out.glob("part-*.parquet"))).names
        with_tokens, asked = run(recording, 4)  # resumed with the flag: only the new rollouts are run
        assert (with_tokens.resumed, with_tokens.new_rows, len(asked)) == (4, 4, 8)
        assert all(r["logprobs"] and r["return_token_ids"] for r in asked)
        without, asked = run(plain, 6)  # and without it
        assert (without.resumed, without.new_rows, without.rows) == (8, 4, 12)
        assert not any("logprobs" in r for r in asked)

    rows = read_rollouts(resolve(str(out))).to_pylist()
    recorded = [r for r in rows if r["trace_tokens"] is not None]
    assert len(rows) == 12 and len(recorded) == 4
    for row in recorded:
        for call, tokens in zip(row["trace"], row["trace_tokens"], strict=True):
            assert tokens["completion_token_ids"] == fake_token_ids(call["completion"])
    card = (out / "README.md").read_text()
    assert "Token-level traces: 4 of 12 rollouts" in card and "some parts were written before" in card
    assert datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf")).num_rows == 12

    sft = exports.to_sft(str(out), str(tmp_path / "sft"))
    sft_rows = exports.load_export(str(tmp_path / "sft")).to_list()
    assert sft.rows == len(sft_rows) == 24  # two calls per rollout
    with_ids = [r for r in sft_rows if r["completion_token_ids"] is not None]
    assert len(with_ids) == 8
    assert all(r["completion_token_ids"] == fake_token_ids(r["messages"][-1]["content"]) for r in with_ids)
    exports.to_grpo(str(out), str(tmp_path / "grpo"))
    assert "completion_token_ids" in exports.load_export(str(tmp_path / "grpo")).column_names
    kd = exports.to_kd(str(out), str(tmp_path / "kd"))
    kd_rows = exports.load_export(str(tmp_path / "kd")).to_list()
    assert kd.rows == len(kd_rows) == 8 and all(len(r["top_token_ids"][0]) == 2 for r in kd_rows)
    loaded = datasets.load_dataset(str(tmp_path / "kd"), split="train", cache_dir=str(tmp_path / "hf2"))
    assert loaded.features["top_logprobs"].feature.feature.dtype == "float32"
    written = pq.read_schema(next((tmp_path / "kd").glob("*.parquet")))
    assert written.field("top_token_ids").type == pa.list_(pa.list_(pa.int32()))
