"""The evaluation's report: a Markdown table, the results as JSON, and a bar chart (PNG)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from raydspy.distill.evaluate import EvalResult

__all__ = ["markdown_table", "write_report"]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def markdown_table(results: Sequence[EvalResult]) -> str:
    """The results as a Markdown table: rewards and format compliance in percent, then errors,
    tokens and seconds; one column per named reward, one per predictor's format compliance."""
    rewards = list(dict.fromkeys(n for r in results for n in r.rewards))
    predictors = list(dict.fromkeys(p for r in results for p in r.format_by_predictor))
    header = [
        "model",
        "decoding",
        "demos",
        "reward",
        *rewards,
        "format",
        *(f"format `{p}`" for p in predictors),
        "errors",
        "tokens (prompt / completion)",
        "time",
        "examples",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in results:
        cells = [
            f"{r.name} (`{r.model}`)",
            r.decoding,
            str(r.demos),
            _pct(r.reward),
            *(_pct(r.rewards.get(n)) for n in rewards),
            _pct(r.format_compliance),
            *(_pct(r.format_by_predictor.get(p)) for p in predictors),
            str(r.errors),
            f"{r.prompt_tokens:,} / {r.completion_tokens:,}",
            f"{r.elapsed_s:.0f} s",
            str(r.examples),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(
    results: Sequence[EvalResult], output_dir: str | Path, *, title: str = "held-out examples"
) -> dict[str, Path]:
    """Write ``evaluation.md`` (`markdown_table`), ``evaluation.png`` (a bar chart: each reward's
    mean and format compliance per candidate) and ``evaluation.json`` into ``output_dir``.

    Returns:
        ``{"markdown": path, "chart": path, "json": path}``.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "evaluation.md", "chart": out / "evaluation.png", "json": out / "evaluation.json"}
    paths["markdown"].write_text(markdown_table(results))
    paths["json"].write_text(json.dumps([asdict(r) for r in results], indent=2))

    series = [*dict.fromkeys(n for r in results for n in r.rewards), "format"]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(2.2 + (0.9 + 0.35 * len(series)) * len(results), 3.8))
    for k, name in enumerate(series):
        values = [100 * (r.format_compliance if name == "format" else r.rewards.get(name, 0.0)) for r in results]
        bars = ax.bar([i - 0.4 + width * (k + 0.5) for i in range(len(results))], values, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    names = [f"{r.name.replace(' + ', chr(10) + '+ ')}\n({r.decoding})" for r in results]
    ax.set_xticks(list(range(len(results))), names, fontsize=8)
    ax.set_ylim(0, 130)  # room above the bars for the legend
    ax.set_ylabel("% of examples")
    ax.set_title(f"{title}, {results[0].examples if results else 0} examples", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", ncol=min(len(series), 5))
    fig.tight_layout()
    fig.savefig(paths["chart"], dpi=120)
    plt.close(fig)
    return paths
