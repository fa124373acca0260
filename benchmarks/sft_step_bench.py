"""Seconds per SFT row of the embedded student on this machine, with and without the shared prefix.

Times optimizer steps of TRL's SFT (as `raydspy train sft` runs it: SmolLM2-135M-Instruct, all
weights, float32, lr 1e-4, completion-only loss) in three modes at the same batch size:

    plain-gc  TRL's SFTTrainer with its default gradient checkpointing (the path before shared_prefix)
    plain     TRL's SFTTrainer, gradient checkpointing off
    shared    `SharedPrefixSFTTrainer` (gradient checkpointing off, as it needs)
    prompts   the same without the shared prefix (P = 0): only the rows' prompts skip TRL's LM head,
              which on CPU scores every position (on CUDA it scores the loss positions only)
    shared-amp  `shared` in mixed precision: float32 weights and optimizer, bf16 compute
              (TrainingArguments bf16=True: torch.autocast on CPU), for CPUs with native bf16

Each measurement is a fresh process (so its peak resident memory is its own), modes alternate
round after round, and the first step of each is a warm-up left out of the timing. The rows are
the real banking77 SFT rows of ``tests/data/banking77-rollouts.parquet`` (`exports.sft_rows`);
when a batch needs more rows than the fixture has, copies of them carry other banking77 training
queries in place of theirs (same instructions, same answers), so that every row of a batch is a
different query, as in a real export. All modes see the same rows in the same order, so their
per-step losses must agree (the check that the modes train the same).

    flock /tmp/raydspy-heavy.lock .venv/bin/python benchmarks/sft_step_bench.py --batch-size 4 [--modes ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "banking77-rollouts.parquet"
MODES = ("plain-gc", "plain", "shared", "prompts", "shared-amp")
_QUERY_START, _QUERY_END = "[[ ## text ## ]]\n", "\n\nRespond with"


def sft_rows(count: int) -> list[dict]:
    """``count`` SFT rows: the fixture's, then copies of them with other banking77 training queries."""
    import pyarrow.parquet as pq

    from raydspy.datasets import banking77_path
    from raydspy.distill import exports
    from raydspy.programs import banking77

    rows = exports.sft_rows(pq.read_table(FIXTURE).to_pylist())
    labels = set(banking77.top_labels(25))
    with open(banking77_path("train.csv"), newline="", encoding="utf-8") as f:
        queries = [r["text"] for r in csv.DictReader(f) if r["category"] in labels]
    out = list(rows)
    for i in range(len(rows), count):
        messages = [dict(m) for m in rows[i % len(rows)]["messages"]]
        user = messages[1]["content"]
        start = user.index(_QUERY_START) + len(_QUERY_START)
        messages[1]["content"] = user[:start] + queries[i] + user[user.index(_QUERY_END, start) :]
        out.append({**rows[i % len(rows)], "messages": messages})
    return out[:count]


def measure(mode: str, batch_size: int, steps: int) -> dict:
    """One measurement (run in its own process): ``steps + 1`` optimizer steps, the first untimed."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from raydspy.distill.shared_prefix import SharedPrefixSFTTrainer, Split
    from raydspy.distill.train import prompt_completion
    from raydspy.teacher.embedded import ensure_checkpoint

    path = ensure_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    dataset = prompt_completion(datasets.Dataset.from_list(sft_rows(batch_size * (steps + 1))))
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="sft-bench-"),
        max_steps=steps + 1,
        per_device_train_batch_size=batch_size,
        learning_rate=1e-4,
        max_length=1536,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=(mode == "shared-amp"),
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        gradient_checkpointing=(mode == "plain-gc"),
    )

    class PromptsOnly(SharedPrefixSFTTrainer):
        def _split(self, inputs):
            split = super()._split(inputs)
            return None if split is None else Split(0, split.prompt)

    trainer_class = {
        "shared": SharedPrefixSFTTrainer,
        "shared-amp": SharedPrefixSFTTrainer,
        "prompts": PromptsOnly,
    }.get(mode, SFTTrainer)
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)

    class Clock(TrainerCallback):
        def __init__(self):
            self.durations: list[float] = []

        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.durations.append(time.perf_counter() - self.start)

    clock = Clock()
    trainer.add_callback(clock)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    timed = clock.durations[1:]
    return {
        "mode": mode,
        "batch_size": batch_size,
        "steps": len(timed),
        "s_per_step": statistics.mean(timed),
        "s_per_row": statistics.mean(timed) / batch_size,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "losses": losses,
        "shared_prefix_tokens": [e.get("shared_prefix_tokens") for e in trainer.state.log_history if "loss" in e],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="timed optimizer steps per measurement (after 1 warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="times each mode is measured, alternating")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES[:3]))
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(measure(args.worker, args.batch_size, args.steps)), flush=True)
        return

    print(
        f"batch_size={args.batch_size} timed_steps={args.steps} rounds={args.rounds} "
        f"threads={os.environ.get('OMP_NUM_THREADS', os.cpu_count())}",
        flush=True,
    )
    results: dict[str, list[dict]] = {m: [] for m in args.modes}
    for round_ in range(args.rounds):
        for mode in args.modes:
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    mode,
                    "--batch-size",
                    str(args.batch_size),
                    "--steps",
                    str(args.steps),
                ],
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
            r = json.loads(lines[-1][len("RESULT ") :])
            results[mode].append(r)
            print(
                f"round {round_ + 1} {mode:10s}: {r['s_per_step']:7.1f} s/step  {r['s_per_row']:6.2f} s/row  "
                f"peak RSS {r['peak_rss_gib']:.2f} GiB  losses {[round(x, 4) for x in r['losses']]}  "
                f"shared prefix {r['shared_prefix_tokens']}",
                flush=True,
            )
    print("\nmedian over rounds:")
    base = {m: statistics.median(r["s_per_row"] for r in rs) for m, rs in results.items()}
    for mode, value in base.items():
        ratios = "  ".join(f"{value / base[other]:.2f}x of {other}" for other in base if other != mode)
        peak = max(r["peak_rss_gib"] for r in results[mode])
        print(f"{mode:10s}: {value:6.2f} s/row   peak RSS {peak:.2f} GiB   {ratios}")


if __name__ == "__main__":
    main()
