"""End to end, token-level traces from the real vLLM teacher on Ray Serve: `raydspy collect
--record-logprobs --top-logprobs K` on the two-stage orders task (and banking77) stores, for every
LM call, token ids that the teacher's own tokenizer decodes to exactly the completion text and to a
prompt holding the messages sent, one logprob per completion token, and the K most likely tokens
sorted; the exports carry them. Without the flag nothing is stored."""

from __future__ import annotations

import json

import pytest

from raydspy.cli.main import main
from raydspy.core.storage import resolve
from raydspy.pipeline import PipelineConfig, run_pipeline
from raydspy.pipeline.summary import read_rollouts
from raydspy.programs import banking77

pytestmark = pytest.mark.e2e

K = 5


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from raydspy.teacher.embedded import ensure_checkpoint

    return AutoTokenizer.from_pretrained(ensure_checkpoint())  # the checkpoint the teacher serves


@pytest.fixture(scope="module")
def orders_tokens(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("orders-tokens")
    argv = ["collect", "--task", "orders", "--limit", "3", "--n", "2", "--output", str(out / "rollouts")]
    argv += ["--teacher-url", teacher.base_url, "--record-logprobs", "--top-logprobs", str(K)]
    assert main(argv) == 0
    return out


def check_tokens(rows: list[dict], tokenizer, k: int) -> int:
    """Assert every answered call's tokens match its text; returns the calls checked."""
    checked = 0
    for row in rows:
        assert row["trace_tokens"] is not None and len(row["trace_tokens"]) == len(row["trace"])
        for call, tokens in zip(row["trace"], row["trace_tokens"], strict=True):
            if call["completion"] is None:  # the call failed: nothing came back
                assert tokens is None
                continue
            ids, logprobs = tokens["completion_token_ids"], tokens["completion_logprobs"]
            assert tokenizer.decode(ids, skip_special_tokens=True) == call["completion"]
            assert len(logprobs) == len(ids) > 0 and all(lp <= 0.0 for lp in logprobs)
            if not call["cached"]:  # a cache hit reports no usage
                assert call["completion_tokens"] == len(ids) and call["prompt_tokens"] == len(
                    tokens["prompt_token_ids"]
                )
            prompt = tokenizer.decode(tokens["prompt_token_ids"])
            assert all(m["content"].strip() in prompt for m in call["messages"])
            assert len(tokens["top_token_ids"]) == len(tokens["top_logprobs"]) == len(ids)
            for sampled, lp, top_ids, top in zip(ids, logprobs, tokens["top_token_ids"], tokens["top_logprobs"]):
                assert len(top_ids) == len(top) == k and top == sorted(top, reverse=True)
                assert lp <= top[0] + 1e-4  # nothing beats the most likely token
                if sampled in top_ids:  # the sampled token's logprob, once in each list
                    assert abs(top[top_ids.index(sampled)] - lp) < 1e-4
            checked += 1
    return checked


def test_orders_calls_store_token_ids_that_decode_to_the_completion(orders_tokens, tokenizer):
    rows = read_rollouts(resolve(str(orders_tokens / "rollouts"))).to_pylist()
    assert len(rows) == 6
    done = [r for r in rows if r["error"] is None]
    assert len(done) >= 4
    assert all([c["predictor"] for c in r["trace"]] == ["extract", "confirm"] for r in done)
    assert check_tokens(rows, tokenizer, K) >= 8  # both predictors' calls
    card = (orders_tokens / "rollouts" / "README.md").read_text()
    assert "Token-level traces: 6 of 6 rollouts hold `trace_tokens`" in card


def test_orders_token_exports(orders_tokens, tokenizer):
    from raydspy.distill import exports

    out = orders_tokens
    assert (
        main(["export", "sft", "--rollouts", str(out / "rollouts"), "--output", str(out / "sft"), "--min-reward", "0"])
        == 0
    )
    sft = exports.load_export(str(out / "sft")).to_list()
    assert sft and all(
        tokenizer.decode(r["completion_token_ids"], skip_special_tokens=True) == r["messages"][-1]["content"]
        for r in sft
    )
    assert (
        main(["export", "kd", "--rollouts", str(out / "rollouts"), "--output", str(out / "kd"), "--min-reward", "0"])
        == 0
    )
    kd = exports.load_export(str(out / "kd")).to_list()
    assert len(kd) == len(sft) and all(len(r["top_token_ids"]) == len(r["completion_token_ids"]) for r in kd)
    assert main(["export", "grpo", "--rollouts", str(out / "rollouts"), "--output", str(out / "grpo")]) == 0
    grpo = exports.load_export(str(out / "grpo")).to_list()
    for row in grpo:
        replayed = json.loads(row["replay"])[row["call_index"]]
        if replayed is not None:
            assert tokenizer.decode(row["completion_token_ids"], skip_special_tokens=True) == replayed


def test_banking77_with_and_without_the_flag(teacher, tokenizer, tmp_path):
    examples = banking77.write_sample(tmp_path / "train.csv", size=3, seed=2)
    recording = teacher.model_copy(update={"record_logprobs": True, "top_logprobs": 2})
    for name, config in (("with", recording), ("without", teacher)):
        pipeline = PipelineConfig(input_uri=str(examples), output_uri=str(tmp_path / name), n=1)
        run_pipeline(
            "raydspy.programs.banking77:program", config, pipeline, rewards="raydspy.programs.banking77:rewards"
        )
    with_rows = read_rollouts(resolve(str(tmp_path / "with"))).to_pylist()
    assert check_tokens(with_rows, tokenizer, 2) >= 2
    without = read_rollouts(resolve(str(tmp_path / "without")))
    assert without.num_rows == 3 and without.column("trace_tokens").null_count == 3
