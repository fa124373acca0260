"""build_format_reward never raises, and scores 1.0 exactly for well-formed completions."""

from __future__ import annotations

import json
import pickle
from typing import Literal

import dspy
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raydspy import ExactMatch, FormatCompliance, RewardSet, build_format_reward
from raydspy.core.tracing import LMCall

ADAPTERS = [dspy.ChatAdapter(), dspy.JSONAdapter(), dspy.XMLAdapter()]


class Item(pydantic.BaseModel):
    name: str
    qty: int


class Everything(dspy.Signature):
    """Every output type the format reward supports."""

    question: str = dspy.InputField()
    text: str = dspy.OutputField()
    count: int = dspy.OutputField()
    score: float = dspy.OutputField()
    flag: bool = dspy.OutputField()
    tags: list[str] = dspy.OutputField()
    label: Literal["yes", "no"] = dspy.OutputField()
    item: Item = dspy.OutputField()


def well_formed(adapter: dspy.Adapter, values: dict) -> str:
    return adapter.format_assistant_message_content(Everything, values)


values_strategy = st.fixed_dictionaries(
    {
        "text": st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)
        .map(str.strip)
        .filter(bool)
        .filter(lambda s: "[[" not in s and "<" not in s and "{" not in s),
        "count": st.integers(-(10**6), 10**6),
        "score": st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3)),
        "flag": st.booleans(),
        "tags": st.lists(st.text(alphabet="abcxyz", min_size=1, max_size=5), max_size=3),
        "label": st.sampled_from(["yes", "no"]),
        "item": st.builds(Item, name=st.text(alphabet="abc", min_size=1, max_size=5), qty=st.integers(0, 99)),
    }
)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: type(a).__name__)
@settings(max_examples=60, deadline=None)
@given(values=values_strategy)
def test_well_formed_completions_score_one(adapter, values):
    assert build_format_reward(Everything, adapter)(well_formed(adapter, values)) == 1.0


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: type(a).__name__)
@settings(max_examples=150, deadline=None)
@given(text=st.one_of(st.text(), st.binary(), st.none(), st.integers()))
def test_never_raises_on_anything(adapter, text):
    assert build_format_reward(Everything, adapter)(text) in (0.0, 1.0)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: type(a).__name__)
def test_malformed_completions_score_zero(adapter):
    reward = build_format_reward(Everything, adapter)
    good = {
        "text": "hi",
        "count": 3,
        "score": 0.5,
        "flag": True,
        "tags": ["a"],
        "label": "yes",
        "item": Item(name="x", qty=1),
    }
    assert reward(well_formed(adapter, good)) == 1.0
    assert reward(well_formed(adapter, {**good, "label": "maybe"})) == 0.0  # Literal outside its set
    assert reward(well_formed(adapter, {**good, "count": "three"})) == 0.0  # not an int
    for bad in ("", "   ", None, b"\xff\xfe", "{", '{"text": "hi"', "[[ ## text ## ]]\nhi"):
        assert reward(bad) == 0.0


def test_seed_examples():
    chat = build_format_reward("question -> answer")
    assert chat("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]") == 1.0
    assert chat("Paris") == 0.0
    as_json = build_format_reward("question -> answer: int", dspy.JSONAdapter())
    assert as_json('{"answer": 42}') == 1.0
    assert as_json('{"answer": "forty-two"}') == 0.0
    assert as_json("not json at all") == 0.0


def test_rewards_pickle_for_ray():
    for reward in (
        build_format_reward(Everything, dspy.JSONAdapter()),
        ExactMatch("label", "gold"),
        FormatCompliance(),
    ):
        clone = pickle.loads(pickle.dumps(reward))
        assert clone.__name__ == reward.__name__
    clone = pickle.loads(pickle.dumps(build_format_reward("q -> a: int")))
    assert clone("[[ ## a ## ]]\n7\n\n[[ ## completed ## ]]") == 1.0


def test_reward_set_combines_and_reports():
    ok = LMCall(predictor="p", signature="q -> a", messages=[], format_ok=True)
    rewards = RewardSet({"exact": ExactMatch("a", "gold"), "format": FormatCompliance()}, weights={"format": 0.5})
    result = rewards.score({"gold": "X"}, {"a": " x "}, [ok])
    assert result.rewards == {"exact": 1.0, "format": 1.0} and result.reward == 1.0
    result = rewards.score({"gold": "X"}, {"a": "y"}, [ok])
    assert result.reward == pytest.approx(0.5 / 1.5)
    # No gold label: exact match is unknown, not 0; the combination uses what is known.
    result = rewards.score({}, {"a": "y"}, [ok])
    assert result.rewards == {"format": 1.0} and result.reward == 1.0
    assert (
        RewardSet(lambda i, o: float("nan")).score({}, {"a": 1}, []).error.startswith("RewardError: reward: ValueError")
    )
    assert json.dumps(RewardSet().score({}, {}, []).rewards) == "{}"


# -- DSPy metrics, both ways ---------------------------------------------------------------------


def dspy_exact(example, pred, trace=None):
    """A DSPy metric as DSPy's docs write them."""
    return example.answer == pred.answer


def test_a_dspy_metric_is_accepted_wherever_a_reward_is():
    from raydspy.core.rewards import DSPyMetric, is_dspy_metric

    assert is_dspy_metric(dspy_exact) and not is_dspy_metric(lambda inputs, outputs: 1.0)
    rewards = RewardSet({"exact": dspy_exact, "length": lambda inputs, outputs: min(1.0, len(outputs["answer"]) / 10)})
    assert isinstance(rewards.functions["exact"], DSPyMetric)
    scored = rewards.score({"question": "2+2?", "answer": "4"}, {"answer": "4"}, [])
    assert scored.rewards == {"exact": 1.0, "length": 0.1} and scored.error is None
    assert RewardSet(dspy_exact).score({"answer": "4"}, {"answer": "5"}, []).rewards == {"dspy_exact": 0.0}
    # Picklable, as Ray ships rewards to the Collect actors.
    again = pickle.loads(pickle.dumps(rewards.functions["exact"]))
    assert again({"answer": "4"}, {"answer": "4"}) == 1.0


def test_a_reward_set_is_a_dspy_metric_for_the_optimisers():
    import dspy

    rewards = RewardSet({"exact": ExactMatch("answer", "gold"), "format": FormatCompliance()})
    metric = rewards.as_metric()
    example = dspy.Example(question="2+2?", gold="4").with_inputs("question")
    # The trace-reading format reward is left out: a prediction that reaches a metric has parsed.
    assert metric(example, dspy.Prediction(answer="4")) == 1.0
    assert metric(example, dspy.Prediction(answer="5"), trace=[]) == 0.0
    assert pickle.loads(pickle.dumps(metric))(example, dspy.Prediction(answer="4")) == 1.0
