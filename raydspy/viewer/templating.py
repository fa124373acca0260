"""The viewer's Jinja2 templates (``templates/``) and the filters they format values with.
Autoescaping is on: rollout text (prompts, completions, inputs) is shown, never interpreted."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates

__all__ = ["TEMPLATES"]

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _when(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _yesno(value: bool | None) -> str:
    return {True: "✓", False: "✗"}.get(value, "–")


def _pretty(value: Any) -> str:
    """Text as it is; anything else as indented JSON."""
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _pretty_json(text: str) -> str:
    """A JSON text indented (as it is when it does not parse)."""
    try:
        return _pretty(json.loads(text))
    except ValueError:
        return text


def _brief(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


TEMPLATES.env.filters.update(
    num=_num, pct=_pct, when=_when, yesno=_yesno, pretty=_pretty, pretty_json=_pretty_json, brief=_brief
)
