"""What the service's confined filesystem (`raydspy.core.confined`) costs against pyarrow's own
LocalFileSystem, side by side on one output folder: committing parts (`commit_rollouts`, what a
run's committer does), listing them, counting them (the status's per-part read of a few columns)
and reading them whole (a preview, the viewer).

``--parts`` part files of ``--rows`` rollout rows each are committed under a temporary folder, once
through each filesystem; then each read runs ``--rounds`` times, alternating the filesystems.
Each row is the median of its rounds, in milliseconds, and the ratio confined / local.

    .venv/bin/python benchmarks/confined_fs.py [--parts 400] [--rows 64] [--rounds 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from viewer_outputs import record  # noqa: E402 - the viewer tests' rows: traces, rewards, errors


def _ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=400)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    args = parser.parse_args()

    import pyarrow.dataset as pads

    from raydspy.core.rollouts import ROLLOUT_SCHEMA, records_to_table
    from raydspy.core.storage import StorageOptions, resolve
    from raydspy.pipeline.commits import commit_rollouts, committed_files

    tables = [records_to_table([record(p * args.rows + i) for i in range(args.rows)]) for p in range(args.parts)]
    root = Path(tempfile.mkdtemp(prefix="raydspy-confined-bench-"))
    options = {"local": StorageOptions(), "confined": StorageOptions(local_roots=(str(root),))}
    results: dict[str, dict[str, list[float]]] = {name: {} for name in options}
    for name, storage in options.items():
        location = resolve(str(root / name), storage)
        results[name]["commit"] = [_ms(lambda loc=location: [commit_rollouts(loc, t) for t in tables])]

    def reads(name: str) -> dict[str, float]:
        location = resolve(str(root / name), options[name])
        files = committed_files(location)
        fs = location.filesystem
        return {
            "list": _ms(lambda: committed_files(location)),
            "count": _ms(
                lambda: pads.dataset(files, filesystem=fs, format="parquet", schema=ROLLOUT_SCHEMA).to_table(
                    columns=["reward", "error"]
                )
            ),
            "read": _ms(lambda: pads.dataset(files, filesystem=fs, format="parquet", schema=ROLLOUT_SCHEMA).to_table()),
        }

    for _ in range(args.rounds):
        for name in options:
            for op, ms in reads(name).items():
                results[name].setdefault(op, []).append(ms)

    report = {
        "parts": args.parts,
        "rows_per_part": args.rows,
        "rounds": args.rounds,
        "ms": {name: {op: statistics.median(v) for op, v in ops.items()} for name, ops in results.items()},
    }
    report["ratio_confined_over_local"] = {
        op: report["ms"]["confined"][op] / report["ms"]["local"][op] for op in report["ms"]["local"]
    }
    print(f"{'operation':<10}{'local ms':>12}{'confined ms':>14}{'ratio':>8}")
    for op, ratio in report["ratio_confined_over_local"].items():
        print(f"{op:<10}{report['ms']['local'][op]:>12.1f}{report['ms']['confined'][op]:>14.1f}{ratio:>8.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
