"""Cut tests/data/banking77-rollouts.parquet from a real run of the embedded teacher.

    raydspy demo --examples 200 --n 4 --output rollouts/banking77-distill
    .venv/bin/python tests/data/make_rollouts_fixture.py rollouts/banking77-distill

Keeps a few examples, all their rollouts, chosen so that the fixture holds rollouts with full
reward (SFT rows), examples whose rollouts' rewards differ (DPO pairs), and a failed rollout when
the run has one. Small on purpose (tens of rows, tens of KB).
"""

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raydspy.core.storage import resolve
from raydspy.pipeline.commits import read_committed

OUT = Path(__file__).resolve().parent / "banking77-rollouts.parquet"


def main(rollouts_uri: str, examples: int = 6) -> None:
    table, _ = read_committed(resolve(rollouts_uri))
    rows = table.to_pylist()
    by_example: dict[str, list[dict]] = {}
    for row in rows:
        by_example.setdefault(row["example_id"], []).append(row)
    full = [e for e, rs in by_example.items() if any((r["reward"] or 0) >= 1.0 for r in rs)]
    mixed = [e for e in full if len({r["reward"] for r in by_example[e]}) > 1]
    failed = [e for e, rs in by_example.items() if any(r["error"] for r in rs)]
    chosen = list(dict.fromkeys(sorted(mixed)[: examples - 1] + sorted(failed)[:1]))[:examples]
    kept = table.filter(pc.is_in(table.column("example_id"), value_set=pa.array(chosen)))
    pq.write_table(kept.sort_by([("example_id", "ascending"), ("rollout_index", "ascending")]), OUT, compression="zstd")
    print(f"{kept.num_rows} rollouts of {len(chosen)} examples -> {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:])
