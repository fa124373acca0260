"""Exports of real rollouts (tests/data/banking77-rollouts.parquet: the embedded teacher with
structured outputs, banking77, 4 rollouts per example) to TRL's layouts, read with Ray Data.

Tests using `ray_local` start a local Ray (heavy: run under the shared lock); the rest are pure.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raydspy.core.adapters import PlainJSONAdapter, StructuredOutputAdapter
from raydspy.distill import exports
from raydspy.distill.rewards import grpo_reward_funcs
from raydspy.programs import banking77

BANKING77, BANKING77_REWARDS = "raydspy.programs.banking77:program", "raydspy.programs.banking77:rewards"

FIXTURE = Path(__file__).resolve().parent / "data" / "banking77-rollouts.parquet"


@pytest.fixture(scope="module")
def rollout_rows() -> list[dict]:
    return pq.read_table(FIXTURE).to_pylist()


@pytest.fixture
def rollouts_dir(tmp_path) -> Path:
    """The fixture as a run's output: one committed part file, plus what readers must skip."""
    folder = tmp_path / "rollouts"
    (folder / "_invalid").mkdir(parents=True)
    shutil.copy(FIXTURE, folder / "part-0000000000000001.parquet")
    shutil.copy(FIXTURE, folder / "_invalid" / "rows.parquet")  # not rollouts
    (folder / ".part-0000000000000002.parquet.tmp").write_bytes(b"half a file")  # an uncommitted temporary
    return folder


def _signature():
    return banking77.make_signature(banking77.top_labels(25))


# -- the fixture is what the exports need ----------------------------------------------------


def test_fixture_has_full_reward_rollouts_and_examples_with_differing_rewards(rollout_rows):
    assert any(r["reward"] == 1.0 for r in rollout_rows)
    by_example: dict[str, set] = {}
    for r in rollout_rows:
        by_example.setdefault(r["example_id"], set()).add(r["reward"])
    assert any(len(rewards) > 1 for rewards in by_example.values())


# -- pure transforms -------------------------------------------------------------------------


def test_sft_rows_are_the_adapters_messages_plus_the_teachers_completion(rollout_rows):
    rows = exports.sft_rows(rollout_rows, min_reward=1.0)
    kept = [r for r in rollout_rows if r["reward"] is not None and r["reward"] >= 1.0 and r["error"] is None]
    assert len(rows) == sum(len(r["trace"]) for r in kept) > 0
    by_id = {r["rollout_id"]: r for r in kept}
    for row in rows:
        call = by_id[row["rollout_id"]]["trace"][0]
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert row["messages"][:-1] == [{"role": m["role"], "content": m["content"]} for m in call["messages"]]
        assert row["messages"][-1]["content"] == call["completion"]
        assert row["reward"] >= 1.0


def test_sft_threshold_on_a_named_reward(rollout_rows):
    by_format = exports.sft_rows(rollout_rows, min_reward=1.0, reward="format")
    by_combined = exports.sft_rows(rollout_rows, min_reward=1.0)
    assert len(by_format) > len(by_combined)  # well-formed but wrong answers pass the format threshold


def test_dpo_pairs_have_chosen_reward_above_rejected_and_one_prompt(rollout_rows):
    pairs = exports.dpo_rows(rollout_rows)
    assert pairs
    by_id = {r["rollout_id"]: r for r in rollout_rows}
    for pair in pairs:
        assert pair["chosen_reward"] > pair["rejected_reward"]
        chosen, rejected = by_id[pair["chosen_rollout_id"]], by_id[pair["rejected_rollout_id"]]
        assert chosen["example_id"] == rejected["example_id"] == pair["example_id"]
        assert chosen["reward"] == pair["chosen_reward"] and rejected["reward"] == pair["rejected_reward"]
        assert pair["chosen"] == [{"role": "assistant", "content": chosen["trace"][0]["completion"]}]
        assert pair["rejected"] == [{"role": "assistant", "content": rejected["trace"][0]["completion"]}]
        # both completions answer the very same prompt
        assert [m["content"] for m in rejected["trace"][0]["messages"]] == [m["content"] for m in pair["prompt"]]


def test_grpo_rows_one_prompt_per_example_with_gold_column(rollout_rows):
    rows = exports.grpo_rows(rollout_rows, columns=["category"])
    assert len(rows) == len({r["example_id"] for r in rollout_rows})
    for row in rows:
        inputs = json.loads(row["inputs"])
        assert row["category"] == inputs["category"]
        assert inputs["text"] in row["prompt"][-1]["content"]
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]


# -- the TRL reward functions, on the teacher's real completions ----------------------------


def test_grpo_rows_replay_to_the_teachers_rewards_and_pickle(rollout_rows):
    rows = exports.grpo_rows(rollout_rows, columns=["category"])
    assert all(row["call_index"] == 0 and len(json.loads(row["replay"])) == 1 for row in rows)
    funcs = grpo_reward_funcs(BANKING77, BANKING77_REWARDS, PlainJSONAdapter())
    assert [f.__name__ for f in funcs] == ["format", "exact_match"]
    first = {}
    for row in sorted(rollout_rows, key=lambda r: r["rollout_index"]):  # the row each GRPO prompt came from
        first.setdefault(row["example_id"], row)
    kwargs = {
        "prompts": [r["prompt"] for r in rows],
        "inputs": [r["inputs"] for r in rows],
        "call_index": [r["call_index"] for r in rows],
        "replay": [r["replay"] for r in rows],
        "completions": [[{"role": "assistant", "content": json.loads(r["replay"])[0]}] for r in rows],
    }
    # The teacher's format flag and exact-match reward, recomputed by replaying its completions.
    fmt, task = funcs
    assert fmt(**kwargs) == [float(first[r["example_id"]]["trace"][0]["format_ok"]) for r in rows]
    assert task(**kwargs) == [dict(first[r["example_id"]]["rewards"]).get("exact_match", 0.0) for r in rows]
    again = pickle.loads(pickle.dumps(funcs))
    assert [f(**kwargs) for f in again] == [f(**kwargs) for f in funcs]
    assert fmt(**{**kwargs, "completions": ["not json at all"] * len(rows)}) == [0.0] * len(rows)


def test_dry_run_rows_are_grpo_prompts(tmp_path):
    """The seed's dry run (no teacher) gives GRPO prompts: its rows export as they are."""
    from raydspy import Collect
    from raydspy.core.rollouts import records_to_table
    from raydspy.core.specs import load_program

    collect = Collect(load_program(BANKING77), str(tmp_path), adapter=PlainJSONAdapter())
    prompts = collect.collect([{"text": "where is my card?", "category": "card_arrival"}], n=1, dry_run=True)
    (row,) = exports.grpo_rows(records_to_table(collect.last_records).to_pylist(), columns=["category"])
    assert row["prompt"] == prompts[0].messages and row["category"] == "card_arrival"
    assert json.loads(row["replay"]) == [None]


def test_plain_json_adapter_sends_no_response_format():
    import dspy

    class Recorder(dspy.LM):
        def __init__(self):
            super().__init__("openai/x", api_base="http://127.0.0.1:9/v1", api_key="-", cache=False)
            self.kwargs_seen = []

        def forward(self, prompt=None, messages=None, **kwargs):
            self.kwargs_seen.append(kwargs)
            raise RuntimeError("stop here")

    for adapter, expect in ((PlainJSONAdapter(), False), (StructuredOutputAdapter(), True)):
        lm = Recorder()
        with pytest.raises(RuntimeError):
            adapter(lm, {}, _signature(), [], {"text": "card not arrived"})
        assert ("response_format" in lm.kwargs_seen[0]) is expect


# -- the exports, in this process and on Ray Data ---------------------------------------------


@pytest.fixture(params=["in_process", pytest.param("ray_data", marks=pytest.mark.ray)])
def engine(request, monkeypatch):
    """Each export test runs twice: small input in this process (`raydspy.distill.in_process`),
    and with that path's bound at 0 bytes, on Ray Data (a local Ray)."""
    from raydspy.distill import in_process

    if request.param == "ray_data":
        request.getfixturevalue("ray_local")
        monkeypatch.setattr(in_process, "MAX_BYTES", -1)
    return request.param


def _read(uri: Path) -> list[dict]:
    return exports.load_export(str(uri)).to_list()


def test_exports_read_only_committed_parts_and_each_rollout_once(engine, rollouts_dir, tmp_path, rollout_rows):
    expected = exports.sft_rows(rollout_rows)
    summary = exports.to_sft(str(rollouts_dir), str(tmp_path / "sft"))
    assert summary.rows == len(expected) and summary.rollouts == len(rollout_rows)
    # A rollout committed twice (a killed driver's late worker) is exported once.
    shutil.copy(FIXTURE, rollouts_dir / "part-0000000000000003.parquet")
    again = exports.to_sft(str(rollouts_dir), str(tmp_path / "sft"))
    assert again.rows == len(expected) and again.rollouts == len(rollout_rows)
    got = sorted(_read(tmp_path / "sft"), key=lambda r: (r["rollout_id"], r["predictor"]))
    assert got == sorted(expected, key=lambda r: (r["rollout_id"], r["predictor"]))


def test_an_export_writes_a_card_that_datasets_loads_with_the_rollouts_license(engine, rollouts_dir, tmp_path):
    import datasets

    (rollouts_dir / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# Rollouts\n")  # the run's card
    summary = exports.to_sft(str(rollouts_dir), str(tmp_path / "sft"))
    card = (tmp_path / "sft" / "README.md").read_text()
    assert card.startswith("---\nlicense: cc-by-4.0\n") and f"{summary.rows} rows for trl.SFTTrainer" in card
    loaded = datasets.load_dataset(str(tmp_path / "sft"), split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.num_rows == summary.rows and set(loaded.column_names) == set(exports.SFT_SCHEMA.names)


def test_dpo_and_grpo_exports_match_the_transforms(engine, rollouts_dir, tmp_path, rollout_rows):
    dpo = exports.to_dpo(str(rollouts_dir), str(tmp_path / "dpo"))
    assert dpo.rows == len(exports.dpo_rows(rollout_rows)) > 0
    assert all(r["chosen_reward"] > r["rejected_reward"] for r in _read(tmp_path / "dpo"))
    grpo = exports.to_grpo(str(rollouts_dir), str(tmp_path / "grpo"), columns=["category"])
    rows = _read(tmp_path / "grpo")
    assert grpo.rows == len(rows) == len({r["example_id"] for r in rollout_rows})
    assert set(rows[0]) == {"prompt", "inputs", "category", "example_id", "predictor", "call_index", "replay"}


def test_export_from_and_to_s3(engine, s3_server, rollouts_dir, rollout_rows):
    import boto3

    from raydspy.core.storage import StorageOptions

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.upload_file(
        str(rollouts_dir / "part-0000000000000001.parquet"), "rollouts", "distill/run/part-0000000000000001.parquet"
    )
    storage = StorageOptions(s3_endpoint_url=s3_server)
    summary = exports.to_sft("s3://rollouts/distill/run", "s3://rollouts/distill/sft", storage=storage)
    assert summary.rows == len(exports.sft_rows(rollout_rows))
    assert len(exports.load_export("s3://rollouts/distill/sft", storage)) == summary.rows


def test_export_of_an_empty_location_says_so(engine, tmp_path):
    from raydspy.errors import StorageError

    with pytest.raises(StorageError, match="no committed rollouts"):
        exports.to_sft(str(tmp_path / "nothing"), str(tmp_path / "out"))


# -- each export through its TRL trainer's dataset preparation -------------------------------


@pytest.fixture(scope="module")
def student():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raydspy.teacher.embedded import ensure_checkpoint

    path = ensure_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return path, tokenizer, AutoModelForCausalLM.from_pretrained(path)


def _dataset(rows, schema):
    import datasets
    import pyarrow as pa

    return datasets.Dataset(pa.Table.from_pylist(rows, schema=schema))


def test_sft_export_prepares_in_sft_trainer(student, rollout_rows, tmp_path):
    from trl import SFTConfig, SFTTrainer

    from raydspy.distill.train import prompt_completion

    _, tokenizer, model = student
    data = prompt_completion(_dataset(exports.sft_rows(rollout_rows), exports.SFT_SCHEMA))
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=data,
        args=SFTConfig(output_dir=str(tmp_path), max_length=1536, use_cpu=True, report_to="none"),
    )
    first = trainer.train_dataset[0]
    assert len(first["input_ids"]) > 100
    # completion-only loss: only the assistant's answer has labels; the prompt's are -100
    trained = sum(label != -100 for label in first["labels"])
    assert 0 < trained < len(first["input_ids"]) // 4


def test_dpo_export_prepares_in_dpo_trainer(student, rollout_rows, tmp_path):
    from trl import DPOConfig, DPOTrainer

    _, tokenizer, model = student
    data = _dataset(exports.dpo_rows(rollout_rows), exports.DPO_SCHEMA)
    trainer = DPOTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=data,
        args=DPOConfig(output_dir=str(tmp_path), max_length=1536, use_cpu=True, report_to="none"),
    )
    row = trainer.train_dataset[0]
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(row)
    assert row["chosen_ids"] != row["rejected_ids"]


def test_grpo_export_prepares_in_grpo_trainer(student, rollout_rows, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    _, tokenizer, model = student
    data = _dataset(exports.grpo_rows(rollout_rows, columns=["category"]), exports.grpo_schema(["category"]))
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=data,
        reward_funcs=grpo_reward_funcs(BANKING77, BANKING77_REWARDS, PlainJSONAdapter()),
        args=GRPOConfig(
            output_dir=str(tmp_path),
            num_generations=2,
            per_device_train_batch_size=2,
            max_completion_length=8,
            use_cpu=True,
            report_to="none",
        ),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert {"prompt", "inputs", "category", "call_index", "replay"} <= set(batch[0])
