"""Who may see the viewer: the service's bearer token, given in an ``Authorization: Bearer``
header or once in the login form, which then sets a session cookie.

The cookie never holds the token: it holds an expiry time and an HMAC-SHA256 of it under a key
derived from the token, so it proves the token was given, lapses on its own, and stops working
when the token changes. It is ``HttpOnly`` (scripts cannot read it), ``SameSite=Strict`` (no
other site's page can make the browser send it: no cross-site request forgery), ``Secure`` behind
HTTPS, and scoped to the viewer's path (the ``/v1`` API still wants the header). The token never
appears in a URL: the form posts it in the request body.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from starlette.requests import Request

__all__ = ["ViewerAuth", "SESSION_COOKIE"]

SESSION_COOKIE = "raydspy_viewer"


class ViewerAuth:
    """Checks a request's credentials against ``token``.

    Args:
        token: the bearer token; None or empty opens the viewer to anyone who can reach it
            (``raydspy view`` on the loopback interface).
        session_s: how long a login lasts.
    """

    def __init__(self, token: str | None, session_s: float = 12 * 3600):
        self._token = token or None
        self.session_s = session_s
        self._key = hashlib.sha256(b"raydspy-viewer-session\0" + token.encode()).digest() if token else b""

    @property
    def required(self) -> bool:
        return self._token is not None

    def valid_token(self, given: str) -> bool:
        """Whether ``given`` is the token (constant time)."""
        return self._token is not None and secrets.compare_digest(given.encode(), self._token.encode())

    def _mac(self, expires: int) -> str:
        return hmac.new(self._key, str(expires).encode(), hashlib.sha256).hexdigest()

    def session(self, now: float | None = None) -> str:
        """A new session cookie's value: ``<expiry, epoch s>.<HMAC of it>``."""
        expires = int((time.time() if now is None else now) + self.session_s)
        return f"{expires}.{self._mac(expires)}"

    def valid_session(self, value: str, now: float | None = None) -> bool:
        expires, _, mac = value.partition(".")
        if not self.required or not expires.isdigit():
            return False
        fresh = int(expires) > (time.time() if now is None else now)
        return secrets.compare_digest(mac.encode(), self._mac(int(expires)).encode()) and fresh

    def allowed(self, request: Request) -> bool:
        """Whether ``request`` may see the viewer: no token configured, the bearer token in its
        ``Authorization`` header, or a valid session cookie."""
        if not self.required:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.valid_token(given.strip()):
            return True
        return self.valid_session(request.cookies.get(SESSION_COOKIE, ""))
