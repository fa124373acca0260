"""Exact shared-prefix SFT: the prompt prefix every row of a batch repeats is computed once per step.

Why: DSPy formats the same instructions for every example of a program, so the rows of an SFT
batch begin with the same tokens (banking77: the first ~875 of ~1,240 tokens, the signature's
instructions and its 25 labels), while the loss covers only the answer (completion-only).
Ordinary training runs the whole model over every row, B × L tokens per batch, and on CPU TRL's
LM head scores every one of them against the 49k-token vocabulary, loss or not.

How (a KV cache, as in generation), with ``(B, L)`` right-padded ``input_ids`` and ``labels``:
    P = the rows' longest common prefix and C ≥ P the tokens before every row's first loss
    prediction (`split_batch`; label ``C`` is -100 in every row).
    1. shared: the backbone forwards ``input_ids[:1, :P]`` once (1 × P tokens), with gradients and
       ``use_cache=True``; its keys and values of every layer are repeated over the batch
       (``Cache.batch_repeat_interleave``, differentiable: its backward sums the B rows' gradients).
    2. prompts: the backbone continues each row over ``[P, C)`` (B × (C - P) tokens, no padding
       there) from that cache, again without the LM head (no loss there).
    3. loss: TRL's own `SFTTrainer.compute_loss` runs on ``input_ids[:, C:]`` with
       ``past_key_values=`` the cache, ``position_ids`` C, C+1, … and the batch's full 2D
       ``attention_mask``, so the loss, its metrics and the fused LM head are TRL's. One backward
       flows into all three passes.
    Cost: P + B × (L - P) backbone tokens instead of B × L, and the LM head on B × (L - C).
    Speed and memory against TRL's defaults: BENCHMARKS.md (`benchmarks/sft_step_bench.py`).

Memory: gradient checkpointing must be off, so the activations of every backbone token stay for
the backward.

Exactness: in a causal model a token's keys and values depend only on the tokens before it, so
the prefix's are the same in every row and a row's prompt's are the same whether computed alone
or in the full row; every later token attends to the same keys and values at the same positions
(RoPE sees the same position ids); the loss tokens, their count (``num_items_in_batch``) and
their log-probabilities are the ordinary ones. Loss and gradients equal ordinary training's up
to float rounding (`tests/test_distill_prefix.py` checks both, under DDP too). Dropout (0 in
Llama-family configs) would draw other masks.

DDP: passes 1 and 2 run through the unwrapped module, outside DistributedDataParallel's forward
(Ray Train wraps even one worker), pass 3 through it, so DDP sees one forward and one backward
per step; autograd sums a parameter's uses in the three passes before it accumulates the
gradient once, so DDP's reducer, with or without ``find_unused_parameters``, works unchanged.

Falls back to TRL's normal path for whatever it was not built and tested for: batches with fewer
than `MIN_CACHED_TOKENS` loss-free prompt tokens, with inputs beyond ``input_ids``,
``attention_mask`` and ``labels`` (packing, padding-free, vision) or with left padding; and, for
the whole run, gradient checkpointing (it drops the cache: turn it off), attention other than
``sdpa`` or ``eager``, sliding-window layers, MoE auxiliary losses, label smoothing, a
``compute_loss_func``, sequence parallelism and prompt-learning PEFT (LoRA is fine).

Example:
    >>> trainer = SharedPrefixSFTTrainer(model=model, args=SFTConfig(..., gradient_checkpointing=False),
    ...                                  train_dataset=rows, processing_class=tokenizer)  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP  (logs ``shared_prefix_tokens``: the batches' mean P)
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import torch
from accelerate.utils import is_peft_model
from transformers import DynamicCache
from trl import SFTTrainer

__all__ = ["MIN_CACHED_TOKENS", "Split", "SharedPrefixSFTTrainer", "split_batch"]

logger = logging.getLogger(__name__)

#: Fewest loss-free prompt tokens worth the extra forward calls; batches with fewer train as usual.
MIN_CACHED_TOKENS = 16

# The batch keys the split understands (TRL's collator without packing or padding-free).
_PLAIN_KEYS = frozenset({"input_ids", "attention_mask", "labels"})
# Attention implementations whose cached forward with a padding mask the tests cover.
_TESTED_ATTENTION = ("sdpa", "eager")


class Split(NamedTuple):
    """Where a batch splits, in token positions (0 ≤ shared ≤ prompt < every row's length)."""

    shared: int
    """P: every row has the same first P tokens (computed once)."""
    prompt: int
    """C: no row has a loss token at positions ≤ C (the LM head skips the first C)."""


def split_batch(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, minimum: int = MIN_CACHED_TOKENS
) -> Split | None:
    """Where a right-padded SFT batch splits into a shared prefix, the rows' prompts and the rest.

    C is one less than the earliest first loss position of the rows (so the token at C, the first
    the LM head sees, needs no prediction from before it); a row without loss tokens counts as
    ending there, so each row keeps at least one token after C. P is the longest common prefix of
    the rows' real tokens, at most C.

    Args:
        input_ids: ``(B, L)`` token ids, right-padded.
        attention_mask: ``(B, L)``, 1 on real tokens then 0 on padding.
        labels: ``(B, L)``, -100 where no loss (prompt, padding).
        minimum: a smaller C returns None.

    Returns:
        The split, or None when caching does not apply: C below ``minimum``, or a mask that is not
        right padding.
    """
    length = input_ids.shape[1]
    real = attention_mask.bool()
    lengths = real.sum(dim=1)
    positions = torch.arange(length, device=input_ids.device)
    if not torch.equal(real, positions[None, :] < lengths[:, None]):  # not right padding
        return None
    first_loss = torch.where(labels != -100, positions[None, :], lengths[:, None]).min(dim=1).values
    prompt = int(first_loss.min()) - 1
    if prompt < minimum:
        return None
    same = ((input_ids == input_ids[:1]) & real).all(dim=0)
    shared = min(int(same.long().cumprod(dim=0).sum()), prompt)
    return Split(shared, prompt)


class SharedPrefixSFTTrainer(SFTTrainer):
    """TRL's `SFTTrainer` (its dataset preparation, collator, completion-only loss and metrics)
    whose steps compute the batch's shared prompt prefix once (module docstring).

    Logs ``shared_prefix_tokens`` beside TRL's metrics: the mean P of the logged batches (0 for
    batches that took the normal path).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unsupported_reason = self._unsupported()
        if self._unsupported_reason:
            logger.warning(
                "shared-prefix SFT is off for this run (%s): every batch takes TRL's normal path",
                self._unsupported_reason,
            )

    def _causal_lm(self, model: torch.nn.Module) -> torch.nn.Module:
        """The transformers causal LM inside ``model`` (DDP, accelerate and PEFT wrappers removed)."""
        model = self.accelerator.unwrap_model(model)
        return model.get_base_model() if is_peft_model(model) else model

    def _unsupported(self) -> str | None:
        """Why this run cannot cache prompts, or None."""
        model = self.accelerator.unwrap_model(self.model)
        causal_lm = self._causal_lm(model)
        text_config = causal_lm.config.get_text_config()
        parallelism = self.accelerator.parallelism_config
        peft_config = getattr(model, "active_peft_config", None)
        if self.args.gradient_checkpointing or getattr(causal_lm, "is_gradient_checkpointing", False):
            return "gradient checkpointing drops the KV cache"
        if text_config._attn_implementation not in _TESTED_ATTENTION:
            return f"attention {text_config._attn_implementation!r} is not one of {_TESTED_ATTENTION}"
        if any(DynamicCache(config=text_config).is_sliding):
            return "sliding-window attention layers"
        if self.aux_loss_enabled or self.compute_loss_func is not None or self.label_smoother is not None:
            return "a MoE auxiliary loss, a compute_loss_func or label smoothing"
        if parallelism is not None and parallelism.sp_enabled:
            return "sequence parallelism"
        if peft_config is not None and peft_config.is_prompt_learning:
            return "prompt-learning PEFT"
        return None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss of ``inputs`` (``(B, L)`` ``input_ids``, ``attention_mask``, ``labels``),
        with the shared prefix computed once when the batch has one."""
        split = None if self._unsupported_reason or return_outputs else self._split(inputs)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["shared_prefix_tokens"].append(float(split.shared if split else 0))
        if split is not None:
            inputs = self._cached_inputs(model, inputs, split)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _split(self, inputs: dict[str, torch.Tensor]) -> Split | None:
        """The batch's `Split`, or None for TRL's normal path (inputs other than TRL's plain ones)."""
        if not set(inputs) <= _PLAIN_KEYS:
            return None
        return split_batch(inputs["input_ids"], inputs["attention_mask"], inputs["labels"])

    def _cached_inputs(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], split: Split) -> dict[str, Any]:
        """Passes 1 and 2: forward the shared prefix once and the rows' prompts, and return the
        rest of the batch to continue from their cache.

        Returns:
            ``input_ids`` and ``labels`` ``(B, L - C)``, the full ``attention_mask`` ``(B, L)``,
            ``position_ids`` ``(B, L - C)`` from C, and ``past_key_values``: a cache of C positions.
        """
        input_ids, labels = inputs["input_ids"], inputs["labels"]
        batch, length = input_ids.shape
        shared, prompt = split
        backbone = self._causal_lm(model).base_model
        cache = None
        # Outside DDP's forward (module docstring); under the autocast accelerate gives the model's
        # own forward, so every pass computes in the same precision.
        with self.accelerator.autocast():
            if shared:
                cache = backbone(input_ids=input_ids[:1, :shared], use_cache=True).past_key_values
                cache.batch_repeat_interleave(batch)
            if prompt > shared:  # no padding before C: every row is longer
                positions = torch.arange(shared, prompt, device=input_ids.device).expand(batch, -1)
                cache = backbone(
                    input_ids=input_ids[:, shared:prompt], position_ids=positions, past_key_values=cache, use_cache=True
                ).past_key_values
        if cache is None or cache.get_seq_length() != prompt:
            raise RuntimeError(
                f"the prompt passes cached {0 if cache is None else cache.get_seq_length()} positions, not {prompt}"
            )
        positions = torch.arange(prompt, length, device=input_ids.device).expand(batch, -1)
        return {
            "input_ids": input_ids[:, prompt:],
            "attention_mask": inputs["attention_mask"],
            "position_ids": positions,
            "labels": labels[:, prompt:],
            "past_key_values": cache,
        }
