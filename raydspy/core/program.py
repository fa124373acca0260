"""Program introspection: what a DSPy program takes, and a copy of it whose every LM call
goes through the rollout's LM."""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import dspy

from raydspy.errors import ConfigError, InputError

__all__ = ["program_input_fields", "detach_lms", "check_examples"]

logger = logging.getLogger(__name__)


def program_input_fields(program: dspy.Module) -> list[str]:
    """The input field names ``program(**inputs)`` takes.

    Looked up, in order: an ``input_fields`` attribute the program declares; its ``signature``
    (Predict, ReAct, ...); the named parameters of its ``forward``; its first predictor's signature.

    Raises:
        ConfigError: none of these names any field.
    """
    declared = getattr(program, "input_fields", None)
    if isinstance(declared, (list, tuple)) and declared:
        return list(declared)
    signature = getattr(program, "signature", None)
    if signature is not None and getattr(signature, "input_fields", None):
        return list(signature.input_fields)
    params = [
        p.name
        # Looked up on the class: reading `program.forward` makes DSPy warn about direct calls.
        for p in list(inspect.signature(type(program).forward).parameters.values())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if params:
        return params
    predictors = program.predictors()
    if predictors:
        return list(predictors[0].signature.input_fields)
    raise ConfigError(
        f"cannot tell the input fields of {type(program).__name__}: give it an `input_fields` "
        "attribute, named parameters on forward(), or a predictor"
    )


def detach_lms(program: dspy.Module) -> dspy.Module:
    """``program`` itself, or when a predictor is bound to its own LM, a deep copy with that
    binding removed: a predictor's own LM would ignore the rollout's LM (the teacher, or the
    dry run's), so its calls would be neither traced, nor sampled apart, nor stopped by a dry run.
    """
    bound = [name for name, p in program.named_predictors() if getattr(p, "lm", None) is not None]
    if not bound:
        return program
    logger.warning("predictor(s) %s have their own LM; rollouts call the teacher instead", bound)
    detached = copy.deepcopy(program)
    for _, predictor in detached.named_predictors():
        predictor.lm = None
    return detached


def check_examples(examples: Sequence[Mapping[str, Any]], fields: Sequence[str], *, where: str = "<memory>") -> None:
    """Raise before any LM call when ``examples`` cannot feed a program taking ``fields``.

    Raises:
        InputError: no examples, or fields missing (names the fields and the first offending rows).
    """
    if not examples:
        raise InputError(f"no examples in {where}", uri=where)
    bad = [(i, [f for f in fields if f not in ex]) for i, ex in enumerate(examples)]
    bad = [(i, missing) for i, missing in bad if missing]
    if bad:
        missing = sorted({f for _, m in bad for f in m})
        first = ", ".join(f"row {i} lacks {m}" for i, m in bad[:5])
        raise InputError(
            f"{len(bad)} of {len(examples)} examples in {where} lack the program's input field(s) "
            f"{missing} (the program takes {list(fields)}): {first}",
            uri=where,
            missing=missing,
        )
