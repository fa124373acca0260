"""Pydantic models read from YAML files, with errors that name the file (task files, training configs)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from raydspy.errors import ConfigError

__all__ = ["read_yaml_model"]

Model = TypeVar("Model", bound=BaseModel)


def read_yaml_model(cls: type[Model], path: str | Path, what: str, overrides: Mapping[str, Any] | None = None) -> Model:
    """``cls`` validated from the YAML mapping in ``path``, ``overrides`` that are not None replacing its keys.

    Raises:
        ConfigError: the file is missing or not YAML (``"cannot read <what> ..."``), or does not
            validate (``"invalid <what> ..."``, with pydantic's list of reasons).
    """
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {e}") from e
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid {what} {str(path)!r}: {e}") from e
