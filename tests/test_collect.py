"""Collect in one process: rows, traces, rewards, dry run, distinct samples (in-process LMs)."""

from __future__ import annotations

import json
import uuid

import dspy
import pyarrow.parquet as pq
import pytest
from dspy.utils import DummyLM
from fake_openai import FakeOpenAI

from raydspy import Collect, InputError
from raydspy.core.dry_run import FormattedPrompt
from raydspy.core.identity import rollout_seed
from raydspy.core.rollouts import ROLLOUT_SCHEMA

EXAMPLES = [{"question": "2+2?", "gold": "4"}, {"question": "3+3?", "gold": "6"}]


def exact(inputs, outputs):
    return float(outputs["answer"] == inputs["gold"])


def test_rows_traces_and_rewards(tmp_path):
    lm = DummyLM([{"reasoning": "add", "answer": "4"}] * 4)
    collect = Collect(dspy.ChainOfThought("question -> answer"), str(tmp_path), reward_fn=exact, num_threads=1, lm=lm)
    predictions = collect.collect(EXAMPLES, n=2)

    assert [p.answer for p in predictions] == ["4"] * 4
    table = pq.read_table(collect.last_path)
    assert table.schema.equals(ROLLOUT_SCHEMA)
    rows = table.to_pylist()
    assert [(json.loads(r["inputs"])["question"], r["rollout_index"]) for r in rows] == [
        ("2+2?", 0),
        ("2+2?", 1),
        ("3+3?", 0),
        ("3+3?", 1),
    ]
    assert [r["reward"] for r in rows] == [1.0, 1.0, 0.0, 0.0]
    assert len({r["rollout_id"] for r in rows}) == 4
    call = rows[0]["trace"][0]
    assert call["predictor"] == "predict"
    assert call["signature"] == "question -> reasoning, answer"
    assert "2+2?" in call["messages"][-1]["content"]
    assert "[[ ## answer ## ]]" in call["completion"]
    assert json.loads(call["outputs"]) == {"reasoning": "add", "answer": "4"}
    assert call["format_ok"] is True and rows[0]["format_ok"] is True
    assert call["latency_s"] >= 0


def test_failed_rollout_is_a_row_and_the_run_goes_on(tmp_path):
    lm = DummyLM([{"answer": "4"}, {"answer": "not an int"}])
    collect = Collect(
        dspy.Predict("question -> answer: int"),
        str(tmp_path),
        reward_fn=lambda i, o: 1.0,
        num_threads=1,
        lm=lm,
        adapter=dspy.ChatAdapter(use_json_adapter_fallback=False),
    )
    predictions = collect.collect(EXAMPLES, n=1)

    assert predictions[0].answer == 4 and predictions[1] is None
    ok, failed = collect.last_records
    assert ok.error is None and ok.reward == 1.0
    assert failed.error.startswith("AdapterParseError") and failed.outputs is None
    assert failed.reward == 0.0 and failed.format_ok is False
    assert failed.trace[0].completion and failed.trace[0].parse_error


def test_named_rewards_combine_and_a_raising_reward_marks_the_row(tmp_path):
    def boom(inputs, outputs):
        raise RuntimeError("bug in reward")

    lm = DummyLM([{"answer": "4"}] * 2)
    collect = Collect(
        dspy.Predict("question -> answer"),
        str(tmp_path),
        num_threads=1,
        lm=lm,
        reward_fn={"exact": exact, "half": lambda i, o: 0.5},
        reward_weights={"exact": 3.0},
    )
    collect.collect(EXAMPLES[:1])
    record = collect.last_records[0]
    assert record.rewards == {"exact": 1.0, "half": 0.5}
    assert record.reward == pytest.approx((3 * 1.0 + 0.5) / 4)

    collect = Collect(dspy.Predict("question -> answer"), str(tmp_path), reward_fn={"boom": boom}, num_threads=1, lm=lm)
    assert collect.collect(EXAMPLES[:1])[0] is not None
    assert collect.last_records[0].error == "RewardError: boom: RuntimeError: bug in reward"


class ForbiddenLM(dspy.BaseLM):
    """Fails the test if anything calls it."""

    def __init__(self):
        super().__init__(model="forbidden")

    def __call__(self, *args, **kwargs):
        pytest.fail("a dry run called the LM")

    def forward(self, *args, **kwargs):
        pytest.fail("a dry run called the LM")


@pytest.mark.parametrize("adapter", [dspy.ChatAdapter(), dspy.JSONAdapter(), dspy.XMLAdapter()])
def test_dry_run_formats_prompts_and_never_calls_an_lm(tmp_path, adapter):
    program = dspy.ChainOfThought("question -> answer")
    program.predict.lm = ForbiddenLM()  # even a predictor's own LM is not called
    dspy.configure(lm=ForbiddenLM(), adapter=adapter)
    collect = Collect(program, str(tmp_path), reward_fn=exact)
    with dspy.context(lm=ForbiddenLM()):
        predictions = collect.collect(EXAMPLES, n=2, dry_run=True)

    expected = adapter.format(program.predict.signature, [], {"question": "2+2?"})
    for record in collect.last_records:
        assert record.dry_run and record.error is None and record.reward is None
        assert len(record.trace) == 1 and record.trace[0].completion is None
    assert collect.last_records[0].trace[0].messages == expected
    # The seed's dry run returns each rollout's formatted prompt: GRPO prompts without a teacher.
    assert all(isinstance(p, FormattedPrompt) for p in predictions) and len(predictions) == 4
    assert predictions[0].messages == expected and predictions[0].predictor == "predict"
    assert predictions[2].messages == adapter.format(program.predict.signature, [], {"question": "3+3?"})


def test_bad_examples_fail_before_any_call(tmp_path):
    collect = Collect(dspy.Predict("question -> answer"), str(tmp_path), lm=ForbiddenLM())
    with pytest.raises(InputError, match=r"lack the program's input field\(s\) \['question'\].*row 1"):
        collect.collect([{"question": "ok"}, {"query": "wrong column"}])
    with pytest.raises(InputError, match="no examples"):
        collect.collect([])


def test_n_samples_are_distinct_calls_with_the_cache_on(tmp_path):
    with FakeOpenAI({"answer": "sample-"}) as server:
        lm = dspy.LM("openai/fake-model", api_base=server.url, api_key="x", cache=True, temperature=1.0)
        collect = Collect(dspy.Predict("question -> answer"), str(tmp_path), num_threads=4, lm=lm)
        example = {"question": f"a question never asked before: {uuid.uuid4()}"}  # DSPy's cache is on disk
        first = [p.answer for p in collect.collect(example, n=4)]
        assert len(set(first)) == 4 and len(server.requests) == 4
        # The same rollouts again are cache hits: same samples, no new request (no second bill).
        assert not any(r.trace[0].cached for r in collect.last_records)
        again = [p.answer for p in collect.collect(example, n=4)]
        assert again == first and len(server.requests) == 4
        assert all(r.trace[0].cached and r.trace[0].completion_tokens is None for r in collect.last_records)


def test_a_seeded_run_sends_each_rollout_its_own_seed_and_the_same_one_again(tmp_path):
    with FakeOpenAI({"answer": "sample-"}) as server:
        lm = dspy.LM("openai/fake-model", api_base=server.url, api_key="x", cache=False)

        def seeds_sent(sampling: dict) -> list:
            before = len(server.requests)
            collect = Collect(
                dspy.Predict("question -> answer"),
                str(tmp_path),
                num_threads=2,
                lm=lm,
                sampling={"temperature": 1.0, **sampling},
            )
            collect.collect([{"question": "q1"}, {"question": "q2"}], n=3)
            ids = [r.rollout_id for r in collect.last_records]
            by_question = {(r["messages"][-1]["content"], r.get("seed")) for r in server.requests[before:]}
            return ids, sorted(seed for _, seed in by_question if seed is not None), len(by_question)

        ids, seeds, calls = seeds_sent({"seed": 7})
        assert calls == 6 and len(set(seeds)) == 6 and all(0 <= s < 2**31 for s in seeds)
        assert seeds == sorted(rollout_seed(i) for i in ids)  # derived from the rollout ids
        assert seeds_sent({"seed": 7})[1] == seeds  # the same job again: the same seeds
        other_ids, other, _ = seeds_sent({"seed": 8})
        assert set(other).isdisjoint(seeds) and set(other_ids).isdisjoint(ids)  # another run seed
        assert seeds_sent({})[1] == []  # unseeded: no seed sent


def test_examples_may_be_dspy_examples_or_one_dict(tmp_path):
    lm = DummyLM([{"answer": "4"}] * 2)
    collect = Collect(dspy.Predict("question -> answer"), str(tmp_path), num_threads=1, lm=lm)
    assert len(collect.collect(dspy.Example(question="2+2?").with_inputs("question"))) == 1
    assert len(collect.collect({"question": "2+2?"})) == 1


def test_jsonl_output(tmp_path):
    lm = DummyLM([{"answer": "4"}])
    collect = Collect(dspy.Predict("question -> answer"), str(tmp_path), num_threads=1, lm=lm, output_format="jsonl")
    collect.collect(EXAMPLES[:1])
    assert collect.last_path.endswith(".jsonl")
    row = json.loads(open(collect.last_path).read())
    assert row["rollout_index"] == 0 and row["trace"][0]["predictor"] == "self"


def test_warns_once_when_n_samples_at_temperature_zero_are_identical(tmp_path, caplog):
    lm = DummyLM([{"answer": "4"}] * 6)
    collect = Collect(
        dspy.Predict("question -> answer"), str(tmp_path), num_threads=1, lm=lm, sampling={"temperature": 0.0}
    )
    collect.collect(EXAMPLES, n=3)
    warnings = [r for r in caplog.records if "samples will be identical" in r.getMessage()]
    assert len(warnings) == 1


def test_dry_run_says_which_predictors_need_model_output(tmp_path, caplog):
    from test_tracing import DraftThenAnswer

    collect = Collect(DraftThenAnswer(), str(tmp_path), lm=ForbiddenLM())
    collect.collect(EXAMPLES, n=1, dry_run=True)
    assert [c.predictor for c in collect.last_records[0].trace] == ["draft"]
    messages = [r.getMessage() for r in caplog.records if "dry run" in r.getMessage()]
    assert len(messages) == 1 and "['refine.predict']" in messages[0]
