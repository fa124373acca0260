"""Evaluation of any program: teacher and students, each running the task's program on held-out examples.

Every candidate runs the **same DSPy program** (no demos, unless prompt optimisation adds them)
through `raydspy.Collect`, the rollout path of collection, on the same examples: greedy
(temperature 0), one rollout each, scored by the task's own rewards. The candidates differ only
in the model behind their OpenAI-compatible endpoint and in decoding (`raydspy.task.Decoding`):
``structured`` (the server enforces each signature's JSON schema: the teacher of the CPU
recipe; ``max_text_chars`` bounds its free text so a greedy loop still closes the JSON),
``plain`` (the same JSON prompts, nothing enforced: what a student must write itself) or
``chat`` (DSPy's ChatAdapter).

Per candidate (`EvalResult`): each named reward's mean and the combined reward's (a rollout that
failed to parse scores 0 on every reward), format compliance of the rollouts (every LM call
parsed) and of each predictor's calls, errors by type, tokens and time. The rollouts stay under
``output/rollouts/<candidate>/``, so every number can be traced to its rows; `write_report`
writes ``evaluation.md``, ``evaluation.png`` and ``evaluation.json``.

With ``optimizer`` set, each candidate is evaluated a second time after prompt optimisation:
DSPy's ``BootstrapFewShot`` (``"bootstrap"``) or ``BootstrapFewShotWithRandomSearch``
(``"random-search"``) compiles the program against the candidate's own model on training
examples, with the task's rewards as the metric (`raydspy.rewards.RewardSet.as_metric`), keeping
as demos the candidate's own rollouts whose reward reaches ``metric_threshold``.

Example (an endpoint serving the models must be up, e.g. ``serve_configs/student-cpu.yaml``):
    >>> from raydspy.inputs import load_examples
    >>> results = evaluate("raydspy.programs.orders:program",
    ...                    [Candidate.parse("teacher=smollm2-135m-instruct:structured"),
    ...                     Candidate.parse("sft=student:plain")],
    ...                    load_examples("raydspy/datasets/orders/test.jsonl", limit=200), "runs/orders/eval",
    ...                    rewards="raydspy.programs.orders:rewards")  # doctest: +SKIP
    >>> write_report(results, "runs/orders/eval", title="orders")  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, get_args

from raydspy.errors import ConfigError
from raydspy.task import Decoding
from raydspy.teacher import DEFAULT_TEACHER_URL, TeacherConfig

__all__ = ["Candidate", "EvalResult", "evaluate", "optimize", "score_records", "adapter_for", "write_report",
           "markdown_table", "OPTIMIZER_NAMES"]

Optimizer = Literal["bootstrap", "random-search"]
OPTIMIZER_NAMES = {"bootstrap": "BootstrapFewShot", "random-search": "BootstrapFewShotWithRandomSearch"}
DECODINGS: tuple[str, ...] = get_args(Decoding)


def adapter_for(decoding: Decoding, max_text_chars: int | None = None) -> Any:
    """The adapter of a decoding: `StructuredOutputAdapter` (``structured``, free text bounded to
    ``max_text_chars``), `PlainJSONAdapter` (``plain``) or ``dspy.ChatAdapter`` (``chat``).

    Raises:
        ConfigError: an unknown decoding.
    """
    import dspy

    from raydspy.adapters import PlainJSONAdapter, StructuredOutputAdapter

    if decoding == "structured":
        return StructuredOutputAdapter(max_text_chars=max_text_chars)
    if decoding == "plain":
        return PlainJSONAdapter()
    if decoding == "chat":
        return dspy.ChatAdapter(use_json_adapter_fallback=False)
    raise ConfigError(f"decoding must be one of {list(DECODINGS)}, got {decoding!r}")


@dataclass(frozen=True)
class Candidate:
    """One model to evaluate: its name in the report, the model id its endpoint serves, decoding.

    Attributes:
        max_text_chars: ``structured`` only: bound on free-text output strings, in characters.
    """

    name: str
    model: str
    decoding: Decoding = "plain"
    base_url: str = DEFAULT_TEACHER_URL
    max_text_chars: int | None = None
    api_key: str = "not-needed"

    @classmethod
    def parse(cls, spec: str, *, base_url: str = DEFAULT_TEACHER_URL, max_text_chars: int | None = None,
              api_key: str = "not-needed") -> "Candidate":
        """A candidate from ``NAME=MODEL[@URL][:plain|structured|chat]`` (the ``--candidate`` flag).

        ``URL`` defaults to ``base_url``, decoding to ``plain``; ``max_text_chars`` applies to a
        structured candidate.

        Raises:
            ConfigError: the spec is not of that form.
        """
        name, sep, rest = spec.partition("=")
        decoding: str = "plain"
        for option in DECODINGS:
            if rest.endswith(f":{option}"):
                rest, decoding = rest[: -len(option) - 1], option
                break
        model, _, url = rest.partition("@")
        if not sep or not name.strip() or not model.strip():
            raise ConfigError(f"--candidate must be NAME=MODEL[@URL][:{'|'.join(DECODINGS)}], got {spec!r}")
        return cls(name.strip(), model.strip(), decoding, url.strip() or base_url,  # type: ignore[arg-type]
                   max_text_chars if decoding == "structured" else None, api_key)

    def teacher(self, max_tokens: int) -> TeacherConfig:
        """The endpoint as a greedy, uncached `TeacherConfig`."""
        return TeacherConfig(base_url=self.base_url, model=self.model, api_key=self.api_key, temperature=0.0,
                             max_tokens=max_tokens, cache=False)

    def adapter(self) -> Any:
        """The adapter of this candidate's decoding (`adapter_for`)."""
        return adapter_for(self.decoding, self.max_text_chars)


@dataclass(frozen=True)
class EvalResult:
    """One candidate's scores on ``examples`` held-out examples (shares and means in 0..1).

    Attributes:
        reward: mean combined reward (None without rewards).
        rewards: each named reward's mean, over the rollouts it scored.
        format_compliance: share of rollouts whose every LM call parsed.
        format_by_predictor: per predictor, the share of its LM calls that parsed.
        errors: rollouts with an error; ``errors_by_type`` counts them by exception type.
        prompt_tokens, completion_tokens: totals reported by the endpoint.
        demos: few-shot demos per predictor in the evaluated program (prompt optimisation).
    """

    name: str
    model: str
    decoding: str
    examples: int
    reward: float | None
    rewards: dict[str, float]
    format_compliance: float
    format_by_predictor: dict[str, float]
    errors: int
    errors_by_type: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    elapsed_s: float
    demos: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def score_records(name: str, candidate: Candidate, records: Sequence[Any], elapsed_s: float, demos: int = 0) -> EvalResult:
    """The `EvalResult` of one candidate's rollout records (`raydspy.rollouts.RolloutRecord`)."""
    count = len(records)

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    names = list(dict.fromkeys(n for r in records for n in r.rewards))
    calls: dict[str, list[bool]] = collections.defaultdict(list)
    for record in records:
        for call in record.trace:
            calls[call.predictor or "?"].append(bool(call.format_ok))
    errors = collections.Counter(r.error.split(":", 1)[0] for r in records if r.error)
    return EvalResult(
        name=name, model=candidate.model, decoding=candidate.decoding, examples=count,
        reward=mean([r.reward for r in records if r.reward is not None]),
        rewards={n: mean([r.rewards[n] for r in records if n in r.rewards]) or 0.0 for n in names},
        format_compliance=sum(bool(r.format_ok) for r in records) / count if count else 0.0,
        format_by_predictor={p: sum(ok) / len(ok) for p, ok in calls.items()},
        errors=sum(errors.values()), errors_by_type=dict(errors.most_common()),
        prompt_tokens=sum(c.prompt_tokens or 0 for r in records for c in r.trace),
        completion_tokens=sum(c.completion_tokens or 0 for r in records for c in r.trace),
        elapsed_s=round(elapsed_s, 1), demos=demos,
    )


def optimize(program: Any, trainset: Sequence[Mapping[str, Any]], optimizer: Optimizer, *, lm: Any, adapter: Any,
             metric: Any, metric_threshold: float = 1.0, max_demos: int = 4, threads: int = 8) -> Any:
    """Compile ``program`` with DSPy's few-shot optimiser against ``lm`` (through ``adapter``).

    Args:
        program: the program (it is not changed: a deep copy is compiled).
        trainset: training examples (dicts holding the program's inputs and the rewards' gold fields).
        optimizer: ``"bootstrap"`` (BootstrapFewShot: the first ``max_demos`` training examples the
            model itself gets right become demos) or ``"random-search"``
            (BootstrapFewShotWithRandomSearch: 4 candidate demo sets, the best on ``trainset``).
        lm, adapter: the candidate's model and decoding; demos are its own rollouts.
        metric: a DSPy metric (the task's rewards: `raydspy.rewards.RewardSet.as_metric`).
        metric_threshold: a rollout becomes a demo when its metric reaches this.
        max_demos: bootstrapped demos per predictor (no unlabelled demos: a demo without the
            model's own outputs would teach the format, not the task).

    Returns:
        The compiled program (a copy of ``program`` with demos).

    Raises:
        ConfigError: an unknown ``optimizer``.
    """
    import dspy

    from raydspy.runner import program_input_fields

    fields = program_input_fields(program)
    examples = [dspy.Example(**row).with_inputs(*fields) for row in trainset]
    # A completion that does not parse is a miss, not a reason to stop: a base student fails on
    # most examples, and DSPy's optimisers otherwise give up after dspy.settings.max_errors.
    budget = {"metric": metric, "metric_threshold": metric_threshold, "max_bootstrapped_demos": max_demos,
              "max_labeled_demos": 0, "max_errors": len(examples) * 8 + 1}
    if optimizer == "bootstrap":
        teleprompter = dspy.BootstrapFewShot(**budget)
    elif optimizer == "random-search":
        teleprompter = dspy.BootstrapFewShotWithRandomSearch(**budget, num_candidate_programs=4, num_threads=threads)
    else:
        raise ConfigError(f"optimizer must be one of {sorted(OPTIMIZER_NAMES)}, got {optimizer!r}")
    with dspy.context(lm=lm, adapter=adapter):
        return teleprompter.compile(program.deepcopy(), trainset=examples)


def evaluate(program: Any, candidates: Sequence[Candidate], examples: Sequence[Mapping[str, Any]],
             output_dir: str | Path, *, rewards: Any = None, reward_weights: Mapping[str, float] | None = None,
             max_tokens: int = 192, threads: int = 32, optimizer: Optimizer | None = None,
             trainset: Sequence[Mapping[str, Any]] = (), max_demos: int = 4,
             metric_threshold: float = 1.0) -> list[EvalResult]:
    """Run ``program`` on ``examples`` once per candidate and score it with ``rewards``; with
    ``optimizer``, once more per candidate after `optimize` on ``trainset`` (named
    ``"<name> + <optimizer>"``).

    Args:
        program: a ``MODULE:ATTR`` spec or a ``dspy.Module`` (each candidate gets a fresh copy).
        rewards: a reward spec, function, ``{name: function}`` or DSPy metric (`raydspy.rewards`).

    Returns:
        One `EvalResult` per candidate (and per optimised candidate), in ``candidates`` order.

    Raises:
        TeacherUnreachableError: a candidate's endpoint does not serve its model.
        ConfigError: ``optimizer`` set with no ``trainset`` or no rewards, or a bad spec.
    """
    from raydspy.rewards import RewardSet
    from raydspy.specs import load_program, load_rewards

    reward_set = RewardSet(load_rewards(rewards), reward_weights)
    if optimizer is not None and not (trainset and reward_set):
        raise ConfigError("prompt optimisation needs training examples (trainset) and rewards for its metric")
    results = []
    for candidate in candidates:
        teacher = candidate.teacher(max_tokens)
        teacher.check_reachable()
        program_ = load_program(program).deepcopy()
        results.append(_score(candidate.name, candidate, program_, teacher, reward_set, examples, output_dir, threads))
        if optimizer is not None:
            compiled = optimize(program_, trainset, optimizer, lm=teacher.lm(), adapter=candidate.adapter(),
                                metric=reward_set.as_metric(), metric_threshold=metric_threshold,
                                max_demos=max_demos, threads=min(threads, 8))
            results.append(_score(f"{candidate.name} + {OPTIMIZER_NAMES[optimizer]}", candidate, compiled, teacher,
                                  reward_set, examples, output_dir, threads))
    return results


def _score(name: str, candidate: Candidate, program: Any, teacher: TeacherConfig, rewards: Any,
           examples: Sequence[Mapping[str, Any]], output_dir: str | Path, threads: int) -> EvalResult:
    """One rollout of ``program`` per example through `raydspy.Collect`; rows go to ``rollouts/<name>/``."""
    from raydspy.collect import Collect

    folder = Path(output_dir) / "rollouts" / name.replace(" + ", "+").replace(" ", "-")
    collect = Collect(program, str(folder), reward_fn=rewards, num_threads=threads, lm=teacher.lm(),
                      adapter=candidate.adapter(), sampling=teacher.sampling)
    started = time.perf_counter()
    collect.collect([dict(e) for e in examples], n=1)
    demos = max((len(p.demos) for p in program.predictors()), default=0)
    return score_records(name, candidate, collect.last_records, time.perf_counter() - started, demos)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def markdown_table(results: Sequence[EvalResult]) -> str:
    """The results as a Markdown table: rewards and format compliance in percent, then errors,
    tokens and seconds; one column per named reward, one per predictor's format compliance."""
    rewards = list(dict.fromkeys(n for r in results for n in r.rewards))
    predictors = list(dict.fromkeys(p for r in results for p in r.format_by_predictor))
    header = ["model", "decoding", "demos", "reward", *rewards, "format", *(f"format `{p}`" for p in predictors),
              "errors", "tokens (prompt / completion)", "time", "examples"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in results:
        cells = [f"{r.name} (`{r.model}`)", r.decoding, str(r.demos), _pct(r.reward),
                 *(_pct(r.rewards.get(n)) for n in rewards), _pct(r.format_compliance),
                 *(_pct(r.format_by_predictor.get(p)) for p in predictors), str(r.errors),
                 f"{r.prompt_tokens:,} / {r.completion_tokens:,}", f"{r.elapsed_s:.0f} s", str(r.examples)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(results: Sequence[EvalResult], output_dir: str | Path, *, title: str = "held-out examples") -> dict[str, Path]:
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
