"""Evaluation of teacher and students on banking77's test split: accuracy and format compliance.

Every candidate runs the **same DSPy program** (`raydspy.programs.banking77.program`, no demos)
through `raydspy.Collect` on the same test queries, greedy (temperature 0), one rollout each; the
candidates differ only in the model behind the endpoint and in decoding:

- ``structured``: `StructuredOutputAdapter`, the server enforces the output's JSON schema (the
  teacher of the CPU recipe). Greedy, the 135M model loops inside ``reasoning`` on about a third
  of the queries until ``max_tokens`` cuts the JSON; the teacher candidate therefore bounds free
  text (``max_text_chars``, 400 by default in the CLI: above 90 % of the reasoning its sampled
  rollouts wrote) so every completion parses, as the recipe's teacher should;
- ``plain``: `PlainJSONAdapter`, the same prompts with nothing enforced (a student must write the
  format itself: that is its format compliance).

With ``optimizer`` set, each candidate is evaluated a second time after prompt optimisation, as
in the seed: DSPy's ``BootstrapFewShot`` (``"bootstrap"``) or ``BootstrapFewShotWithRandomSearch``
(``"random-search"``) compiles the program against that candidate's own model on banking77
*training* queries, keeping as demos the candidate's own answers that got the gold label (metric:
exact label match), and the compiled program runs on the same test queries.

Per candidate: accuracy = share of queries whose predicted label equals the gold one (a rollout
that failed to parse counts as wrong), format compliance = share whose completion parsed. The
rollouts are kept under ``output/rollouts/<candidate>/`` so each number can be traced to its rows.
`write_report` writes ``evaluation.md`` (a Markdown table), ``evaluation.png`` (a bar chart) and
``evaluation.json``.

Example (an endpoint serving both models must be up, e.g. ``serve_configs/student-cpu.yaml``):
    >>> results = evaluate([Candidate("teacher", "smollm2-135m-instruct", "structured"),
    ...                     Candidate("sft student", "student", "plain")], examples=200)  # doctest: +SKIP
    >>> write_report(results, "runs/banking77/eval")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from raydspy.adapters import PlainJSONAdapter
from raydspy.teacher import DEFAULT_TEACHER_URL, TeacherConfig

__all__ = ["Candidate", "EvalResult", "evaluate", "held_out_queries", "train_queries", "optimize",
           "write_report", "markdown_table"]

Decoding = Literal["structured", "plain"]
Optimizer = Literal["bootstrap", "random-search"]
OPTIMIZER_NAMES = {"bootstrap": "BootstrapFewShot", "random-search": "BootstrapFewShotWithRandomSearch"}


@dataclass(frozen=True)
class Candidate:
    """One model to evaluate: its name in the report, the model id its endpoint serves, and decoding."""

    name: str
    model: str
    decoding: Decoding = "plain"
    base_url: str = DEFAULT_TEACHER_URL
    max_text_chars: int | None = None  # structured only: bound on free-text fields (see StructuredOutputAdapter)


@dataclass(frozen=True)
class EvalResult:
    """One candidate's scores on ``examples`` test queries (shares in 0..1)."""

    name: str
    model: str
    decoding: str
    examples: int
    accuracy: float
    format_compliance: float
    errors: int
    elapsed_s: float
    demos: int = 0  # few-shot demos in the evaluated program (prompt optimisation), per predictor


def held_out_queries(examples: int, *, num_labels: int = 25, seed: int = 0, cache_dir: str | Path | None = None) -> list[dict[str, str]]:
    """``examples`` shuffled rows of banking77's **test** split among the top ``num_labels`` intents
    (``{"text": ..., "category": ...}``); the same arguments give the same rows."""
    return _queries("test", examples, num_labels, seed, cache_dir)


def train_queries(examples: int, *, num_labels: int = 25, seed: int = 1, cache_dir: str | Path | None = None) -> list[dict[str, str]]:
    """Like `held_out_queries`, from the **train** split: the pool prompt optimisation draws demos from."""
    return _queries("train", examples, num_labels, seed, cache_dir)


def _queries(split: str, examples: int, num_labels: int, seed: int, cache_dir: str | Path | None) -> list[dict[str, str]]:
    from raydspy.embedded import default_cache_dir
    from raydspy.programs import banking77

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "data"
    path = banking77.write_sample(folder / f"banking77-{split}-top{num_labels}-{examples}-{seed}.csv", split=split,
                                  num_labels=num_labels, size=examples, seed=seed)
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _exact_label(example: Any, prediction: Any, trace: Any = None) -> bool:
    """DSPy metric: the predicted label is the gold ``category`` (a failed parse never reaches it)."""
    return getattr(prediction, "label", None) == example.category


def optimize(program: Any, trainset: Sequence[dict[str, str]], optimizer: Optimizer, *, lm: Any, adapter: Any,
             max_demos: int = 4, threads: int = 8, seed: int = 0) -> Any:
    """Compile ``program`` with DSPy's few-shot optimiser against ``lm`` (through ``adapter``).

    Args:
        program: the banking77 program (fresh; it is not changed).
        trainset: ``{"text", "category"}`` rows (`train_queries`).
        optimizer: ``"bootstrap"`` (BootstrapFewShot: the first ``max_demos`` training queries the
            model itself answers right become demos) or ``"random-search"``
            (BootstrapFewShotWithRandomSearch: 4 candidate demo sets, the best on ``trainset``).
        lm, adapter: the candidate's model and decoding; demos are its own answers.
        max_demos: bootstrapped demos per predictor (no unlabelled demos: a demo without the
            model's reasoning would teach the format, not the task).

    Returns:
        The compiled program (a copy of ``program`` with demos).

    Raises:
        ValueError: an unknown ``optimizer``.
    """
    import dspy

    examples = [dspy.Example(**row).with_inputs("text") for row in trainset]
    # A completion that does not parse is a miss, not a reason to stop: a base student fails on
    # most queries, and DSPy's optimisers otherwise give up after dspy.settings.max_errors.
    budget = {"metric": _exact_label, "max_bootstrapped_demos": max_demos, "max_labeled_demos": 0,
              "max_errors": len(examples) * 8 + 1}
    if optimizer == "bootstrap":
        teleprompter = dspy.BootstrapFewShot(**budget)
    elif optimizer == "random-search":
        teleprompter = dspy.BootstrapFewShotWithRandomSearch(**budget, num_candidate_programs=4, num_threads=threads)
    else:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_NAMES)}, got {optimizer!r}")
    with dspy.context(lm=lm, adapter=adapter):
        return teleprompter.compile(program.deepcopy(), trainset=examples)


def evaluate(candidates: Sequence[Candidate], queries: Sequence[dict[str, str]], output_dir: str | Path, *,
             num_labels: int = 25, max_tokens: int = 192, threads: int = 32, optimizer: Optimizer | None = None,
             trainset: Sequence[dict[str, str]] = (), max_demos: int = 4) -> list[EvalResult]:
    """Run the banking77 program on ``queries`` once per candidate and score it; with ``optimizer``,
    once more per candidate after `optimize` on ``trainset`` (result named ``"<name> + <optimizer>"``).

    Returns:
        One `EvalResult` per candidate (and per optimised candidate), in ``candidates`` order.

    Raises:
        TeacherUnreachableError: a candidate's endpoint does not serve its model.
        ValueError: ``optimizer`` set with an empty ``trainset``.
    """
    from raydspy.programs import banking77

    if optimizer is not None and not trainset:
        raise ValueError("prompt optimisation needs training queries: pass trainset (train_queries(...))")
    results = []
    for candidate in candidates:
        teacher = TeacherConfig(base_url=candidate.base_url, model=candidate.model, temperature=0.0,
                                max_tokens=max_tokens, structured_outputs=candidate.decoding == "structured",
                                max_text_chars=candidate.max_text_chars if candidate.decoding == "structured" else None,
                                cache=False)
        teacher.check_reachable()
        adapter = teacher.adapter() if candidate.decoding == "structured" else PlainJSONAdapter()
        program = banking77.program(num_labels)
        results.append(_score(candidate.name, candidate, program, teacher, adapter, queries, output_dir, threads))
        if optimizer is not None:
            compiled = optimize(program, trainset, optimizer, lm=teacher.lm(), adapter=adapter,
                                max_demos=max_demos, threads=min(threads, 8))
            results.append(_score(f"{candidate.name} + {OPTIMIZER_NAMES[optimizer]}", candidate, compiled, teacher,
                                  adapter, queries, output_dir, threads))
    return results


def _score(name: str, candidate: Candidate, program: Any, teacher: TeacherConfig, adapter: Any,
           queries: Sequence[dict[str, str]], output_dir: str | Path, threads: int) -> EvalResult:
    """One rollout of ``program`` per query through `raydspy.Collect`; the rows go to ``rollouts/<name>/``."""
    from raydspy.collect import Collect
    from raydspy.programs import banking77

    folder = Path(output_dir) / "rollouts" / name.replace(" + ", "+").replace(" ", "-")
    collect = Collect(program, str(folder), reward_fn=banking77.rewards(), num_threads=threads, lm=teacher.lm(),
                      adapter=adapter, sampling=teacher.sampling)
    started = time.perf_counter()
    collect.collect(list(queries), n=1)
    elapsed = time.perf_counter() - started
    records = collect.last_records
    correct = sum(r.rewards.get("exact_match", 0.0) for r in records)
    parsed = sum(bool(r.format_ok) for r in records)
    demos = max((len(p.demos) for p in program.predictors()), default=0)
    return EvalResult(name, candidate.model, candidate.decoding, len(records), correct / len(records),
                      parsed / len(records), sum(r.error is not None for r in records), round(elapsed, 1), demos)


def markdown_table(results: Sequence[EvalResult]) -> str:
    """The results as a Markdown table (percentages with one decimal)."""
    lines = ["| model | decoding | demos | accuracy | format compliance | test queries |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r.name} (`{r.model}`) | {r.decoding} | {r.demos} | {100 * r.accuracy:.1f} % "
                     f"| {100 * r.format_compliance:.1f} % | {r.examples} |")
    return "\n".join(lines) + "\n"


def write_report(results: Sequence[EvalResult], output_dir: str | Path) -> dict[str, Path]:
    """Write ``evaluation.md``, ``evaluation.png`` and ``evaluation.json`` into ``output_dir``.

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

    names = [f"{r.name.replace(' + ', chr(10) + '+ ')}\n({r.decoding})" for r in results]
    x = range(len(results))
    width = 0.38
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(results), 3.6))
    acc = ax.bar([i - width / 2 for i in x], [100 * r.accuracy for r in results], width, label="accuracy")
    fmt = ax.bar([i + width / 2 for i in x], [100 * r.format_compliance for r in results], width, label="format compliance")
    ax.bar_label(acc, fmt="%.1f", fontsize=8)
    ax.bar_label(fmt, fmt="%.1f", fontsize=8)
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_ylim(0, 125)  # room above the bars for the legend
    ax.set_ylabel("% of test queries")
    ax.set_title(f"banking77 test split, {results[0].examples if results else 0} queries", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.tight_layout()
    fig.savefig(paths["chart"], dpi=120)
    plt.close(fig)
    return paths
