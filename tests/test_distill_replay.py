"""GRPO's rewards for any program: a completion scored by the task's rewards, its rollout replayed.

The teacher's rollouts of the two-stage orders program come from a fake OpenAI server (the
point here is the replay, not the LM); no Ray, no model.
"""

from __future__ import annotations

import json
import pickle

import dspy
import pytest
from fake_openai import FakeOpenAI

from raydspy import Collect
from raydspy.core.adapters import PlainJSONAdapter, StructuredOutputAdapter
from raydspy.core.rollouts import records_to_table
from raydspy.distill import exports
from raydspy.distill.replay import ReplayScorer
from raydspy.distill.rewards import grpo_reward_funcs
from raydspy.errors import ConfigError
from raydspy.programs import orders

PROGRAM, REWARDS = "raydspy.programs.orders:program", "raydspy.programs.orders:rewards"
EXAMPLES = [
    {
        "id": "a",
        "message": "Please send 3 blue mugs to our office in Oslo.",
        "city": "Oslo",
        "quantity": 3,
        "item": "blue mugs",
    },
    {"id": "b", "message": "Order for Lima: 5 candles.", "city": "Lima", "quantity": 5, "item": "candles"},
]


def _teacher(request, k):
    """Extracts Oslo / 3 / blue mugs from every message and confirms tersely."""
    if "`reply`" in request["messages"][0]["content"]:
        return json.dumps({"reply": "Order confirmed."})
    return json.dumps({"city": "Oslo", "quantity": 3, "item": "blue mugs"})


@pytest.fixture(scope="module")
def grpo_rows(tmp_path_factory):
    """The GRPO export's rows of one rollout per example, collected with structured outputs."""
    with FakeOpenAI(reply=_teacher) as server:
        lm = dspy.LM("openai/fake-model", api_base=server.url, api_key="-", cache=False)
        collect = Collect(
            orders.program(),
            str(tmp_path_factory.mktemp("rollouts")),
            reward_fn=orders.rewards(),
            num_threads=2,
            lm=lm,
            adapter=StructuredOutputAdapter(),
        )
        collect.collect(EXAMPLES, n=1)
    rows = {json.loads(r["inputs"])["id"]: r for r in records_to_table(collect.last_records).to_pylist()}
    grpo = {ex: sorted(exports.grpo_rows([row]), key=lambda r: r["call_index"]) for ex, row in rows.items()}
    return grpo, rows


def _recorded(row) -> str:
    return json.loads(row["replay"])[row["call_index"]]


def test_the_export_keeps_each_call_with_what_replaying_it_needs(grpo_rows):
    rows, rollouts = grpo_rows
    oslo = rows["a"]
    assert [(r["predictor"], r["call_index"]) for r in oslo] == [("extract", 0), ("confirm", 1)]
    assert json.loads(oslo[0]["replay"]) == [c["completion"] for c in rollouts["a"]["trace"]]
    # The second call's prompt holds the teacher's first-stage output.
    assert "blue mugs" in oslo[1]["prompt"][-1]["content"]


def test_the_teachers_own_completion_scores_what_its_rollout_scored(grpo_rows):
    rows, rollouts = grpo_rows
    scorer = ReplayScorer(PROGRAM, REWARDS, PlainJSONAdapter())
    for example in ("a", "b"):
        for row in rows[example]:
            score = scorer.score(row, _recorded(row))
            assert score.matched and score.format == 1.0
            assert score.rewards == dict(rollouts[example]["rewards"])
    assert dict(rollouts["b"]["rewards"])["city_match"] == 0.0  # the fake teacher said Oslo for Lima


def test_each_predictors_completion_moves_the_rewards_of_its_own_outputs(grpo_rows):
    rows, _ = grpo_rows
    scorer = ReplayScorer(PROGRAM, REWARDS, PlainJSONAdapter())
    extract_lima, confirm_lima = rows["b"]
    better = scorer.score(extract_lima, json.dumps({"city": "Lima", "quantity": 5, "item": "candle"}))
    assert better.rewards == {
        "city_match": 1.0,
        "quantity_match": 1.0,
        "item_match": 1.0,
        # the later call keeps the teacher's recorded reply
        "reply_mentions": 0.0,
    }
    reply = scorer.score(confirm_lima, json.dumps({"reply": "Your 5 candles will reach Lima soon."}))
    # The replayed extraction is the teacher's (Oslo, 3 blue mugs): the reply is scored on the
    # program's outputs, so naming Lima's gold values now counts, through the gold columns.
    assert reply.rewards["reply_mentions"] == 1.0 and reply.rewards["city_match"] == 0.0
    broken = scorer.score(confirm_lima, "Sure! Your order is on its way.")
    assert broken.format == 0.0 and set(broken.rewards.values()) == {0.0}


def test_a_replay_that_cannot_be_scored_leaves_the_task_rewards_unknown(grpo_rows):
    rows, _ = grpo_rows
    extract_oslo = rows["a"][0]
    # A dry-run row: no completion was recorded for the second call, so the program cannot finish.
    dry = {**extract_oslo, "replay": json.dumps([None])}
    score = ReplayScorer(PROGRAM, REWARDS, PlainJSONAdapter()).score(dry, _recorded(extract_oslo))
    assert score.format == 1.0 and set(score.rewards.values()) == {None}
    # Another adapter formats other prompts than the ones trained on: refused before training.
    chat = ReplayScorer(PROGRAM, REWARDS, dspy.ChatAdapter())
    assert not chat.score(extract_oslo, _recorded(extract_oslo)).matched
    with pytest.raises(ConfigError, match="adapter"):
        chat.check(rows["a"])
    ReplayScorer(PROGRAM, REWARDS, PlainJSONAdapter()).check(rows["a"])


def test_trl_reward_functions_share_one_replay_and_pickle(grpo_rows):
    rows, _ = grpo_rows
    batch = rows["a"] + rows["b"]
    funcs = grpo_reward_funcs(PROGRAM, REWARDS, PlainJSONAdapter())
    assert [f.__name__ for f in funcs] == ["format", "city_match", "quantity_match", "item_match", "reply_mentions"]
    kwargs = {
        "prompts": [r["prompt"] for r in batch],
        "completions": [[{"role": "assistant", "content": _recorded(r)}] for r in batch],
        "inputs": [r["inputs"] for r in batch],
        "call_index": [r["call_index"] for r in batch],
        "replay": [r["replay"] for r in batch],
        "trainer_state": None,
    }
    values = {f.__name__: f(**kwargs) for f in funcs}
    assert values["format"] == [1.0] * 4 and values["city_match"] == [1.0, 1.0, 0.0, 0.0]
    again = pickle.loads(pickle.dumps(funcs))
    assert {f.__name__: f(**kwargs) for f in again} == values
    assert again[1].scorer is again[2].scorer  # still one replay per completion
    with pytest.raises(ValueError, match="replay"):
        funcs[0](completions=["x"], inputs=["{}"])


def test_a_single_predictor_programs_task_reward_named_format_gives_way_to_grpos_own():
    funcs = grpo_reward_funcs(
        "raydspy.programs.banking77:program", "raydspy.programs.banking77:rewards", PlainJSONAdapter()
    )
    assert [f.__name__ for f in funcs] == ["format", "exact_match"]
