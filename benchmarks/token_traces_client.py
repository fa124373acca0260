"""What recording token-level traces costs the client: `Collect` rollouts per second of a
one-predictor program against a fake vLLM in its own process (tests/fake_openai.py, answering at
once in vLLM's shape), with and without ``--record-logprobs``.

Contenders, in alternating rounds: DSPy's native client (lm15, what rollouts use by default); the
same calls through LiteLLM (what DSPy picks once a call carries ``extra_body``); recording
(LiteLLM, logprobs and token ids, parsed into the trace); recording with the top 5 alternatives.
The figure is each one's median rollouts/s over the native client's.

    .venv/bin/python benchmarks/token_traces_client.py [--rollouts 200] [--rounds 3] [--words 20]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

CONTENDERS = ("native", "litellm", "record", "record-top5")


def _serve(words: int, box) -> None:
    from fake_openai import FakeOpenAI

    text = "[[ ## answer ## ]]\n" + "word " * words + "\n\n[[ ## completed ## ]]"
    server = FakeOpenAI(reply=lambda request, k: text).start()
    box.put(server.url)
    time.sleep(3600)


def _rate(url: str, name: str, rollouts: int) -> float:
    import dspy

    from raydspy import Collect
    from raydspy.teacher.client import TeacherConfig

    lm = TeacherConfig(base_url=url, model="fake-model", cache=False).lm()
    if name == "litellm":
        lm = lm.copy(engine="litellm")
    flags = {"record": {"record_logprobs": True}, "record-top5": {"record_logprobs": True, "top_logprobs": 5}}
    with tempfile.TemporaryDirectory() as tmp:
        collect = Collect(dspy.Predict("question -> answer"), tmp, lm=lm, num_threads=8, **flags.get(name, {}))
        collect.collect([{"question": f"warm {i}"} for i in range(10)])
        started = time.perf_counter()
        collect.collect([{"question": f"question {i}"} for i in range(rollouts)])
        return rollouts / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--words", type=int, default=20, help="words in each completion (5 fake tokens each: one per character)"
    )
    args = parser.parse_args()
    box = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(args.words, box), daemon=True)
    server.start()
    try:
        url = box.get(timeout=60)
        rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
        for _ in range(args.rounds):
            for name in CONTENDERS:
                rates[name].append(_rate(url, name, args.rollouts))
        base = statistics.median(rates["native"])
        for name in CONTENDERS:
            median = statistics.median(rates[name])
            print(f"{name:12s} {median:7.1f} rollouts/s  {median / base:.2f} of native  rounds {rates[name]}")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
