"""Traces: every LM call of a rollout, in order, attributed to its predictor, and nothing else."""

from __future__ import annotations

import json

import dspy
from dspy.utils import DummyLM
from dspy.utils.callback import with_callbacks
from fake_openai import FakeOpenAI

from raydspy.core.runner import RolloutRunner


class DraftThenAnswer(dspy.Module):
    """Two predictors: the second reads the first's output."""

    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> draft")
        self.refine = dspy.ChainOfThought("question, draft -> answer")

    def forward(self, question):
        draft = self.draft(question=question).draft
        return self.refine(question=question, draft=draft)


def test_two_predictor_module_traces_both_calls_in_order():
    lm = DummyLM([{"draft": "about 4"}, {"reasoning": "2+2", "answer": "4"}])
    record = RolloutRunner(DraftThenAnswer(), lm=lm).run({"question": "2+2?"}, 0).record
    assert record.error is None and record.outputs["answer"] == "4"
    assert [c.predictor for c in record.trace] == ["draft", "refine.predict"]
    assert [c.signature for c in record.trace] == ["question -> draft", "question, draft -> reasoning, answer"]
    assert "about 4" in record.trace[1].messages[-1]["content"]  # the second prompt holds the first output
    assert all(c.format_ok for c in record.trace)


def test_react_agent_with_one_tool():
    def lookup(city: str) -> str:
        """Population of a city."""
        return {"Paris": "2.1 million"}.get(city, "unknown")

    lm = DummyLM(
        [
            {"next_thought": "look it up", "next_tool_name": "lookup", "next_tool_args": {"city": "Paris"}},
            {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "the tool said so", "answer": "2.1 million"},
        ]
    )
    agent = dspy.ReAct("question -> answer", tools=[lookup])
    record = RolloutRunner(agent, lm=lm).run({"question": "How many people live in Paris?"}, 0).record
    assert record.error is None and record.outputs["answer"] == "2.1 million"
    assert [c.predictor for c in record.trace] == ["react", "react", "extract.predict"]
    assert "2.1 million" in record.trace[1].messages[-1]["content"]  # the tool's observation was sent
    assert json.loads(record.trace[0].outputs)["next_tool_name"] == "lookup"


def test_chat_adapter_json_fallback_keeps_both_calls():
    chat = DummyLM([{"answer": "not an int"}])
    as_json = DummyLM([{"answer": "4"}], adapter=dspy.JSONAdapter())  # the fallback asks for JSON
    record = (
        RolloutRunner(dspy.Predict("question -> answer: int"), lm=_Sequence([chat, as_json]))
        .run({"question": "2+2?"}, 0)
        .record
    )
    assert record.error is None and record.outputs == {"answer": 4}
    assert len(record.trace) == 2
    assert record.trace[0].parse_error.startswith("AdapterParseError") and record.trace[0].format_ok is False
    assert record.trace[1].format_ok is True and record.format_ok is False  # the first completion broke format


class _Sequence(dspy.BaseLM):
    """Answers each call with the next LM of a list (each scripted in its own adapter's format)."""

    def __init__(self, lms):
        super().__init__(model="sequence")
        self.lms = lms

    def copy(self, **kwargs):
        return _Sequence(self.lms)

    @with_callbacks
    def __call__(self, *args, **kwargs):
        return self.lms.pop(0)(*args, **kwargs)


def test_no_call_leaks_between_concurrent_rollouts():
    questions = [{"question": f"question number {i}"} for i in range(24)]
    with FakeOpenAI({"draft": "d", "reasoning": "r", "answer": "a"}) as server:
        lm = dspy.LM("openai/fake-model", api_base=server.url, api_key="x", cache=False)
        results = RolloutRunner(DraftThenAnswer(), lm=lm).run_many(questions, 2, num_threads=16)
    assert len(results) == 48
    for example, result in zip([q for q in questions for _ in range(2)], results):
        trace = result.record.trace
        assert [c.predictor for c in trace] == ["draft", "refine.predict"]
        for call in trace:
            assert example["question"] in call.messages[-1]["content"]
            assert call.prompt_tokens == 10 and call.completion_tokens == 5
