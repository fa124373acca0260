"""``MODULE:ATTR`` specs: how the CLI, job scripts and the service name programs and rewards.

A spec names an importable attribute. For programs it is a ``dspy.Module`` instance, a
``dspy.Module`` class, or a factory that returns one; for rewards a reward function, a
``{name: function}`` dict, or a factory returning either. Specs (strings), not objects, travel to
Ray actors, which import them on arrival: that works for any program whose module is importable on
the cluster (``runtime_env`` ships it).

The grammar, everywhere: MODULE is a dotted module name and ATTR a public name (no leading
``_``), or a dotted path of them through classes (``tasks:Banking.program``, a class attribute);
each part an ASCII identifier. ATTR never reaches into another module (``banking77:random._os``
names the ``random`` module the program imported, and is refused).

With ``allowed_modules`` (the HTTP service's allow-list, applied where it checks a submission and
again in every worker): MODULE must be one of them or inside one, and so must the ``__module__``
of every class the path goes through and of the function, class or callable object it names, so a
name the module merely imported (``from os import system``) is refused. Nothing is called before
that check: a factory or a ``dspy.Module`` class is called only once it passes. Whatever an allowed
module holds under a public name is then the operator's: allow modules of programs and rewards only.
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dspy

from raydspy.errors import ConfigError, NotAllowedError

__all__ = ["SPEC_PATTERN", "load_object", "load_program", "load_rewards", "in_modules"]

_NAME = r"[A-Za-z][A-Za-z0-9_]*"
#: A spec's shape (the HTTP request's pattern too): ``MODULE:ATTR``, ASCII identifiers, ATTR public.
SPEC_PATTERN = rf"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:{_NAME}(\.{_NAME})*$"
_SPEC = re.compile(SPEC_PATTERN, re.ASCII)


def in_modules(module: str | None, allowed: Sequence[str]) -> bool:
    """Whether the module named ``module`` is one of ``allowed`` or inside one (``a.b`` allows
    ``a.b`` and ``a.b.c``, not ``a.bc``)."""
    return module is not None and any(module == m or module.startswith(m + ".") for m in allowed)


def _defined_in(obj: Any) -> str | None:
    """The module that defines ``obj``: its own ``__module__`` for functions, methods and classes,
    its class's for any other object (whose ``__call__`` is what a call runs)."""
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)):
        return getattr(obj, "__module__", None)
    return getattr(type(obj), "__module__", None)


def _check_defined(obj: Any, spec: str, allowed: Sequence[str] | None, what: str) -> None:
    if allowed is None:
        return
    module = _defined_in(obj)
    if not in_modules(module, allowed):
        raise NotAllowedError(f"{what} {spec!r} is defined in {module!r}, outside the allowed modules {list(allowed)}")


def load_object(spec: str, allowed_modules: Sequence[str] | None = None) -> Any:
    """Import ``MODULE:ATTR`` and follow ATTR (see the module docstring for the rules).

    Args:
        spec: the spec.
        allowed_modules: when given, MODULE and every class on the path must be under these.

    Raises:
        NotAllowedError: ATTR reaches into another module, or MODULE or a class on the path lies
            outside ``allowed_modules``.
        ConfigError: the spec is malformed, the module does not import, or lacks the attribute.
    """
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise ConfigError(
            f"expected MODULE:ATTR with ATTR a public name or a dotted path of them "
            f"(e.g. raydspy.programs.banking77:program), got {spec!r}"
        )
    module_name, _, attr = spec.partition(":")
    if allowed_modules is not None and not in_modules(module_name, allowed_modules):
        raise NotAllowedError(
            f"spec {spec!r}: module {module_name!r} is not allowed; allowed modules: {list(allowed_modules)}"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import {module_name!r} from spec {spec!r}: {e}") from e
    parts = attr.split(".")
    for depth, part in enumerate(parts):
        if depth > 0 and not inspect.isclass(obj):
            raise ConfigError(
                f"spec {spec!r}: {'.'.join(parts[:depth])!r} is not a class; a dotted ATTR goes through classes"
            )
        if depth > 0:
            _check_defined(obj, spec, allowed_modules, "the class on the path of")
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ConfigError(f"{module_name!r} has no attribute {attr!r} (spec {spec!r})") from e
        if inspect.ismodule(obj):
            raise NotAllowedError(
                f"spec {spec!r}: {'.'.join(parts[: depth + 1])!r} is a module that {module_name!r} imported; "
                "a spec names an attribute of its own module: give that module before the colon (MODULE:ATTR)"
            )
    return obj


def _call(factory: Callable, spec: str, what: str) -> Any:
    """``factory()``, its failure a `ConfigError` that names the spec (a 422 in the service)."""
    try:
        inspect.signature(factory).bind()
    except TypeError as e:
        raise ConfigError(f"{what} spec {spec!r}: {factory.__name__} needs arguments ({e})") from e
    except ValueError:
        pass  # no signature to read (a builtin): let the call say
    try:
        return factory()
    except Exception as e:  # noqa: BLE001 - whatever the user's factory raises, the spec is the cause
        raise ConfigError(f"{what} spec {spec!r}: {factory.__name__}() raised {type(e).__name__}: {e}") from e


def _is_factory(obj: Any) -> bool:
    if isinstance(obj, dspy.Module) or not callable(obj):
        return False
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def load_program(spec: str | dspy.Module, allowed_modules: Sequence[str] | None = None) -> dspy.Module:
    """The program a spec names: a ``dspy.Module`` instance as is, a ``dspy.Module`` class
    instantiated, a zero-argument factory called; a Module passes through.

    Args:
        spec: ``MODULE:ATTR`` or a ``dspy.Module``.
        allowed_modules: when given, only specs within these modules (module docstring); a class
            or factory is called only once it passes.

    Raises:
        NotAllowedError: the spec names something outside ``allowed_modules``.
        ConfigError: the spec does not load (`load_object`) or does not give a ``dspy.Module`` (a
            class whose constructor needs arguments, a factory that raises or returns something else).
    """
    if isinstance(spec, dspy.Module):
        return spec
    obj = load_object(spec, allowed_modules)
    if not isinstance(obj, dspy.Module):
        if callable(obj):
            _check_defined(obj, spec, allowed_modules, "program")
        if not (
            (inspect.isclass(obj) and issubclass(obj, dspy.Module)) or (_is_factory(obj) and not inspect.isclass(obj))
        ):
            raise ConfigError(f"program spec {spec!r} gave a {type(obj).__name__}, not a dspy.Module")
        obj = _call(obj, spec, "program")
    if not isinstance(obj, dspy.Module):
        raise ConfigError(f"program spec {spec!r} gave a {type(obj).__name__}, not a dspy.Module")
    return obj


def load_rewards(
    spec: str | Callable | Mapping[str, Callable] | None, allowed_modules: Sequence[str] | None = None
) -> Callable | Mapping[str, Callable] | None:
    """The reward function(s) a spec names; zero-argument factories are called. Functions and
    dicts pass through.

    Args:
        spec: ``MODULE:ATTR``, a function, ``{name: function}``, or None.
        allowed_modules: when given, only specs within these modules (module docstring).

    Raises:
        NotAllowedError: the spec names a function or callable object defined outside ``allowed_modules``.
        ConfigError: the spec does not load, or gives neither a callable nor a dict of callables.
    """
    if spec is None or not isinstance(spec, str):
        return spec
    obj = load_object(spec, allowed_modules)
    if callable(obj):
        _check_defined(obj, spec, allowed_modules, "reward")
        if _is_factory(obj):
            obj = _call(obj, spec, "reward")
    if callable(obj) or (isinstance(obj, Mapping) and all(callable(f) for f in obj.values())):
        return obj
    raise ConfigError(f"reward spec {spec!r} gave a {type(obj).__name__}: expected a function or {{name: function}}")
