"""Data shipped with raydspy. ``banking77/``: PolyAI's BANKING77 (CC-BY-4.0; see its README.md
and LICENSE for the attribution this copy keeps)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["banking77_path"]


def banking77_path(name: str) -> Path:
    """Path of a shipped BANKING77 file: ``train.csv``, ``test.csv`` or ``categories.json``."""
    return Path(str(files(__package__).joinpath("banking77", name)))
