"""``MODULE:ATTR`` specs: how the CLI, job scripts and the service name programs and rewards.

A spec names an importable attribute. For programs it is a ``dspy.Module`` or a factory that
returns one; for rewards a reward function, a ``{name: function}`` dict, or a factory returning
either. Specs (strings), not objects, travel to Ray actors, which import them on arrival: that
works for any program whose module is importable on the cluster (``runtime_env`` ships it).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import dspy

from raydspy.errors import ConfigError

__all__ = ["load_object", "load_program", "load_rewards"]


def load_object(spec: str) -> Any:
    """Import ``MODULE:ATTR`` (ATTR may be dotted).

    Raises:
        ConfigError: the spec is malformed, the module does not import, or lacks the attribute.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected MODULE:ATTR (e.g. raydspy.programs.banking77:program), got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import {module_name!r} from spec {spec!r}: {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ConfigError(f"{module_name!r} has no attribute {attr!r} (spec {spec!r})") from e
    return obj


def _is_factory(obj: Any) -> bool:
    if isinstance(obj, dspy.Module) or not callable(obj):
        return False
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def load_program(spec: str | dspy.Module) -> dspy.Module:
    """The program a spec names (calling it when it is a factory); a Module passes through.

    Raises:
        ConfigError: the spec does not give a ``dspy.Module``.
    """
    if isinstance(spec, dspy.Module):
        return spec
    obj = load_object(spec)
    if _is_factory(obj) or (inspect.isclass(obj) and issubclass(obj, dspy.Module)):
        obj = obj()
    if not isinstance(obj, dspy.Module):
        raise ConfigError(f"program spec {spec!r} gave a {type(obj).__name__}, not a dspy.Module")
    return obj


def load_rewards(spec: str | Callable | Mapping[str, Callable] | None) -> Callable | Mapping[str, Callable] | None:
    """The reward function(s) a spec names; zero-argument factories are called.

    Raises:
        ConfigError: the spec gives neither a callable nor a dict of callables.
    """
    if spec is None or not isinstance(spec, str):
        return spec
    obj = load_object(spec)
    if _is_factory(obj):
        obj = obj()
    if callable(obj) or (isinstance(obj, Mapping) and all(callable(f) for f in obj.values())):
        return obj
    raise ConfigError(f"reward spec {spec!r} gave a {type(obj).__name__}: expected a function or {{name: function}}")
