"""Command-line flags derived from pydantic models, as TRL derives its CLI from ``SFTConfig``: the
model declares each field's type, default, limits and description once; the flag shows them.

A flag's default is None, meaning "not given", so the model's own default (or the task's) applies:
`given` returns only the flags the user set.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from raydspy.errors import ConfigError

__all__ = ["add_model_flags", "given", "build"]


def _scalar(annotation: Any) -> type:
    """``int``, ``float``, ``str`` or ``bool`` from an annotation such as ``int | None``."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if annotation not in (int, float, str, bool):
        raise TypeError(f"no flag for a field of type {annotation!r}")
    return annotation


def _limits(metadata: list[Any]) -> str:
    bounds = []
    for item in metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                bounds.append(f"{sign} {getattr(item, attr)}")
    return f"; {', '.join(bounds)}" if bounds else ""


def add_model_flags(
    group: argparse._ActionsContainer,
    model: type[BaseModel],
    flags: Mapping[str, str | None],
    *,
    defaults: Mapping[str, Any] | None = None,
    metavars: Mapping[str, str] | None = None,
    default_text: str | None = None,
    fill_defaults: bool = False,
) -> None:
    """Add one flag per field of ``model`` named in ``flags`` (``{field: flag}``, flag None for
    ``--field-name``), its help the field's description, limits and default.

    Args:
        defaults: defaults to show instead of the model's (e.g. from the environment).
        metavars: ``{field: METAVAR}``.
        default_text: shown as every flag's default instead (e.g. "the config file's").
        fill_defaults: give argparse the model's defaults (for a model with no other source of
            values), instead of None for "not given".

    Raises:
        TypeError: a field whose type is not int, float, str or bool (or one of them or None).
    """
    for name, flag in flags.items():
        info = model.model_fields[name]
        kind = _scalar(info.annotation)
        default = (defaults or {}).get(name, info.get_default(call_default_factory=True))
        shown = "unset" if default is None else ("on" if default is True else "off" if default is False else default)
        shown = default_text or shown
        help_ = f"{info.description or ''} (default: {shown}{_limits(info.metadata)})".replace("%", "%%")
        flag = flag or "--" + name.replace("_", "-")
        value = default if fill_defaults else None
        if kind is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=value, help=help_)
        else:
            group.add_argument(
                flag,
                dest=name,
                type=kind,
                default=value,
                help=help_,
                metavar=(metavars or {}).get(name, flag.lstrip("-").replace("-", "_").upper()),
            )


def given(args: argparse.Namespace, flags: Mapping[str, str | None]) -> dict[str, Any]:
    """``{field: value}`` of the flags in ``flags`` that the user set."""
    return {name: getattr(args, name) for name in flags if getattr(args, name, None) is not None}


def build(model: type[BaseModel], flags: Mapping[str, str | None], /, **values: Any) -> Any:
    """``model(**values)``, a validation error naming the flag (``--threads: ...``) not the field.

    Raises:
        ConfigError: a value outside the field's type or limits.
    """
    try:
        return model(**values)
    except ValidationError as e:
        where = {name: flag or "--" + name.replace("_", "-") for name, flag in flags.items()}
        problems = "; ".join(f"{where.get(str(err['loc'][0]), err['loc'][0])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid {model.__name__}: {problems}") from None
