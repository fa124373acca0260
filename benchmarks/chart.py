"""The PNG chart of BENCHMARKS.md: generated tokens/s of each contender against the teacher's limit
(from teacher_bench.py's JSON), with the limit drawn as a line.

    .venv/bin/python benchmarks/chart.py [benchmarks/results/teacher-576.json] [--out benchmarks/results/teacher.png]
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")  # no display here
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default="benchmarks/results/teacher-576.json")
    parser.add_argument("--out", default="benchmarks/results/teacher.png")
    args = parser.parse_args()

    data = json.load(open(args.results))
    rows = data["results"]
    limit = next(r for r in rows if r["name"] == data["limit"])["tokens_per_s"]
    names = [r["name"] for r in rows]
    values = [r["tokens_per_s"] for r in rows]
    colors = [
        "#999999" if n.startswith("limit") else "#1f77b4" if n.startswith(("pipeline", "actors")) else "#ff7f0e"
        for n in names
    ]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(names, values, color=colors)
    ax.axhline(
        limit, color="black", linestyle="--", linewidth=1, label=f"teacher limit ({data['limit']}): {limit:.0f} tok/s"
    )
    for i, r in enumerate(rows):
        ax.text(i, values[i], f"{r['ratio_to_limit']:.2f}", ha="center", va="bottom", fontsize=8)
    # Pipelines: their rate while driving the teacher (no Ray Data start-up), as an outlined bar.
    active = [(i, r["active_tokens_per_s"]) for i, r in enumerate(rows) if r.get("active_tokens_per_s")]
    if active:
        ax.bar(
            [i for i, _ in active],
            [v for _, v in active],
            fill=False,
            edgecolor="#1f77b4",
            linestyle=":",
            label="raydspy without start-up (first request to last rollout)",
        )
    ax.set_ylabel("generated tokens / s")
    ax.set_title(
        f"banking77 on the embedded teacher (vLLM CPU, Ray Serve), {data['requests']} requests each, "
        f"{data['date']}\nlabels: ratio to the limit; grey: direct async client, blue: raydspy, orange: peers",
        fontsize=9,
    )
    ax.set_ylim(0, max(values + [limit]) * 1.3)  # head room: the legend sits above the bars
    ax.legend(fontsize=8, loc="upper right")
    plt.xticks(rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
