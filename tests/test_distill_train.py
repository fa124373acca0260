"""SFT and GRPO on Ray Train with TRL, a couple of steps on real rollouts of the embedded teacher.

Heavy (a local Ray, a training worker, vLLM loading a checkpoint): run under the shared lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raydspy.distill import exports
from raydspy.distill.config import TrainConfig

pytestmark = pytest.mark.slow  # Ray Train runs TRL on the embedded model

FIXTURE = Path(__file__).resolve().parent / "data" / "banking77-rollouts.parquet"


def _write_export(rows: list[dict], schema: pa.Schema, folder: Path) -> str:
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-0.parquet")
    return str(folder)


@pytest.fixture(scope="module")
def rollout_rows() -> list[dict]:
    return pq.read_table(FIXTURE).to_pylist()


def _tensors(path) -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(path, "model.safetensors"))


def test_two_sft_steps_change_the_weights_and_write_a_checkpoint_transformers_and_vllm_load(
    ray_local, rollout_rows, tmp_path, monkeypatch
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raydspy.distill.train import run_training
    from raydspy.teacher.embedded import ensure_checkpoint

    _write_export(exports.sft_rows(rollout_rows), exports.SFT_SCHEMA, tmp_path / "sft")
    # Relative paths, as on the command line: Ray Train workers run elsewhere, yet find them.
    monkeypatch.chdir(tmp_path)
    # Shared prefix on, as in sft-cpu.yaml: two rows a batch share the instructions' prefix.
    config = TrainConfig(
        dataset="sft",
        storage_path="runs",
        name="sft-test",
        max_steps=2,
        per_device_train_batch_size=2,
        max_length=1536,
        learning_rate=1e-4,
        logging_steps=1,
        shared_prefix=True,
    )
    progress = []
    result = run_training("sft", config, on_progress=progress.append)

    assert result.metrics["global_step"] == 2
    assert result.metrics["loss"] > 0
    assert result.metrics["shared_prefix_tokens"] > 800  # the batches took the shared-prefix path
    # Rank 0's progress reached the driver while it trained: both steps, with the loss once logged.
    assert [p["step"] for p in progress][-1] == 2 and {p["max_steps"] for p in progress} == {2}
    assert any("loss" in p for p in progress) and all(p["elapsed_s"] >= 0 for p in progress)
    assert result.model_path.startswith(str(tmp_path / "runs" / "sft-test"))
    before, after = _tensors(ensure_checkpoint()), _tensors(result.model_path)
    assert before.keys() == after.keys()
    changed = [k for k in before if not (before[k].float() == after[k].float()).all()]
    assert len(changed) > len(before) // 2  # a full fine-tune moves (nearly) every tensor

    model = AutoModelForCausalLM.from_pretrained(result.model_path)
    tokenizer = AutoTokenizer.from_pretrained(result.model_path)
    assert tokenizer.chat_template and model.num_parameters() > 100_000_000

    # vLLM (CPU build) loads and generates from it, in its own process as a server would.
    script = (
        "from vllm import LLM, SamplingParams\n"
        f"llm = LLM(model={result.model_path!r}, dtype='float32', max_model_len=512, enforce_eager=True)\n"
        "out = llm.generate(['The capital of France is'], SamplingParams(max_tokens=4, temperature=0))\n"
        "print('VLLM-OUT', len(out[0].outputs[0].token_ids))\n"
    )
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "VLLM-OUT 4" in done.stdout


def test_lora_sft_step_writes_a_merged_model(ray_local, rollout_rows, tmp_path):
    from raydspy.distill.config import LoraSettings
    from raydspy.distill.train import run_training
    from raydspy.teacher.embedded import ensure_checkpoint

    dataset = _write_export(exports.sft_rows(rollout_rows)[:2], exports.SFT_SCHEMA, tmp_path / "sft")
    config = TrainConfig(
        dataset=dataset,
        storage_path=str(tmp_path / "runs"),
        name="lora-test",
        max_steps=1,
        per_device_train_batch_size=1,
        max_length=1536,
        learning_rate=1e-3,
        lora=LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    result = run_training("sft", config)
    before, after = _tensors(ensure_checkpoint()), _tensors(result.model_path)
    assert before.keys() == after.keys()  # merged: a plain model, no adapter weights
    changed = {k for k in before if not (before[k].float() == after[k].float()).all()}
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed)


def test_grpo_steps_with_the_format_and_exact_match_rewards(ray_local, rollout_rows, tmp_path):
    from raydspy.distill.train import run_training

    rows = exports.grpo_rows(rollout_rows, columns=["category"])
    dataset = _write_export(rows, exports.grpo_schema(["category"]), tmp_path / "grpo")
    config = TrainConfig.from_yaml(
        Path(__file__).resolve().parents[1] / "jobs" / "configs" / "grpo-cpu.yaml",
        dataset=dataset,
        storage_path=str(tmp_path / "runs"),
        name="grpo-test",
        max_steps=2,
        per_device_train_batch_size=2,
    )
    config = config.model_copy(
        update={"grpo": config.grpo.model_copy(update={"num_generations": 2, "max_completion_length": 24})}
    )
    result = run_training("grpo", config)
    metrics = result.metrics
    assert metrics["global_step"] == 2
    # TRL logs each reward function's mean under its name: ours ran on the sampled completions.
    assert "rewards/format/mean" in metrics and "rewards/exact_match/mean" in metrics
    assert 0.0 <= metrics["rewards/format/mean"] <= 1.0
    assert Path(result.model_path, "config.json").is_file()
