"""Every private or unstable API of DSPy and Ray that raydspy relies on, in one place, with the
versions it was written against. A release that moves one of them breaks here, in
`tests/test_layout.py`, rather than deep inside a run.

| what                                                        | used by                       |
| ----------------------------------------------------------- | ----------------------------- |
| ``dspy.adapters.json_adapter._get_structured_outputs_response_format`` | the teacher's JSON schema (`raydspy.core.adapters`) |
| ``dspy.BaseLM.__call__(prompt, messages=, **kwargs)`` and ``acall`` (subclassed per rollout) | traces (`raydspy.core.tracing`) |
| ``ray.data.DataContext._max_num_blocks_in_streaming_gen_buffer`` | the pipeline's refill rate (`raydspy.pipeline.driver`) |

Nothing here imports DSPy or Ray at module level.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Any

__all__ = ["TESTED", "check_versions", "structured_outputs_response_format", "set_streaming_buffer_blocks"]

logger = logging.getLogger(__name__)

#: ``{distribution: version prefix}`` raydspy is tested with (constraints.txt pins them).
TESTED = {"dspy": "3.4.", "ray": "2.60."}

_warned: set[str] = set()


def check_versions() -> list[str]:
    """Warn once per package whose installed version is outside `TESTED`; returns those warnings."""
    problems = []
    for name, prefix in TESTED.items():
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if not version.startswith(prefix):
            problems.append(f"{name} {version} is installed; raydspy is tested with {prefix}x (raydspy/_compat.py)")
    for problem in problems:
        if problem not in _warned:
            _warned.add(problem)
            logger.warning(problem)
    return problems


def structured_outputs_response_format(signature: Any) -> Any:
    """DSPy's pydantic model of ``signature``'s outputs, the one JSONAdapter sends as ``response_format``."""
    from dspy.adapters.json_adapter import _get_structured_outputs_response_format

    return _get_structured_outputs_response_format(signature)


def set_streaming_buffer_blocks(context: Any, blocks: int) -> None:
    """Let a Ray Data task run ``blocks`` output blocks ahead of the executor (default 2)."""
    if not hasattr(context, "_max_num_blocks_in_streaming_gen_buffer"):
        check_versions()
        logger.warning("this Ray Data has no streaming-generator buffer setting: the pipeline refills more slowly")
        return
    context._max_num_blocks_in_streaming_gen_buffer = blocks
