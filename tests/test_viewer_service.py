"""The viewer inside the HTTP service (`raydspy.service.api.create_app`) through FastAPI's
TestClient: the service's token guards every page (header, or the login form's session cookie,
never the token in a URL), and the pages render runs of an orders-like two-predictor program
whose outputs were committed by raydspy's writers. One test goes through Ray Serve's proxy
under a route prefix; one starts ``raydspy view`` as a process."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from viewer_outputs import cached, record, write_parts

from raydspy.core.storage import resolve
from raydspy.pipeline.commits import committed_files
from raydspy.pipeline.part_counts import PartCounts
from raydspy.pipeline.summary import read_rollouts
from raydspy.service.api import create_app
from raydspy.service.dispatch import RunManager
from raydspy.service.runs import RunRecord, utcnow
from raydspy.service.schemas import RunRequest, RunState
from raydspy.service.settings import ServiceSettings
from raydspy.viewer.auth import SESSION_COOKIE, ViewerAuth
from raydspy.viewer.overview import OVERVIEW_COLUMNS, Overview

TOKEN = "viewer-token-5f2c9a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DONE, LIVE, QUEUED = "run-20260101-000000-aaaaaaaa", "run-20260101-000100-bbbbbbbb", "run-20260101-000200-cccccccc"
VIEWER = Path(__file__).resolve().parent.parent / "raydspy" / "viewer"


def _request(output: Path) -> RunRequest:
    return RunRequest(
        program="raydspy.programs.orders:program",
        rewards="raydspy.programs.orders:rewards",
        input_uri=str(output.parent.parent / "in" / "train.jsonl"),
        output_uri=str(output),
        n=2,
    )


def _settings(root: Path) -> ServiceSettings:
    return ServiceSettings.load(
        dict(
            token=TOKEN,
            input_prefixes=[str(root / "in")],
            output_prefixes=[str(root / "out")],
            teacher_prefixes=["http://127.0.0.1:"],
            state_uri=str(root / "state"),
        )
    )


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    """A run manager with three runs of an orders-like program: one finished (24 rollouts), one
    still running (10 of 40 committed), one queued (its output does not exist yet)."""
    root = tmp_path_factory.mktemp("viewer-service")
    write_parts(str(root / "out" / "done"), 24, 10)
    write_parts(str(root / "out" / "live"), 10, 5, start=100, manifest=False)
    runs = RunManager(_settings(root))
    done = read_rollouts(resolve(str(root / "out" / "done")))
    summary = {"rows": done.num_rows, "error_rows": 5, "mean_reward": 0.45, "rollouts_per_s": 3.5}
    now = utcnow()
    runs.store.put(
        RunRecord(
            id=DONE,
            request=_request(root / "out" / "done"),
            state=RunState.SUCCEEDED,
            planned=24,
            summary=summary,
            created_at=now,
            started_at=now,
            finished_at=now,
        )
    )
    runs.store.put(
        RunRecord(
            id=LIVE,
            request=_request(root / "out" / "live"),
            state=RunState.RUNNING,
            planned=40,
            dispatched_at=now,
            started_at=now,
            created_at=now,
        )
    )
    runs.store.put(RunRecord(id=QUEUED, request=_request(root / "out" / "queued"), created_at=now))
    runs.root = root
    return runs


@pytest.fixture
def client(manager):
    with TestClient(create_app(manager), follow_redirects=False) as c:
        yield c


def _login(client: TestClient, next_path: str = "/viewer/") -> None:
    response = client.post("/viewer/login", data={"token": TOKEN, "next": next_path})
    assert response.status_code == 303, response.text


def _urls(html: str) -> list[str]:
    return [unescape(u) for u in re.findall(r'(?:href|src|action)="([^"]*)"', html)]


# -- who may see it ----------------------------------------------------------------------------


def test_pages_redirect_to_the_login_form_and_fragments_answer_401_without_the_token(client):
    rollout = record(0).rollout_id
    for path in ["/viewer/", f"/viewer/runs/{DONE}", f"/viewer/runs/{DONE}/rollouts/{rollout}?part=x"]:
        response = client.get(path)
        assert response.status_code == 303, path
        location = urlsplit(response.headers["location"])
        assert location.path == "/viewer/login" and parse_qs(location.query)["next"] == [path]
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 303
        assert client.get(path, headers=AUTH).status_code == 200, path
    for path in ["/viewer/partials/runs", f"/viewer/partials/runs/{LIVE}", f"/viewer/partials/runs/{LIVE}/overview"]:
        assert client.get(path).status_code == 401
        assert client.get(path, headers=AUTH).status_code == 200
    assert client.get("/", headers=AUTH).headers["location"] == "/viewer/"
    # The vendored script and the stylesheet are public (nothing private in them).
    assert client.get("/viewer/static/vendor/chart.umd.min.js").status_code == 200
    assert client.get("/viewer/static/style.css").status_code == 200


def test_the_login_form_posts_the_token_and_sets_an_httponly_strict_session_cookie(client):
    form = client.get("/viewer/login?next=/viewer/runs/" + DONE)
    assert form.status_code == 200
    assert re.search(r'<form method="post" action="/viewer/login">', form.text)
    assert 'type="password"' in form.text and f'value="/viewer/runs/{DONE}"' in form.text

    wrong = client.post("/viewer/login", data={"token": "nope", "next": "/viewer/"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers and "not the token" in wrong.text

    response = client.post("/viewer/login", data={"token": TOKEN, "next": f"/viewer/runs/{DONE}"})
    assert response.status_code == 303 and response.headers["location"] == f"/viewer/runs/{DONE}"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and TOKEN not in cookie
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower() and "path=/viewer" in cookie.lower()

    assert client.get(f"/viewer/runs/{DONE}").status_code == 200  # the cookie alone is enough
    assert client.get("/v1/runs").status_code == 401  # ... for the pages, not for the API
    value = client.cookies[SESSION_COOKIE]
    client.cookies.clear()
    forged = value[:-1] + ("1" if value.endswith("0") else "0")
    assert client.get("/viewer/", headers={"Cookie": f"{SESSION_COOKIE}={forged}"}).status_code == 303
    assert client.get("/viewer/", headers={"Cookie": f"{SESSION_COOKIE}={value}"}).status_code == 200

    _login(client)
    assert client.post("/viewer/logout").status_code == 303
    assert client.get("/viewer/").status_code == 303


def test_logout_ends_the_session_so_a_copy_of_its_cookie_stops_working(client):
    _login(client)
    saved = client.cookies[SESSION_COOKIE]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}\.[0-9]{10}\.[0-9a-f]{64}", saved)
    copy = {"Cookie": f"{SESSION_COOKIE}={saved}"}
    assert client.get("/viewer/", headers=copy).status_code == 200
    logout = client.post("/viewer/logout")
    assert logout.status_code == 303 and logout.headers["location"] == "/viewer/login"
    assert (
        f'{SESSION_COOKIE}=""' in logout.headers["set-cookie"] and "max-age=0" in logout.headers["set-cookie"].lower()
    )
    client.cookies.clear()
    page = client.get("/viewer/", headers=copy)
    assert page.status_code == 303 and page.headers["location"].startswith("/viewer/login?next=")
    assert client.get("/viewer/partials/runs", headers=copy).status_code == 401
    # Another session (another browser) lives on: logout ends only its own.
    _login(client)
    other = client.cookies[SESSION_COOKIE]
    client.cookies.clear()
    assert client.post("/viewer/logout", headers=copy).status_code == 303  # an ended session: nothing to end
    assert client.get("/viewer/", headers={"Cookie": f"{SESSION_COOKIE}={other}"}).status_code == 200


def test_logout_without_a_session_or_with_a_malformed_cookie_just_signs_out(client):
    assert client.post("/viewer/logout").status_code == 303
    for value in ['"\\262.1.x"', "9" * 4400, "a.b.c"]:
        assert client.post("/viewer/logout", headers={"Cookie": f"{SESSION_COOKIE}={value}"}).status_code == 303


def _malformed(valid: str) -> dict[str, str]:
    """Cookie values that are no session, keyed by what is wrong, derived from the ``valid`` one."""
    sid, expires, mac = valid.split(".")
    return {
        # ² (U+00B2) passes str.isdigit() but not int(): Starlette's cookie parser turns the octal
        # escape of a quoted cookie into that character (the server sees "²").
        "superscript two": '"\\262.1"',
        "superscript expiry": f'"{sid}.\\262.{mac}"',
        "4,400 digits": "9" * 4400,  # past Python's int max str digits (4,300)
        "4,400-digit expiry": f"{sid}.{'9' * 4400}.{mac}",
        "13-digit expiry": f"{sid}.{'9' * 13}.{mac}",
        "leading zero": f"{sid}.0{expires}.{mac}",  # int() reads 1060 in it: same HMAC, another spelling
        "short sid": f"{sid[:-1]}.{expires}.{mac}",
        "long sid": f"{sid}A.{expires}.{mac}",
        "sid outside base64url": f"{sid[:-1]}+.{expires}.{mac}",
        "empty": "",
        "empty sid": f".{expires}.{mac}",
        "empty expiry": f"{sid}..{mac}",
        "empty hmac": f"{sid}.{expires}.",
        "only dots": "..",
        "old format, no sid": f"{expires}.{mac}",
        "extra part": f"{valid}.0",
        "uppercase hmac": f"{sid}.{expires}.{mac.upper()}",
        "short hmac": f"{sid}.{expires}.{mac[:-1]}",
        "forged hmac": f"{sid}.{expires}.{mac[:-1]}{'1' if mac.endswith('0') else '0'}",
        "later expiry, same hmac": f"{sid}.{int(expires) + 1}.{mac}",
        "made-up sid": f"{'A' * 43}.{expires}.{mac}",
        # Well formed, the HMAC right (same token, so same key), but the session is another
        # process's (or a restarted service's): its id is unknown here.
        "unknown sid, right hmac": ViewerAuth(TOKEN).session(),
        "mojibake digits": '"\\331\\241\\331\\242"',  # what ١٢ (UTF-8) looks like decoded as Latin-1
    }


def test_malformed_session_cookies_are_no_session_never_a_server_error(manager):
    with TestClient(create_app(manager), follow_redirects=False, raise_server_exceptions=False) as c:
        _login(c)
        valid = c.cookies[SESSION_COOKIE]
        c.cookies.clear()
        for what, value in _malformed(valid).items():
            cookie = {"Cookie": f"{SESSION_COOKIE}={value}"}
            page = c.get("/viewer/", headers=cookie)
            assert page.status_code == 303, (what, page.status_code, page.text[:200])
            assert page.headers["location"] == "/viewer/login?next=%2Fviewer%2F", what
            fragment = c.get("/viewer/partials/runs", headers=cookie)
            assert fragment.status_code == 401, (what, fragment.status_code)
        assert c.get("/viewer/", headers={"Cookie": f"{SESSION_COOKIE}={valid}"}).status_code == 200


def test_a_session_cookie_is_parsed_strictly():
    auth = ViewerAuth(TOKEN)
    valid = auth.session()
    sid, expires, mac = valid.split(".")
    assert auth.valid_session(valid) and re.fullmatch(r"[A-Za-z0-9_-]{43}", sid, re.ASCII)
    wrong = (
        list(_malformed(valid).values())
        + [
            "\u00b2.1",  # ² itself, as another server's cookie parser might hand it over
            f"{sid}.\u00b2.{mac}",
            "١٢٣.abc",  # Arabic-Indic digits: str.isdigit() and int() take them, the session format does not
            f"{sid}.{''.join(chr(0x0660 + int(d)) for d in expires)}.{mac}",
            f"{sid}.{expires}.{mac}\n",
            f" {valid}",
            f"{valid}\x00",
            f"{sid}.{expires}.{mac[:-1]}\udcff",  # a lone surrogate
            f"{sid[:-1]}\u212a.{expires}.{mac}",  # KELVIN SIGN, which IGNORECASE would take for k
        ]
    )
    for value in wrong:
        assert not auth.valid_session(value), repr(value)
        assert not auth.end(value), repr(value)
    assert auth.valid_session(valid) and auth.live_sessions == 1  # none of that touched the session


def test_bearer_headers_are_parsed_strictly(client):
    assert client.get("/viewer/", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    assert client.get("/viewer/", headers={"Authorization": f"Bearer   {TOKEN}  "}).status_code == 200
    for header in [
        TOKEN,
        f"Basic {TOKEN}",
        f"Bearer{TOKEN}",
        f"Bearer\t{TOKEN}",
        f"Bearer {TOKEN}x",
        "Bearer ",
        "Bearer",
    ]:
        assert client.get("/viewer/", headers={"Authorization": header}).status_code == 303, header
    assert client.get("/viewer/", headers={"Authorization": "Bearer \u00b2".encode("utf-8")}).status_code == 303


def test_live_sessions_are_bounded_lapsed_ones_go_first_then_the_oldest():
    auth = ViewerAuth(TOKEN, session_s=60, max_sessions=3)
    first, second = auth.session(now=1_000.0), auth.session(now=1_010.0)
    third = auth.session(now=1_050.0)
    assert auth.live_sessions == 3
    fourth = auth.session(now=1_065.0)  # `first` lapsed at 1_060 and is swept, the others stay
    assert auth.live_sessions == 3
    assert [auth.valid_session(v, now=1_065.0) for v in (first, second, third, fourth)] == [False, True, True, True]
    fifth = auth.session(now=1_066.0)  # full of live sessions: the oldest (`second`) is dropped
    assert auth.live_sessions == 3
    assert [auth.valid_session(v, now=1_066.0) for v in (second, third, fourth, fifth)] == [False, True, True, True]
    with pytest.raises(ValueError):
        ViewerAuth(TOKEN, max_sessions=0)
    roomy = ViewerAuth(TOKEN, session_s=60, max_sessions=100)
    for t in range(50):
        roomy.session(now=1_000.0 + t)
    assert roomy.live_sessions == 50
    roomy.session(now=2_000.0)  # a login sweeps the lapsed ones, full or not: memory follows the live ones
    assert roomy.live_sessions == 1


def test_the_default_bound_holds_under_many_logins_from_many_threads():
    from concurrent.futures import ThreadPoolExecutor

    auth = ViewerAuth(TOKEN)
    assert auth.max_sessions == 10_000
    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(lambda _: auth.session(), range(12_000)))
    assert auth.live_sessions == 10_000 and len(set(values)) == 12_000
    # 2,000 were dropped, which ones depends on how the threads ran (the single-threaded test
    # above checks that they are the oldest); every one held still signs in.
    assert sum(auth.valid_session(v) for v in values) == 10_000


@pytest.mark.parametrize("target", ["https://elsewhere.example/", "//elsewhere.example/viewer/", "/v1/runs", "/viewer"])
def test_after_login_the_browser_stays_in_the_viewer(client, target):
    response = client.post("/viewer/login", data={"token": TOKEN, "next": target})
    assert response.headers["location"] == "/viewer/"


def test_the_token_is_never_in_a_url_or_a_page(client):
    _login(client)
    seen = []
    for path in ["/viewer/login", "/viewer/", f"/viewer/runs/{DONE}", f"/viewer/runs/{DONE}?error=(any)"]:
        response = client.get(path)
        assert TOKEN not in response.text
        seen += _urls(response.text)
    rollout = next(u for u in seen if "/rollouts/" in u)
    page = client.get(rollout)
    assert page.status_code == 200 and TOKEN not in page.text
    seen += _urls(page.text) + [rollout]
    assert seen and not [u for u in seen if TOKEN in u]


def test_a_session_lapses_and_dies_with_the_token():
    auth = ViewerAuth(TOKEN, session_s=60)
    value = auth.session(now=1_000.0)
    sid, expires, mac = value.split(".")
    assert expires == "1060" and len(sid) == 43 and len(mac) == 64
    assert auth.valid_session(value, now=1_059.0) and not auth.valid_session(value, now=1_061.0)
    assert auth.live_sessions == 0  # a lapsed session is forgotten once seen
    value = auth.session(now=1_000.0)
    sid, expires, mac = value.split(".")
    assert not ViewerAuth("another token").valid_session(value, now=1_000.0)
    assert not auth.valid_session(f"{sid}.0{expires}.{mac}", now=1_000.0)
    assert not auth.valid_session(f"{sid}.9999999999.{mac}", now=1_000.0)  # a later expiry, same MAC
    assert not ViewerAuth(None).valid_session(value) and ViewerAuth(None).required is False
    assert auth.valid_session(value, now=1_000.0)
    # The same token, another process (a restarted service): the HMAC is right, the session unknown.
    again = ViewerAuth(TOKEN, session_s=60)
    assert again._mac(sid, int(expires)) == mac and not again.valid_session(value, now=1_000.0)
    assert auth.end(value) and not auth.valid_session(value, now=1_000.0) and not auth.end(value)


# -- what it shows -----------------------------------------------------------------------------


def test_the_runs_list_shows_state_and_progress_and_its_rows_refresh(client):
    _login(client)
    page = client.get("/viewer/").text
    assert 'data-poll="/viewer/partials/runs"' in page
    rows = client.get("/viewer/partials/runs").text
    assert DONE in rows and LIVE in rows and "state-succeeded" in rows and "state-running" in rows
    assert '<progress value="10" max="40">' in rows and "10 / 40" in rows and "24 / 24" in rows
    assert "data-final" in client.get(f"/viewer/partials/runs/{DONE}").text  # an ended run stops polling
    assert "data-final" not in client.get(f"/viewer/partials/runs/{LIVE}").text


def test_a_live_runs_page_polls_its_counts_and_charts_with_its_filter(client, manager):
    _login(client)
    live = client.get(f"/viewer/runs/{LIVE}?min_reward=0.5").text
    url = unescape(re.search(r'id="run-overview" data-poll="([^"]*)"', live)[1])
    assert url == f"/viewer/partials/runs/{LIVE}/overview?min_reward=0.5"
    fragment = client.get(url).text
    charts = json.loads(re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', fragment)[1])
    assert all("min_reward=0.5" in link for link in charts["errors"]["links"])  # a bar keeps the filter
    assert '<div class="value">10</div>' in fragment and "data-final" not in fragment
    done = client.get(f"/viewer/runs/{DONE}").text
    assert 'id="run-overview">' in done and "/overview" not in done  # an ended run is not polled
    assert "data-final" in client.get(f"/viewer/partials/runs/{DONE}/overview").text
    assert client.get(f"/viewer/partials/runs/{LIVE}/overview?min_reward=x").status_code == 400


def test_a_run_page_of_a_two_predictor_program(client, manager):
    _login(client)
    page = client.get(f"/viewer/runs/{DONE}")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'self'; script-src 'self'")
    assert page.headers["cache-control"] == "no-store"
    assert "/viewer/static/vendor/chart.umd.min.js" in page.text and "rows 1–24 of 24" in page.text
    charts = json.loads(re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page.text)[1])
    rows = read_rollouts(resolve(str(manager.root / "out" / "done"))).to_pylist()
    assert sum(charts["histogram"]["counts"]) == sum(r["reward"] is not None for r in rows)
    assert set(charts["errors"]["labels"]) == {r["error"].split(":")[0] for r in rows if r["error"]}
    for field in ("city", "quantity", "item", "reply"):  # the program's own output fields
        assert f"<b>{field}</b>" in page.text

    top = client.get(f"/viewer/runs/{DONE}?min_reward=1&max_reward=&error=(none)&example_id=").text
    expected = [r for r in rows if r["reward"] == 1.0 and r["error"] is None]
    assert f"rows 1–{len(expected)} of {len(expected)}" in top
    assert re.findall(r'data-rollout="(\w+)"', top) == [r["rollout_id"] for r in expected]

    link = next(u for u in _urls(top) if "/rollouts/" in u)
    trace = client.get(link)
    row = next(r for r in rows if r["rollout_id"] == link.split("/rollouts/")[1].split("?")[0])
    assert trace.status_code == 200
    assert re.findall(r'<code class="predictor">(\w+)</code>', trace.text) == ["extract", "confirm"]
    completions = [unescape(c) for c in re.findall(r'<pre class="completion">(.*?)</pre>', trace.text, re.S)]
    assert completions == [call["completion"] for call in row["trace"]]
    assert "&lt;b&gt;" in trace.text  # the completion's markup is shown, not rendered
    assert "back=min_reward" in link and 'href="/viewer/runs/' + DONE + "?min_reward=1.0" in trace.text


def test_a_call_answered_from_dspys_cache_says_so_instead_of_token_counts(client):
    _login(client)
    i = next(i for i in range(24) if cached(i))
    page = client.get(f"/viewer/runs/{DONE}/rollouts/{record(i).rollout_id}").text
    tokens = [unescape(t) for t in re.findall(r'<td class="tokens">(.*?)</td>', page, re.S)]
    assert "answered from DSPy's cache" in tokens[0] and "?" not in tokens[0]
    assert tokens[1] == "30 prompt · 7 completion"
    other = client.get(f"/viewer/runs/{DONE}/rollouts/{record(i + 1).rollout_id}").text
    assert "DSPy's cache" not in other and f"{40 + i + 1} prompt · 12 completion" in other


def test_a_run_status_and_its_page_read_each_part_once(manager, monkeypatch):
    """The service's status and the viewer count with one per-file cache: a part the status has
    read is not read again for the run's page."""
    reads = []

    class Counts(PartCounts):
        def read(self, location, path):
            reads.append(path)
            return super().read(location, path)

    monkeypatch.setattr(manager, "counts", Counts(Overview.of, OVERVIEW_COLUMNS))
    parts = committed_files(resolve(str(manager.root / "out" / "live")))
    with TestClient(create_app(manager), follow_redirects=False) as c:
        assert manager.status(LIVE).rollouts_done == 10 and sorted(reads) == parts
        page = c.get(f"/viewer/runs/{LIVE}", headers=AUTH).text
        assert "rows 1–10 of 10" in page and sorted(reads) == parts


def test_pages_of_rows_and_bad_requests(client):
    _login(client)
    assert "rows 1–10 of 10" in client.get(f"/viewer/runs/{LIVE}").text
    assert "no rows past row 10" in client.get(f"/viewer/runs/{LIVE}?offset=50").text
    assert client.get(f"/viewer/runs/{LIVE}?min_reward=abc").status_code == 400
    assert client.get(f"/viewer/runs/{LIVE}?min_reward=nan").status_code == 400
    queued = client.get(f"/viewer/runs/{QUEUED}")
    assert queued.status_code == 200 and "no rollout matches" in queued.text and "state-pending" in queued.text
    assert client.get("/viewer/runs/run-nope").status_code == 404
    assert client.get(f"/viewer/runs/{LIVE}/rollouts/{'0' * 32}").status_code == 404


def test_under_a_route_prefix_every_link_and_the_cookie_stay_under_it(manager):
    with TestClient(create_app(manager), root_path="/raydspy", follow_redirects=False) as c:
        response = c.get("/raydspy/viewer/runs/" + DONE)
        assert response.headers["location"].startswith("/raydspy/viewer/login?next=%2Fraydspy%2Fviewer%2Fruns%2F")
        login = c.post("/raydspy/viewer/login", data={"token": TOKEN, "next": f"/raydspy/viewer/runs/{DONE}"})
        assert login.headers["location"] == f"/raydspy/viewer/runs/{DONE}"
        assert "path=/raydspy/viewer" in login.headers["set-cookie"].lower()
        page = c.get(f"/raydspy/viewer/runs/{DONE}", headers=AUTH)
        assert [u for u in _urls(page.text) if u.startswith("/")] and all(
            u.startswith("/raydspy/viewer") for u in _urls(page.text) if u.startswith("/")
        )


def test_the_vendored_chart_library_is_the_locked_version_with_its_licenses():
    lock = json.loads((VIEWER / "frontend" / "package-lock.json").read_text())
    wanted = json.loads((VIEWER / "frontend" / "package.json").read_text())["dependencies"]["chart.js"]
    version = lock["packages"]["node_modules/chart.js"]["version"]
    assert version == wanted
    bundle = (VIEWER / "static" / "vendor" / "chart.umd.min.js").read_text()
    assert bundle.startswith(f"/*!\n * Chart.js v{version}\n") and "Released under the MIT License" in bundle[:300]
    for name in ("chart.js.LICENSE.md", "kurkle-color.LICENSE.md"):
        assert "MIT License" in (VIEWER / "static" / "vendor" / name).read_text()


# -- raydspy view, and the service on Ray Serve --------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "raydspy.cli.main", "view", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _get(url: str, **kwargs):
    import requests

    deadline = time.monotonic() + 60
    while True:
        try:
            return requests.get(url, timeout=10, allow_redirects=False, **kwargs)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("token", [None, "cli-token"])
def test_raydspy_view_serves_a_folder_of_outputs(manager, token):
    port = _free_port()
    process = _serve_cli(
        [str(manager.root / "out"), "--port", str(port)], {"RAYDSPY_VIEW_TOKEN": token} if token else {}
    )
    try:
        page = _get(f"http://127.0.0.1:{port}/viewer/")
        if token:
            assert page.status_code == 303 and "/viewer/login" in page.headers["location"]
            page = _get(f"http://127.0.0.1:{port}/viewer/", headers={"Authorization": f"Bearer {token}"})
        assert page.status_code == 200 and "/viewer/runs/done" in page.text and "/viewer/runs/live" in page.text
        run = _get(
            f"http://127.0.0.1:{port}/viewer/runs/done?error=(any)",
            cookies={},
            headers=({"Authorization": f"Bearer {token}"} if token else {}),
        )
        assert run.status_code == 200 and "(filtered)" in run.text
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/viewer/" in output


def test_through_ray_serve_under_its_route_prefix(ray_local, manager):
    import requests
    from ray import serve
    from ray.serve.context import _get_global_client

    from raydspy.service.app import build_app

    settings = _settings(manager.root).model_dump(mode="json") | {"token": TOKEN}
    serve.start(http_options={"host": "127.0.0.1", "port": _free_port()})
    port = _get_global_client().http_config.port
    serve.run(build_app(settings), name="raydspy-viewer", route_prefix="/raydspy-viewer")
    base = f"http://127.0.0.1:{port}/raydspy-viewer"
    try:
        first = requests.get(f"{base}/viewer/runs/{DONE}", timeout=30, allow_redirects=False)
        assert first.status_code == 303
        assert first.headers["location"].startswith("/raydspy-viewer/viewer/login?next=%2Fraydspy-viewer%2Fviewer")
        with requests.Session() as browser:
            form = browser.get(f"http://127.0.0.1:{port}" + first.headers["location"], timeout=30)
            assert form.status_code == 200 and 'action="/raydspy-viewer/viewer/login"' in form.text
            next_path = re.search(r'name="next" value="([^"]+)"', form.text)[1]
            page = browser.post(f"{base}/viewer/login", data={"token": TOKEN, "next": unescape(next_path)}, timeout=30)
            assert page.status_code == 200 and page.url == f"{base}/viewer/runs/{DONE}"
            assert "rows 1–24 of 24" in page.text and TOKEN not in page.url
            assert browser.get(f"{base}/viewer/static/vendor/chart.umd.min.js", timeout=30).status_code == 200
    finally:
        serve.delete("raydspy-viewer")
