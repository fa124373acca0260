"""Shared-prefix SFT (`raydspy.distill.shared_prefix`) computes ordinary training's loss and gradients.

A tiny randomly initialised Llama (no weights to download) trains on real banking77 SFT rows of
the fixture, tokenized by the embedded student's tokenizer and collated by TRL; each batch's loss,
gradients and metrics through `SharedPrefixSFTTrainer` are compared with TRL's own
`SFTTrainer.compute_loss` on the same batch. Light: seconds, no lock needed.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

pytestmark = pytest.mark.slow  # loads and trains the embedded model

FIXTURE = Path(__file__).resolve().parent / "data" / "banking77-rollouts.parquet"
REPO = Path(__file__).resolve().parents[1]
VOCAB = 2048  # the tiny model's; the batches' token ids are renumbered into it


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from raydspy.teacher.embedded import ensure_checkpoint

    return AutoTokenizer.from_pretrained(ensure_checkpoint())


@pytest.fixture(scope="module")
def dataset():
    import datasets

    from raydspy.distill import exports
    from raydspy.distill.train import prompt_completion

    rows = exports.sft_rows(pq.read_table(FIXTURE).to_pylist())
    assert len(rows) >= 4
    return prompt_completion(datasets.Dataset.from_list(rows))


def _tiny_llama(dtype=torch.float32, attn="sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(config).to(dtype)


def _trainer(model, tokenizer, dataset, tmp_path, batch_size=4, **args):
    from trl import SFTConfig

    from raydspy.distill.shared_prefix import SharedPrefixSFTTrainer

    # bf16=False as in `raydspy.distill.train` on CPU (SFTConfig defaults to bf16 autocast).
    args = {"gradient_checkpointing": False, "bf16": False, **args}
    config = SFTConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=batch_size,
        max_length=1536,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        **args,
    )
    return SharedPrefixSFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)


def _batch(trainer) -> dict[str, torch.Tensor]:
    """A batch as TRL collates it (right-padded ``input_ids``, ``attention_mask``, ``labels``
    with -100 on prompt and padding), token ids renumbered into the tiny vocabulary."""
    batch = next(iter(trainer.get_train_dataloader()))
    ids, renumbered = torch.unique(batch["input_ids"], return_inverse=True)
    assert len(ids) <= VOCAB
    labels = torch.where(batch["labels"] == -100, -100, renumbered)
    return {"input_ids": renumbered, "attention_mask": batch["attention_mask"], "labels": labels}


def _loss_and_grads(compute_loss, trainer, model, batch, num_items_in_batch=None):
    model.zero_grad(set_to_none=True)
    loss = compute_loss(trainer, model, dict(batch), num_items_in_batch=num_items_in_batch)
    loss.backward()
    inner = getattr(model, "module", model)
    return loss.detach(), {n: p.grad.clone() for n, p in inner.named_parameters() if p.requires_grad}


def _assert_same(shared, plain, rtol):
    (loss_s, grads_s), (loss_p, grads_p) = shared, plain
    torch.testing.assert_close(loss_s, loss_p, rtol=rtol, atol=0)
    assert grads_s.keys() == grads_p.keys() and grads_s
    for name in grads_p:
        # Relative to the tensor's largest entry: tiny entries carry only rounding.
        scale = grads_p[name].abs().max().item()
        torch.testing.assert_close(grads_s[name], grads_p[name], rtol=rtol, atol=rtol * scale, msg=name)


def _compare(trainer, model, batch, rtol, num_items_in_batch=None):
    from trl import SFTTrainer

    from raydspy.distill.shared_prefix import SharedPrefixSFTTrainer

    model.train()
    shared = _loss_and_grads(SharedPrefixSFTTrainer.compute_loss, trainer, model, batch, num_items_in_batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    plain = _loss_and_grads(SFTTrainer.compute_loss, trainer, model, batch, num_items_in_batch)
    _assert_same(shared, plain, rtol)
    # TRL's metrics of the step (entropy, accuracy on the answers, tokens seen) are unchanged.
    after = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    for key in ("entropy", "mean_token_accuracy"):
        assert metrics[key] == pytest.approx(after[key], rel=1e-5)
    return metrics


# --- where a batch splits ---------------------------------------------------------------------


def _rows(*rows):
    """Right-padded ``(input_ids, attention_mask, labels)`` of rows given as (ids, first loss index)."""
    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for i, (ids, first) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
        if first is not None:
            labels[i, first : len(ids)] = torch.tensor(ids[first:])
    return input_ids, mask, labels


def test_split_is_the_common_prefix_cut_before_the_first_loss_token():
    from raydspy.distill.shared_prefix import Split, split_batch

    prefix = list(range(1, 21))
    # Common prefix 20 tokens, rows' answers (loss) from 24 and 23: C = 22, P = 20.
    batch = _rows((prefix + [30, 31, 32, 33, 34], 24), (prefix + [40, 41, 42, 43, 44, 45, 46], 23))
    assert split_batch(*batch, minimum=1) == Split(shared=20, prompt=22)
    # The answer starts inside the common prefix (identical rows): both stop one token before it.
    twins = _rows((prefix + [5, 6], 12), (prefix + [5, 6], 12))
    assert split_batch(*twins, minimum=1) == Split(11, 11)
    # A row without loss tokens ends the prompt at its last token but one.
    assert split_batch(*_rows((prefix + [7, 8], None), (prefix + [9, 9, 9, 9], 21)), minimum=1) == Split(20, 20)
    # One row: its whole prompt is "shared".
    assert split_batch(*_rows((prefix + [7, 8, 9], 21)), minimum=1) == Split(20, 20)
    # No common prefix: only the rows' prompts are cached.
    assert split_batch(*_rows(([1] * 20 + [2, 3], 21), ([4] * 30, 25)), minimum=1) == Split(0, 20)


def test_split_refuses_short_prompts_and_left_padding():
    from raydspy.distill.shared_prefix import split_batch

    prefix = list(range(1, 21))
    batch = _rows((prefix + [30, 31], 10), (prefix + [40], 10))
    assert split_batch(*batch, minimum=16) is None  # C = 9: not worth the calls
    input_ids, mask, labels = _rows((prefix + [30, 31], 21), (prefix + [40], 21))
    left = torch.flip(mask, dims=[1])
    assert split_batch(input_ids, left, labels, minimum=1) is None


# --- exactness ---------------------------------------------------------------------------------


def test_shared_prefix_loss_and_gradients_equal_ordinary_training(tokenizer, dataset, tmp_path):
    model = _tiny_llama(torch.float64)
    trainer = _trainer(model, tokenizer, dataset, tmp_path)
    batch = _batch(trainer)
    lengths = batch["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) == len(lengths) == 4  # padding: every row a different length
    metrics = _compare(trainer, trainer.model, batch, rtol=1e-6)
    assert metrics["shared_prefix_tokens"] > 800  # the banking77 instructions and labels
    # With Trainer's token count across accumulation steps, as in training.
    items = (batch["labels"][:, 1:] != -100).sum() * 3
    _compare(trainer, trainer.model, batch, rtol=1e-6, num_items_in_batch=items)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_float32_and_rows_without_loss_tokens(tokenizer, dataset, tmp_path, attn):
    model = _tiny_llama(torch.float32, attn)
    trainer = _trainer(model, tokenizer, dataset, tmp_path)
    batch = _batch(trainer)
    # A row with no loss tokens (its answer cut by max_length) trains nothing in either path.
    batch["labels"][1] = -100
    _compare(trainer, trainer.model, batch, rtol=1e-4)


def test_lora_gradients_equal_ordinary_training(tokenizer, dataset, tmp_path):
    from peft import LoraConfig

    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    from trl import SFTConfig

    from raydspy.distill.shared_prefix import SharedPrefixSFTTrainer

    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        max_length=1536,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        gradient_checkpointing=False,
        bf16=False,
    )
    trainer = SharedPrefixSFTTrainer(
        model=_tiny_llama(torch.float64),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    # Nonzero adapters, so that the base weights' gradients flow through them too.
    with torch.no_grad():
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    _compare(trainer, trainer.model, _batch(trainer), rtol=1e-6)


def test_under_ddp_two_steps(tokenizer, dataset, tmp_path):
    """Ray Train wraps the model in DistributedDataParallel even for one worker: the prefix passes
    run outside its forward, and its reducer must still see each gradient once, step after step."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model = _tiny_llama(torch.float64)
    trainer = _trainer(model, tokenizer, dataset, tmp_path, batch_size=2)
    batch = _batch(trainer)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        # Trainer's default is find_unused_parameters=True without gradient checkpointing.
        for find_unused, steps in ((True, 2), (False, 1)):
            wrapped = DistributedDataParallel(trainer.model, find_unused_parameters=find_unused)
            for _ in range(steps):
                _compare(trainer, wrapped, batch, rtol=1e-6)
            del wrapped
    finally:
        dist.destroy_process_group()


def test_falls_back_where_it_does_not_apply(tokenizer, dataset, tmp_path):
    trainer = _trainer(_tiny_llama(), tokenizer, dataset, tmp_path / "gc", gradient_checkpointing=True)
    assert "gradient checkpointing" in trainer._unsupported_reason
    # A batch whose answers start early has nothing worth caching: TRL's path, P logged as 0.
    trainer = _trainer(_tiny_llama(), tokenizer, dataset, tmp_path, batch_size=2)
    batch = _batch(trainer)
    batch["labels"] = torch.where(batch["attention_mask"].bool(), batch["input_ids"], -100)
    _compare(trainer, trainer.model, batch, rtol=1e-4)
    assert trainer._metrics["train"]["shared_prefix_tokens"][-1] == 0.0


def test_cpu_config_turns_it_on_and_train_builds_it_without_checkpointing(tokenizer, tmp_path):
    import pyarrow as pa
    from pydantic import ValidationError

    from raydspy.distill import exports
    from raydspy.distill.config import TrainConfig
    from raydspy.distill.shared_prefix import SharedPrefixSFTTrainer
    from raydspy.distill.train import _build_trainer

    config = TrainConfig.from_yaml(REPO / "jobs" / "configs" / "sft-cpu.yaml")
    assert config.shared_prefix
    assert not TrainConfig(dataset="x").shared_prefix
    with pytest.raises(ValidationError, match="gradient checkpointing"):
        TrainConfig(dataset="x", shared_prefix=True, trl={"gradient_checkpointing": True})

    (tmp_path / "sft").mkdir()
    rows = exports.sft_rows(pq.read_table(FIXTURE).to_pylist())
    pq.write_table(pa.Table.from_pylist(rows, schema=exports.SFT_SCHEMA), tmp_path / "sft" / "part-0.parquet")
    config = config.model_copy(update={"dataset": str(tmp_path / "sft")})
    common = dict(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, bf16=False)
    trainer = _build_trainer("sft", config, _tiny_llama(), tokenizer, common, None)
    assert isinstance(trainer, SharedPrefixSFTTrainer)
    assert not trainer.args.gradient_checkpointing and trainer._unsupported_reason is None
