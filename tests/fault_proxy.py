"""A fault-injecting HTTP proxy on loopback, between a client and an OpenAI-compatible server.

Each request gets the fault its number calls for (``plan(k) -> fault``), then, unless the fault
ends it, is forwarded upstream and the answer passed back:

    "pass"   forward as is
    "500"    answer 500 Internal Server Error without forwarding
    "503"    answer 503 Service Unavailable with ``Retry-After: 1``
    "429"    answer 429 Too Many Requests with ``Retry-After: 1``
    "drop"   close the connection without answering (the client sees a dropped connection)
    "slow"   wait ``slow_s`` seconds, then forward

``GET`` requests (the model list) always pass, so pre-flight checks see a healthy endpoint.
"""

from __future__ import annotations

import collections
import itertools
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

Plan = Callable[[int], str]


def every(**periods: int) -> Plan:
    """A plan that injects fault F on every ``periods[F]``-th request (the first match wins).

    ``every(drop=7, **{"500": 5}, slow=4)`` drops requests 7, 14, …, answers 500 to 5, 10, …
    """

    def plan(k: int) -> str:
        for fault, period in periods.items():
            if k % period == period - 1:
                return fault
        return "pass"

    return plan


class FaultProxy:
    """Run as a context manager; ``url`` is the proxy's ``…/v1``; ``faults`` counts each fault."""

    def __init__(self, upstream: str, plan: Plan, *, slow_s: float = 2.0):
        self.upstream = upstream.rstrip("/")
        self.plan = plan
        self.slow_s = slow_s
        self.faults: collections.Counter[str] = collections.Counter()
        self.forwarded = 0
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=600)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                owner._forward(self, None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner._lock:
                    fault = owner.plan(next(owner._counter))
                    owner.faults[fault] += 1
                if fault == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if fault in ("500", "503", "429"):
                    self._reply(int(fault), b'{"error": {"message": "injected fault"}}', retry_after=fault != "500")
                    return
                if fault == "slow":
                    time.sleep(owner.slow_s)
                owner._forward(self, body)

            def _reply(
                self, status: int, body: bytes, retry_after: bool = False, content_type: str = "application/json"
            ):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if retry_after:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(body)

        self._handler = Handler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        upstream_path = httpx.URL(self.upstream).path.rstrip("/")
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{upstream_path}"
        self._origin = str(httpx.URL(self.upstream).copy_with(path="", query=None)).rstrip("/")
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes | None) -> None:
        headers = {
            k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length", "connection")
        }
        try:
            response = self._client.request(handler.command, self._origin + handler.path, headers=headers, content=body)
        except httpx.HTTPError as e:
            handler._reply(502, f'{{"error": {{"message": "upstream: {type(e).__name__}"}}}}'.encode())
            return
        with self._lock:
            self.forwarded += 1
        handler._reply(
            response.status_code,
            response.content,
            content_type=response.headers.get("content-type", "application/json"),
        )

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._client.close()
