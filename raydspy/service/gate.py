"""The bearer token, checked before anything else of a ``/v1`` request is read (ASGI middleware).

FastAPI reads and parses a body before it runs a route's dependencies, so without this a request
without the token still learns whether its body parses and validates (400, 422). Here a request
under the API prefix without ``Authorization: Bearer <token>`` gets 401 before its body is read.
The route dependency (`raydspy.service.api.require_token`) checks again and declares the scheme
in the OpenAPI schema.
"""

from __future__ import annotations

import json
import secrets

__all__ = ["BearerGate", "token_matches"]


def token_matches(header: str, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` as a bearer token (constant time)."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


class BearerGate:
    """401 for a request under ``prefix`` that lacks the bearer ``token``.

    Args:
        app: the ASGI app.
        token: the service's bearer token.
        prefix: the path prefix the token guards (under the ASGI root path).
    """

    def __init__(self, app, token: str, prefix: str = "/v1"):
        self.app = app
        self.token = token
        self.prefix = prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self._guarded(scope):
            headers = dict(scope.get("headers") or [])
            header = headers.get(b"authorization", b"").decode("latin-1")
            if not token_matches(header, self.token):
                return await self._reject(send)
        return await self.app(scope, receive, send)

    def _guarded(self, scope) -> bool:
        root, path = scope.get("root_path", "").rstrip("/"), scope.get("path", "")
        if root and path.startswith(root + "/"):  # servers differ on whether path includes root_path
            path = path[len(root) :]
        return path == self.prefix or path.startswith(self.prefix + "/")

    async def _reject(self, send) -> None:
        body = json.dumps({"detail": "missing or wrong bearer token"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
