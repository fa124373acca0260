"""What the benchmark scripts share (run as scripts, so ``benchmarks/`` is on ``sys.path``): a
local Ray, a fake teacher in its own process, and a meter of the CPU the clients spend."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent

#: The fake teacher's answer to every request: a banking77 answer in JSON (structured outputs).
ANSWER = json.dumps({"reasoning": "The customer asks where the new card is.", "label": "card_arrival"})


def init_local_ray(num_cpus: int = 8) -> None:
    """A fresh local Ray of ``num_cpus`` logical CPUs (never a cluster already running on this
    machine): the layout the benchmarks measure, with the repository importable by its workers."""
    import ray

    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}},
    )


def _serve(port_box, delay_s: float, answer: str, counter=None) -> None:
    """The fake teacher: answers every chat completion with ``answer`` after ``delay_s`` seconds;
    counts them in ``counter`` (a ``multiprocessing.Value``) when given."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(json.dumps({"data": [{"id": "fake", "object": "model", "max_model_len": 4096}]}).encode())

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            if counter is not None:
                with counter.get_lock():
                    counter.value += 1
            time.sleep(delay_s)
            self._send(
                json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "fake",
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 1170, "completion_tokens": 20, "total_tokens": 1190},
                    }
                ).encode()
            )

    class Server(ThreadingHTTPServer):
        request_queue_size = 1024
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    port_box.put(server.server_address[1])
    server.serve_forever()


@contextlib.contextmanager
def serve_fake_teacher(delay_s: float, answer: str = ANSWER, counter=None) -> Iterator[tuple[str, int]]:
    """A loopback OpenAI-compatible teacher, model ``fake``, in its own process, answering every
    request with ``answer`` (default: `ANSWER`) after ``delay_s`` seconds, counted in ``counter``
    (a ``multiprocessing.Value``) when given; yields ``(base_url, pid)``."""
    box = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(box, delay_s, answer, counter), daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{box.get(timeout=30)}/v1", server.pid
    finally:
        server.terminate()
        server.join(5)


class CpuMeter:
    """CPU seconds (user + system) of this process and every process it started (Ray's daemons
    and workers are its descendants), the processes in ``exclude`` (a fake teacher) left out. A
    thread samples the tree every 0.2 s, so a process that ends between two readings still counts
    up to its last sample; other programs on the machine do not count (a test run beside it does
    not skew the figure). ``peak_rss(pid)`` is the largest resident set seen of one process."""

    def __init__(self, exclude: int | tuple[int, ...] = ()):
        self.exclude = {exclude} if isinstance(exclude, int) else set(exclude)
        self.seen: dict[tuple[int, float], float] = {}
        self.rss: dict[int, int] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            if process.pid in self.exclude:
                continue
            try:
                times = process.cpu_times()
                key = (process.pid, process.create_time())
                rss = process.memory_info().rss
            except psutil.Error:
                continue
            with self.lock:
                self.seen[key] = times.user + times.system
                self.rss[process.pid] = max(self.rss.get(process.pid, 0), rss)

    def _run(self) -> None:
        while not self.stopping.wait(0.2):
            self._sample()

    def total(self) -> float:
        self._sample()
        with self.lock:
            return sum(self.seen.values())

    def reset_peak(self, pid: int) -> None:
        with self.lock:
            self.rss.pop(pid, None)

    def peak_rss(self, pid: int) -> int:
        self._sample()
        with self.lock:
            return self.rss.get(pid, 0)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
