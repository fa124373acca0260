"""A tiny OpenAI-compatible chat server on loopback, for unit tests whose point is not the LM.

Every completion it returns is new (a counter), so a test can tell a real call from a cached one.
The reply follows ChatAdapter's format for the output fields named in ``fields``, or is what
``reply(request, k)`` returns (``request``: the parsed chat request, ``k``: the call's number).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops connections when a pipeline opens many at once; the
    # client then waits on TCP's SYN retransmits (1 s, 3 s, 7 s), which looks like a stalled run.
    request_queue_size = 256
    daemon_threads = True


class FakeOpenAI:
    def __init__(
        self, fields: dict[str, str] | None = None, reply=None, *, model: str = "fake-model", delay_s: float = 0.0
    ):
        self.fields = fields or {}  # output field -> value prefix
        self.reply = reply
        self.model = model
        self.requests: list[dict] = []
        self.windows: list[tuple[float, float]] = []  # (start, end) of each completion, time.monotonic()
        self.arrivals = 0  # chat requests received, answered or not (a client may time out first)
        self.delay_for = lambda: delay_s  # seconds to wait before answering the next request
        self._counter = itertools.count()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                body = json.dumps({"data": [{"id": owner.model, "object": "model"}]}).encode()
                self._send(body)

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                started = time.monotonic()
                with owner._lock:
                    owner.arrivals += 1
                time.sleep(owner.delay_for())  # outside the lock: concurrent requests wait side by side
                with owner._lock:
                    owner.requests.append(request)
                    owner.windows.append((started, time.monotonic()))
                    k = next(owner._counter)
                if owner.reply is not None:
                    text = owner.reply(request, k)
                else:
                    text = "\n\n".join(f"[[ ## {f} ## ]]\n{v}{k}" for f, v in owner.fields.items())
                    text += "\n\n[[ ## completed ## ]]"
                body = json.dumps(
                    {
                        "id": f"cmpl-{k}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": request.get("model"),
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    }
                ).encode()
                self._send(body)

            def _send(self, body: bytes):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def slow_teacher(delay_s: float, bad_every: int = 0) -> FakeOpenAI:
    """A started server named ``slow-model`` that takes ``delay_s`` per completion and answers the
    banking77 program in ChatAdapter's format; with ``bad_every=k``, every k-th completion is text
    in no format (that rollout fails to parse). Close it with ``close()``."""

    def reply(request: dict, k: int) -> str:
        if bad_every and (k + 1) % bad_every == 0:
            return "I am not sure."
        return "[[ ## reasoning ## ]]\nhm\n\n[[ ## label ## ]]\ncard_arrival\n\n[[ ## completed ## ]]"

    return FakeOpenAI(reply=reply, model="slow-model", delay_s=delay_s).start()
