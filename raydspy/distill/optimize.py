"""Prompt optimisation of a candidate with DSPy's optimisers, the task's rewards as the metric."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from raydspy.errors import ConfigError

__all__ = ["Optimizer", "OPTIMIZER_NAMES", "optimize"]

Optimizer = Literal["bootstrap", "random-search"]
OPTIMIZER_NAMES = {"bootstrap": "BootstrapFewShot", "random-search": "BootstrapFewShotWithRandomSearch"}


def optimize(
    program: Any,
    trainset: Sequence[Mapping[str, Any]],
    optimizer: Optimizer,
    *,
    lm: Any,
    adapter: Any,
    metric: Any,
    metric_threshold: float = 1.0,
    max_demos: int = 4,
    threads: int = 8,
) -> Any:
    """Compile ``program`` with DSPy's few-shot optimiser against ``lm`` (through ``adapter``).

    Args:
        program: the program (it is not changed: a deep copy is compiled).
        trainset: training examples (dicts holding the program's inputs and the rewards' gold fields).
        optimizer: ``"bootstrap"`` (BootstrapFewShot: the first ``max_demos`` training examples the
            model itself gets right become demos) or ``"random-search"``
            (BootstrapFewShotWithRandomSearch: 4 candidate demo sets, the best on ``trainset``).
        lm, adapter: the candidate's model and decoding; demos are its own rollouts.
        metric: a DSPy metric (the task's rewards: `raydspy.core.rewards.RewardSet.as_metric`).
        metric_threshold: a rollout becomes a demo when its metric reaches this.
        max_demos: bootstrapped demos per predictor (no unlabelled demos: a demo without the
            model's own outputs would teach the format, not the task).

    Returns:
        The compiled program (a copy of ``program`` with demos).

    Raises:
        ConfigError: an unknown ``optimizer``.
    """
    import dspy

    from raydspy.core.program import program_input_fields

    fields = program_input_fields(program)
    examples = [dspy.Example(**row).with_inputs(*fields) for row in trainset]
    # A completion that does not parse is a miss, not a reason to stop: a base student fails on
    # most examples, and DSPy's optimisers otherwise give up after dspy.settings.max_errors.
    budget = {
        "metric": metric,
        "metric_threshold": metric_threshold,
        "max_bootstrapped_demos": max_demos,
        "max_labeled_demos": 0,
        "max_errors": len(examples) * 8 + 1,
    }
    if optimizer == "bootstrap":
        teleprompter = dspy.BootstrapFewShot(**budget)
    elif optimizer == "random-search":
        teleprompter = dspy.BootstrapFewShotWithRandomSearch(**budget, num_candidate_programs=4, num_threads=threads)
    else:
        raise ConfigError(f"optimizer must be one of {sorted(OPTIMIZER_NAMES)}, got {optimizer!r}")
    with dspy.context(lm=lm, adapter=adapter):
        return teleprompter.compile(program.deepcopy(), trainset=examples)
