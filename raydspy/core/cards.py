"""Dataset cards: the ``README.md`` beside a run's rollouts or an export's rows.

The format is the Hugging Face dataset card's (https://huggingface.co/docs/hub/datasets-cards):
YAML metadata between ``---`` lines, then Markdown. The metadata's ``configs`` name the data
files, so ``datasets.load_dataset(FOLDER)`` reads the folder as the card describes it (and not
the run's manifests under ``_runs/``); the Markdown says what made the data and how to read it.

This module renders and writes cards; what goes in them is the run's (`raydspy.pipeline.cards`)
and the export's (`raydspy.distill.exports`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import yaml

from raydspy.core.storage import Location, write_atomic

__all__ = [
    "CARD_NAME",
    "DatasetCard",
    "size_category",
    "schema_table",
    "datasets_features",
    "input_license",
    "write_card",
]

#: The card's file name beside the data (what the Hub and `datasets` read).
CARD_NAME = "README.md"

#: The Hub's ``size_categories`` bounds: (upper bound, label).
_SIZES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
]


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` label for ``rows`` rows (e.g. ``"1K<n<10K"``)."""
    return next((label for bound, label in _SIZES if rows < bound), "n>1B")


def datasets_features(schema: pa.Schema) -> tuple[dict[str, Any] | None, list[str]]:
    """The card's ``dataset_info`` for the columns of ``schema`` that Hugging Face ``datasets``
    reads, and the names of those it cannot: Arrow maps (huggingface/datasets#5612: ``datasets``
    has no map feature, and fails on the whole file when it infers one from the schema).

    Returns:
        ``({"features": [...]}, dropped)``, or ``(None, dropped)`` when ``datasets`` is not
        installed (an extra: ``raydspy[distill]``), in which case the card declares no features.
    """
    dropped = [f.name for f in schema if pa.types.is_map(f.type)]
    try:
        import datasets
    except ImportError:
        return None, dropped
    kept = pa.schema([f for f in schema if f.name not in dropped])
    # `datasets` writes its own card metadata this way (DatasetInfo -> the `dataset_info` YAML).
    info = datasets.DatasetInfo(features=datasets.Features.from_arrow_schema(kept))
    return info._to_yaml_dict(), dropped


@dataclass
class DatasetCard:
    """A card: its YAML ``metadata``, a ``title`` and Markdown ``sections`` of ``(heading, body)``.

    ``data_files`` is the glob, relative to the card's folder, of the files the card describes:
    it becomes the metadata's default config (one ``train`` split). With ``schema``, the files'
    Arrow schema, the metadata also declares their features (`datasets_features`), so that
    ``datasets`` does not infer them from the files, and leaves out the columns it cannot read.
    """

    title: str
    data_files: str
    metadata: dict[str, Any] = field(default_factory=dict)
    intro: str = ""
    sections: list[tuple[str, str]] = field(default_factory=list)
    schema: pa.Schema | None = None

    def render(self) -> str:
        """The card as text: front matter, title, intro, sections."""
        config: dict[str, Any] = {"config_name": "default", "data_files": [{"split": "train", "path": self.data_files}]}
        metadata = dict(self.metadata)
        if self.schema is not None:
            info, dropped = datasets_features(self.schema)
            if info is not None:
                metadata["dataset_info"] = info
                if dropped:
                    config["columns"] = [n for n in self.schema.names if n not in dropped]
        metadata["configs"] = [config]
        out = io.StringIO()
        out.write("---\n")
        out.write(yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True))
        out.write("---\n\n")
        out.write(f"# {self.title}\n\n")
        if self.intro:
            out.write(self.intro.strip() + "\n\n")
        for heading, body in self.sections:
            out.write(f"## {heading}\n\n{body.strip()}\n\n")
        return out.getvalue().rstrip() + "\n"


def schema_table(schema: pa.Schema, meanings: Mapping[str, str] | None = None) -> str:
    """A Markdown table of ``schema``'s columns: name, Arrow type, and meaning where given."""
    meanings = meanings or {}
    rows = ["| column | type | meaning |", "| --- | --- | --- |"]
    for f in schema:
        kind = str(f.type) if len(str(f.type)) <= 60 else f"{f.type.__class__.__name__.removesuffix('Type').lower()}<…>"
        rows.append(f"| `{f.name}` | `{kind}` | {meanings.get(f.name, '')} |")
    return "\n".join(rows)


def _front_matter(text: str) -> dict[str, Any]:
    """The YAML between a card's leading ``---`` lines, or ``{}``."""
    if not text.startswith("---"):
        return {}
    _, _, rest = text.partition("\n")
    body, sep, _ = rest.partition("\n---")
    if not sep:
        return {}
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def input_license(source: Location) -> str | None:
    """The license the input's own dataset card declares (``license:`` in the YAML of a
    ``README.md`` in the input's folder, or beside the input file), or None when there is none.
    Nothing is guessed: a card without that field, or no card, gives None."""
    fs = source.filesystem
    try:
        info = fs.get_file_info(source.path)
        folder = source.path if info.type == pafs.FileType.Directory else source.path.rsplit("/", 1)[0]
        with fs.open_input_stream(f"{folder}/{CARD_NAME}") as f:
            text = f.read(1 << 16).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return None
    license_ = _front_matter(text).get("license")
    if isinstance(license_, Sequence) and not isinstance(license_, str):
        license_ = ", ".join(map(str, license_))
    return str(license_) if license_ else None


def write_card(location: Location, card: DatasetCard) -> str:
    """Write ``card`` as ``README.md`` under ``location`` (atomically: readers see the old card or
    the new one).

    Returns:
        The path written.

    Raises:
        StorageError: the write failed.
    """
    return write_atomic(location, CARD_NAME, card.render().encode("utf-8"))
