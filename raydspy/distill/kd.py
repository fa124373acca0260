"""Token-level distillation on the teacher's top-k logprobs (``raydspy train kd``).

The KD export (`raydspy.distill.exports.to_kd`) holds, per LM call, the teacher's prompt and
completion token ids and, at each completion position t, its K most likely tokens ``top_ids[t]``
and their logprobs ``top_logprobs[t]``. The student reads exactly those token ids (no tokenising
again), so it must share the teacher's tokenizer (`check_vocabulary`). Per completion position,
with the teacher's distribution renormalised over its top K at temperature T,

    p_t(k) = softmax_k(top_logprobs[t, k] / T)        q_t(k) = log_softmax(student_logits[t] / T)[top_ids[t, k]]
    KD     = T² · mean_t Σ_k p_t(k) · (log p_t(k) − q_t(k))      (forward KL on the teacher's top K)
    CE     = mean_t −log softmax(student_logits[t])[sampled token t]
    loss   = alpha · KD + (1 − alpha) · CE

the means over every completion token of the batch (prompt tokens carry no loss). The student's
logprobs are normalised over its whole vocabulary, so KD is 0 only when the student puts all its
mass on the teacher's top K in the teacher's proportions; a student equal to the teacher scores
the teacher's missing mass, ``−log Σ_k exp(top_logprobs[t, k])`` (the test checks this).

This is "sparse" (top-k) distillation as in DistillKit; the teacher's logprobs are vLLM's raw ones
(before temperature and structured-output masking: `raydspy.core.token_traces`).

Example (after ``ray.init()``; any SFT config, its ``kd`` section optional):
    >>> config = TrainConfig.from_yaml("jobs/configs/sft-cpu.yaml", dataset="exports/kd")  # doctest: +SKIP
    >>> run_training("kd", config)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch
from transformers import Trainer, TrainingArguments

from raydspy.distill.config import KDSettings
from raydspy.errors import ConfigError

__all__ = ["KDCollator", "KDTrainer", "kd_loss", "check_vocabulary", "build_kd_trainer"]

logger = logging.getLogger(__name__)

#: The export's columns the collator reads.
KD_INPUTS = ("prompt_token_ids", "completion_token_ids", "top_token_ids", "top_logprobs")


@dataclass
class KDCollator:
    """KD export rows → a right-padded batch (``B`` rows, ``L`` tokens, ``K`` alternatives).

    Returns ``input_ids``, ``attention_mask`` ``(B, L)``; ``labels`` ``(B, L)``, the token each
    position predicts (the next one) where it is a completion token, else -100; ``top_ids``,
    ``top_logprobs`` ``(B, L, K)``, the teacher's alternatives for that next token (0 elsewhere).
    A row is cut at ``max_length`` tokens (from the end of its completion).
    """

    pad_token_id: int
    max_length: int

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        k = max(len(r["top_token_ids"][0]) for r in rows)
        length = min(self.max_length, max(len(r["prompt_token_ids"]) + len(r["completion_token_ids"]) for r in rows))
        batch = len(rows)
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), -100, dtype=torch.long)
        top_ids = torch.zeros((batch, length, k), dtype=torch.long)
        top_logprobs = torch.zeros((batch, length, k), dtype=torch.float32)
        for i, row in enumerate(rows):
            prompt, completion = row["prompt_token_ids"], row["completion_token_ids"]
            ids = (prompt + completion)[: self.max_length]
            kept = len(ids) - len(prompt)  # completion tokens within max_length
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention_mask[i, : len(ids)] = 1
            if kept <= 0:
                continue
            start = len(prompt) - 1  # the position that predicts the first completion token
            labels[i, start : start + kept] = torch.tensor(completion[:kept])
            top_ids[i, start : start + kept] = torch.tensor(row["top_token_ids"][:kept])
            top_logprobs[i, start : start + kept] = torch.tensor(row["top_logprobs"][:kept], dtype=torch.float32)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "top_ids": top_ids,
            "top_logprobs": top_logprobs,
        }


def kd_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    top_ids: torch.Tensor,
    top_logprobs: torch.Tensor,
    settings: KDSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The module docstring's loss, its KD term and its CE term.

    Args:
        logits: the student's ``(B, L, V)``; position t predicts token t + 1.
        labels: ``(B, L)``: the token position t predicts, -100 where no loss.
        top_ids, top_logprobs: ``(B, L, K)``: the teacher's alternatives at each position.
        settings: ``alpha`` and ``temperature``.

    Returns:
        ``(loss, kd, ce)``, scalars.
    """
    mask = labels != -100
    if not mask.any():
        zero = logits.sum() * 0.0
        return zero, zero, zero
    scored = logits[mask].float()  # (N, V): only the completion's positions reach the vocabulary
    t = settings.temperature
    teacher = torch.log_softmax(top_logprobs[mask] / t, dim=-1)  # (N, K), renormalised over the top K
    student = torch.log_softmax(scored / t, dim=-1).gather(-1, top_ids[mask])  # (N, K)
    kd = (teacher.exp() * (teacher - student)).sum(-1).mean() * t * t
    ce = torch.nn.functional.cross_entropy(scored, labels[mask])
    return settings.alpha * kd + (1.0 - settings.alpha) * ce, kd, ce


class KDTrainer(Trainer):
    """transformers' `Trainer` whose loss is `kd_loss`; logs ``kd_loss`` and ``ce_loss`` beside it."""

    def __init__(self, *args: Any, kd: KDSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kd = kd
        self._parts: dict[str, list[float]] = {"kd_loss": [], "ce_loss": []}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        loss, kd, ce = kd_loss(outputs.logits, inputs["labels"], inputs["top_ids"], inputs["top_logprobs"], self.kd)
        if model.training:  # what the logged steps trained on, not an evaluation's
            self._parts["kd_loss"].append(float(kd.detach()))
            self._parts["ce_loss"].append(float(ce.detach()))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        for name, values in self._parts.items():
            if values and "loss" in logs:
                logs[name] = sum(values) / len(values)
                values.clear()
        super().log(logs, *args, **kwargs)


def check_vocabulary(table: pa.Table, vocab_size: int, model: str) -> None:
    """Fail before training when the export's token ids (``table``: its rows) do not fit the
    student's vocabulary.

    Raises:
        ConfigError: a token id at or above ``vocab_size``: the teacher's tokenizer is not the
            student's.
    """
    largest = -1
    for name in ("prompt_token_ids", "completion_token_ids", "top_token_ids"):
        column = table.column(name)
        while pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            column = pc.list_flatten(column)
        largest = max(largest, pc.max(column).as_py() if len(column) else -1)
    if largest >= vocab_size:
        raise ConfigError(
            f"the KD export holds token id {largest}, beyond the student {model!r}'s vocabulary ({vocab_size}): "
            "token-level distillation needs a student with the teacher's tokenizer"
        )


def build_kd_trainer(config, model, tokenizer, common: dict[str, Any], dataset, peft_config=None) -> KDTrainer:
    """The `KDTrainer` of a `raydspy.distill.config.TrainConfig` on ``dataset`` (the KD export,
    a ``datasets.Dataset``); ``common`` are the TrainingArguments every method shares. With
    ``peft_config`` (a ``peft.LoraConfig``: the config's ``lora``) only LoRA adapters train, as in
    TRL's trainers; the final model has them merged.

    Raises:
        ConfigError: the export is not a KD export, or its ids do not fit the student.
    """
    missing = sorted(set(KD_INPUTS) - set(dataset.column_names))
    if missing:
        raise ConfigError(f"{config.dataset!r} is not a KD export (no {missing}): run `raydspy export kd` first")
    dataset = dataset.select_columns(list(KD_INPUTS))
    check_vocabulary(dataset.data.table, model.config.get_text_config().vocab_size, config.model)
    args = TrainingArguments(**common, remove_unused_columns=False, **config.trl)
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return KDTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=KDCollator(pad, config.max_length),
        processing_class=tokenizer,
        kd=config.kd or KDSettings(),
    )
