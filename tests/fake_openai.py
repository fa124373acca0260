"""A tiny OpenAI-compatible chat server on loopback, for unit tests whose point is not the LM.

Every completion it returns is new (a counter), so a test can tell a real call from a cached one.
The reply follows ChatAdapter's format for the output fields named in ``fields``, or is what
``reply(request, k)`` returns (``request``: the parsed chat request, ``k``: the call's number).

Token data comes back in vLLM's shape when asked (`vllm_token_data`): ``logprobs`` /
``top_logprobs`` as OpenAI's, ``return_token_ids`` adds ``prompt_token_ids`` (top level) and
``token_ids`` (per choice), ``return_tokens_as_token_ids`` spells tokens ``"token_id:N"``.
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
                response = {
                    "id": f"cmpl-{k}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": request.get("model"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
                self._send(json.dumps(vllm_token_data(request, response)).encode())

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


def orders_teacher(request: dict, k: int) -> str:
    """JSON for the orders program (`raydspy.programs.orders`, JSONAdapter prompts): extraction
    says Oslo, 2 and mugs; its ``confirm`` call answers in no format when the item is broken, so
    those rollouts fail on their second LM call."""
    system, user = request["messages"][0]["content"], request["messages"][-1]["content"]
    if "`reply`" in system:
        return "Sorry, I cannot confirm that." if "broken" in user else json.dumps({"reply": f"Confirmed ({k})."})
    item = "broken lamp" if "broken" in user else "mugs"
    return json.dumps({"city": "Oslo", "quantity": 2, "item": item})


#: The fake's tokenizer: one token per character, its id the code point plus this offset.
TOKEN_ID_OFFSET = 1000


def fake_token_ids(text: str) -> list[int]:
    """``text`` as the fake server tokenizes it."""
    return [ord(c) + TOKEN_ID_OFFSET for c in text]


def fake_prompt(messages: list[dict]) -> str:
    """The fake's chat template: what its ``prompt_token_ids`` tokenize."""
    return "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages)


def fake_logprob(position: int) -> float:
    """The logprob the fake gives the sampled completion token at ``position``."""
    return -1.0 - 0.25 * (position % 4)


def fake_ranking(position: int, token_id: int, count: int) -> list[tuple[int, float]]:
    """The ``count`` most likely tokens at ``position`` whose sampled token is ``token_id``, most
    likely first: ``position % 3`` tokens (ids 1, 2) more likely than the sampled one, then it,
    then less likely ones (ids 100, 101, ...)."""
    sampled = fake_logprob(position)
    better = position % 3
    ranking = [(1 + j, sampled + 0.25 * (better - j)) for j in range(better)] + [(token_id, sampled)]
    ranking += [(100 + j, sampled - 1.0 - j) for j in range(count)]
    return ranking[:count]


def vllm_token_data(request: dict, response: dict) -> dict:
    """``response`` with the token data ``request`` asks for, as vLLM's chat endpoint returns it.

    Like vLLM (``vllm/logprobs.py``), a position's ``top_logprobs`` list the *sampled* token
    first, then the most likely ones (`fake_ranking`), without repeats, cut at ``top_logprobs``: when
    the sampled token is not the most likely, the list is not sorted, and when it is not among the
    K most likely, it holds the sampled token and only K - 1 of them.
    """
    as_ids = bool(request.get("return_tokens_as_token_ids"))

    def spell(token_id: int) -> str:
        if as_ids:
            return f"token_id:{token_id}"
        return chr(token_id - TOKEN_ID_OFFSET) if token_id >= TOKEN_ID_OFFSET else f"<{token_id}>"

    for choice in response["choices"]:
        ids = fake_token_ids(choice["message"]["content"])
        if request.get("return_token_ids"):
            choice["token_ids"] = ids
        if not request.get("logprobs"):
            continue
        top_k = int(request.get("top_logprobs") or 0)
        content = []
        for pos, token_id in enumerate(ids):
            listed = dict([(token_id, fake_logprob(pos)), *fake_ranking(pos, token_id, top_k)])  # sampled first
            top = [{"token": spell(t), "logprob": lp, "bytes": None} for t, lp in list(listed.items())[:top_k]]
            content.append({"token": spell(token_id), "logprob": fake_logprob(pos), "bytes": None, "top_logprobs": top})
        choice["logprobs"] = {"content": content}
    if request.get("return_token_ids"):
        response["prompt_token_ids"] = fake_token_ids(fake_prompt(request["messages"]))
    return response
