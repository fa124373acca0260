"""Who may see the viewer: the service's bearer token, given in an ``Authorization: Bearer``
header or once in the login form, which then starts a session held in a cookie.

The cookie never holds the token: it holds ``<session id>.<expiry>.<HMAC>``, a random session id
(``secrets.token_urlsafe(32)``), the session's expiry time (epoch seconds) and an HMAC-SHA256 of
both under a key derived from the token. The server keeps the live session ids, so a session
lapses on its own, ends at logout (a copy of the cookie stops working too) and stops working when
the token changes. A cookie that is not exactly of that form (ASCII only, fixed lengths) is no
session: parsing never raises. The cookie is ``HttpOnly`` (scripts cannot read it),
``SameSite=Strict`` (no other site's page can make the browser send it: no cross-site request
forgery), ``Secure`` behind HTTPS, and scoped to the viewer's path (the ``/v1`` API still wants
the header). The token never appears in a URL: the form posts it in the request body.

Sessions live in the memory of the process (the Serve replica) that signed the user in: a
restarted service signs everyone out, and behind several replicas a session is known only to the
replica that started it. At most ``max_sessions`` are held at once: lapsed ones are swept at
each login, and when still full the oldest are dropped (their users sign in again).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict

from starlette.requests import Request

__all__ = ["ViewerAuth", "SESSION_COOKIE"]

SESSION_COOKIE = "raydspy_viewer"

# ``secrets.token_urlsafe(32)``: 32 bytes, base64url without padding, 43 characters. The expiry
# has at most 12 digits (epoch seconds until the year 33658), no leading zero (one spelling per
# value), and the HMAC is SHA-256 in lowercase hex. re.ASCII: ``[0-9]`` and friends match ASCII
# only, never ``²`` or ``١``; the bounded digit count keeps ``int()`` far from Python's limit on
# the digits it converts.
_SESSION = re.compile(r"([A-Za-z0-9_-]{43})\.([1-9][0-9]{0,11})\.([0-9a-f]{64})", re.ASCII)
# ``Authorization: Bearer <credentials>``: the scheme in any (ASCII) case, as RFC 9110 has it, then
# spaces; the credentials are the rest, trailing blanks dropped. Anything else is no bearer token.
_BEARER = re.compile(r"bearer[ ]+(.*?)[ \t]*", re.ASCII | re.IGNORECASE | re.DOTALL)


def _bytes(text: str) -> bytes:
    # surrogatepass: a lone surrogate (possible in a str, never in a real token) encodes instead of raising.
    return text.encode("utf-8", "surrogatepass")


class ViewerAuth:
    """Checks a request's credentials against ``token`` and keeps the viewer's sessions (thread safe).

    Args:
        token: the bearer token; None or empty opens the viewer to anyone who can reach it
            (``raydspy view`` on the loopback interface).
        session_s: how long a login lasts.
        max_sessions: the most sessions live at once (memory stays bounded whatever logs in).
    """

    def __init__(self, token: str | None, session_s: float = 12 * 3600, max_sessions: int = 10_000):
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        self._token = token or None
        self.session_s = session_s
        self.max_sessions = max_sessions
        self._key = hashlib.sha256(b"raydspy-viewer-session\0" + _bytes(token)).digest() if token else b""
        # session id -> expiry (epoch s), oldest first. An OrderedDict, not a dict: it drops its
        # first item in O(1), where a dict emptied from the front scans past the holes left.
        self._sessions: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        return self._token is not None

    @property
    def live_sessions(self) -> int:
        """How many sessions are held (lapsed ones included until they are swept)."""
        with self._lock:
            return len(self._sessions)

    def valid_token(self, given: str) -> bool:
        """Whether ``given`` is the token (constant time in its content)."""
        return self._token is not None and secrets.compare_digest(_bytes(given), _bytes(self._token))

    def _mac(self, sid: str, expires: int) -> str:
        return hmac.new(self._key, f"{sid}.{expires}".encode("ascii"), hashlib.sha256).hexdigest()

    def _parse(self, value: str) -> tuple[str, int] | None:
        """The session id and expiry of a well-formed cookie value whose HMAC is right, else None."""
        if not self.required or not isinstance(value, str):
            return None
        match = _SESSION.fullmatch(value)
        if match is None:
            return None
        sid, expires, mac = match[1], int(match[2]), match[3]
        if not secrets.compare_digest(mac, self._mac(sid, expires)):  # both ASCII: compare_digest takes str
            return None
        return sid, expires

    def session(self, now: float | None = None) -> str:
        """Start a session: the value of its cookie, ``<session id>.<expiry, epoch s>.<HMAC of both>``.

        Lapsed sessions are dropped first; when ``max_sessions`` are still live, the oldest.

        Raises:
            RuntimeError: no token is configured (there is nothing to sign in to).
        """
        if not self.required:
            raise RuntimeError("the viewer has no token: it needs no session")
        now = time.time() if now is None else now
        sid, expires = secrets.token_urlsafe(32), int(now + self.session_s)
        with self._lock:
            # Every session lasts session_s, so they lapse in the order they started: the lapsed
            # ones are at the front, and this sweep costs O(1) a login, amortized. (Should the
            # clock step back, a lapsed session behind a live one waits: its cookie is refused
            # all the same, and it goes when it reaches the front or its cookie is seen.)
            while self._sessions:
                oldest, lapses = next(iter(self._sessions.items()))
                if lapses > now and len(self._sessions) < self.max_sessions:
                    break
                self._sessions.popitem(last=False)
            self._sessions[sid] = expires
        return f"{sid}.{expires}.{self._mac(sid, expires)}"

    def valid_session(self, value: str, now: float | None = None) -> bool:
        """Whether the cookie value ``value`` is a live session of this token: well formed, its
        HMAC right, its id known here (not ended, not dropped) and not lapsed. Never raises."""
        parsed = self._parse(value)
        if parsed is None:
            return False
        sid, expires = parsed
        now = time.time() if now is None else now
        with self._lock:
            held = self._sessions.get(sid)
            if held is not None and held <= now:
                del self._sessions[sid]  # lapsed: forget it now rather than at the next sweep
                return False
        return held == expires

    def end(self, value: str) -> bool:
        """End the session of the cookie value ``value`` (logout): its cookie, and any copy of
        it, no longer signs in. Returns whether a live session was ended; never raises."""
        parsed = self._parse(value)
        if parsed is None:
            return False
        with self._lock:
            return self._sessions.pop(parsed[0], None) is not None

    def allowed(self, request: Request) -> bool:
        """Whether ``request`` may see the viewer: no token configured, the bearer token in its
        ``Authorization`` header, or a live session cookie."""
        if not self.required:
            return True
        bearer = _BEARER.fullmatch(request.headers.get("authorization", ""))
        if bearer is not None and self.valid_token(bearer[1]):
            return True
        return self.valid_session(request.cookies.get(SESSION_COOKIE, ""))
