"""The rollout viewer in a real headless Chromium (Playwright driving Debian's chromium) on a real
run: the HTTP service on Ray Serve, beside the vLLM teacher, collects a few orders (the
two-predictor program, n=2) from the teacher; the browser signs in, watches the runs list refresh,
filters the run's rollouts by reward, opens a rollout's trace and finds each LM call's completion
and token counts as the Parquet row holds them (DSPy's cache is off: every call reaches the
teacher). A second test opens ``raydspy view`` on the same output and filters by clicking a bar
of the reward histogram; a third watches a run's page refresh its counts and charts as parts land.

Screenshots go to the test's folder; with ``RAYDSPY_UPDATE_SCREENSHOTS=1`` they also replace
docs/viewer.png and docs/viewer-trace.png.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from raydspy.core.storage import resolve
from raydspy.datasets import orders_path
from raydspy.pipeline.summary import read_rollouts
from raydspy.service.schemas import RunState

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
TOKEN = "e2e-viewer-token-8d1f"
APP = "raydspy-e2e-viewer"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        message = "chromium is missing: scripts/setup.sh installs it (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def service_run(teacher, tmp_path_factory):
    """The service deployed on the teacher's Serve instance; one finished run of 4 orders × 2."""
    from ray import serve
    from ray.serve.context import _get_global_client

    from raydspy.service.app import build_app

    root = tmp_path_factory.mktemp("viewer-e2e")
    (root / "in").mkdir()
    lines = orders_path("train.jsonl").read_text().splitlines()[:4]
    (root / "in" / "orders.jsonl").write_text("\n".join(lines) + "\n")
    settings = {
        "token": TOKEN,
        "input_prefixes": [str(root / "in")],
        "output_prefixes": [str(root / "out")],
        "teacher_prefixes": [teacher.base_url],
        "default_teacher_url": teacher.base_url,
        "default_teacher_model": teacher.model,
        "state_uri": str(root / "state"),
        "dispatch_interval_s": 0.5,
    }
    serve.run(build_app(settings), name=APP, route_prefix=f"/{APP}")
    base = f"http://127.0.0.1:{_get_global_client().http_config.port}/{APP}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {
        "program": "raydspy.programs.orders:program",
        "rewards": "raydspy.programs.orders:rewards",
        "input_uri": str(root / "in" / "orders.jsonl"),
        "output_uri": str(root / "out" / "orders"),
        "n": 2,
        "id_field": "id",
        # DSPy's cache off: every call reaches the teacher, so traces (and the screenshots) show
        # its token counts and latencies, not an earlier session's cached answers.
        "teacher": {"structured_outputs": True, "temperature": 1.0, "max_tokens": 96, "cache": False},
    }
    try:
        response = requests.post(f"{base}/v1/runs", json=body, headers=auth, timeout=60)
        assert response.status_code == 201, response.text
        run_id = response.json()["id"]
        deadline = time.monotonic() + 900
        while True:
            status = requests.get(f"{base}/v1/runs/{run_id}", headers=auth, timeout=60).json()
            if RunState(status["state"]).terminal or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert status["state"] == "SUCCEEDED" and status["rollouts_done"] == 8, status
        yield base, run_id, root / "out" / "orders"
    finally:
        serve.delete(APP)


def _screenshot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("RAYDSPY_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(path, REPO / "docs" / name)


def test_a_browser_signs_in_filters_by_reward_and_opens_a_trace(service_run, tmp_path):
    from playwright.sync_api import sync_playwright

    base, run_id, output = service_run
    rows = read_rollouts(resolve(str(output))).to_pylist()
    rewards = Counter(r["reward"] for r in rows if r["reward"] is not None)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        urls: list[str] = []
        page.on("request", lambda request: urls.append(request.url))
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        page.goto(f"{base}/viewer/")
        assert page.url.startswith(f"{base}/viewer/login?next=")  # signed out: the login form
        page.fill("#token", TOKEN)
        page.click(".login button[type=submit]")
        page.wait_for_url(f"{base}/viewer/")
        cookie = next(c for c in context.cookies() if c["name"] == "raydspy_viewer")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
        assert page.evaluate("document.cookie") == ""  # scripts cannot read the session
        with page.expect_response(lambda r: "/viewer/partials/runs" in r.url and r.status == 200):
            pass  # the runs list refreshes itself
        assert "SUCCEEDED" in page.inner_text(f"tr[data-run='{run_id}']")

        page.click(f"a:text-is('{run_id}')")
        page.wait_for_function("() => window.Chart && Chart.getChart('reward-histogram')")
        drawn = page.evaluate("Chart.getChart('reward-histogram').data.datasets[0].data")
        assert drawn == [rewards[v] for v in sorted(rewards)]
        assert page.locator("tr[data-rollout]").count() == len(rows) == 8
        _screenshot(page, tmp_path, "viewer.png")

        best = max(r["reward"] for r in rows if r["error"] is None and r["reward"] is not None)
        page.fill("input[name=min_reward]", repr(best))
        page.click(".filters button[type=submit]")
        page.wait_for_url(lambda url: "min_reward=" in url)
        wanted = [r for r in rows if r["reward"] is not None and r["reward"] >= best]
        shown = page.eval_on_selector_all("tr[data-rollout]", "rows => rows.map(r => r.dataset.rollout)")
        assert shown == [r["rollout_id"] for r in wanted]

        row = next(r for r in wanted if r["error"] is None)
        page.click(f"tr[data-rollout='{row['rollout_id']}'] a.open")
        page.wait_for_url(lambda url: "/rollouts/" in url)
        predictors = page.locator("code.predictor").all_text_contents()
        completions = page.locator("pre.completion").all_text_contents()
        assert predictors == [call["predictor"] for call in row["trace"]] == ["extract", "confirm"]
        assert completions == [call["completion"] for call in row["trace"]]
        tokens = page.locator("td.tokens").all_text_contents()
        assert not any(call["cached"] for call in row["trace"])
        assert tokens == [f"{c['prompt_tokens']} prompt · {c['completion_tokens']} completion" for c in row["trace"]]
        assert json.loads(row["outputs"])["reply"] in page.inner_text(".io")
        _screenshot(page, tmp_path, "viewer-trace.png")

        page.click("nav.crumbs a >> nth=1")  # back to the run, the filter kept
        page.wait_for_url(lambda url: f"/runs/{run_id}?" in url and "min_reward=" in url)
        browser.close()
    assert not errors and not [u for u in urls if TOKEN in u]
    assert all(u.startswith(base) or u.startswith("data:") for u in urls)  # nothing from elsewhere


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _raydspy_view(output: Path):
    """``raydspy view OUTPUT`` as its own process (no token: loopback only); yields its base URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAYDSPY_VIEW_TOKEN"}
    process = subprocess.Popen(
        [sys.executable, "-m", "raydspy.cli.main", "view", str(output), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{base}/viewer/", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()


def test_raydspy_view_filters_by_a_click_on_the_histogram(service_run):
    from playwright.sync_api import sync_playwright

    _, _, output = service_run
    rows = read_rollouts(resolve(str(output))).to_pylist()
    with _raydspy_view(output) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/viewer/runs/orders")
        page.wait_for_function("() => window.Chart && Chart.getChart('reward-histogram')")
        # The first bar's centre, from Chart.js's own layout of the canvas.
        x, y, value = page.evaluate(
            """() => { const c = Chart.getChart('reward-histogram'); const bar = c.getDatasetMeta(0).data[0];
                       return [bar.x, (bar.y + bar.base) / 2, c.data.labels[0]]; }"""
        )
        box = page.locator("#reward-histogram").bounding_box()
        page.mouse.click(box["x"] + x, box["y"] + y)
        page.wait_for_url(lambda url: "min_reward=" in url)
        low = min(r["reward"] for r in rows if r["reward"] is not None)
        assert float(value) == pytest.approx(low, abs=1e-3)
        shown = page.eval_on_selector_all("tr[data-rollout]", "rows => rows.map(r => r.dataset.rollout)")
        assert shown == [r["rollout_id"] for r in rows if r["reward"] == low]
        browser.close()


def test_a_live_runs_counts_and_charts_refresh_as_its_parts_land(tmp_path):
    """``raydspy view`` on an output still being written (parts, no dataset card yet): the run's
    page polls its counts and charts, which grow as parts are committed, and stops polling once
    the card is written (the run ended). No teacher: the parts come from raydspy's committer."""
    from playwright.sync_api import sync_playwright
    from viewer_outputs import write_parts

    output = tmp_path / "live"
    write_parts(str(output), 10, 5, manifest=False)
    histogram = "Chart.getChart('reward-histogram')"
    drawn = f"(window.Chart && {histogram}) ? {histogram}.data.datasets[0].data.reduce((a, b) => a + b, 0) : -1"
    with _raydspy_view(output) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{base}/viewer/runs/live")
        page.wait_for_function(f"() => ({drawn}) > 0")
        assert page.locator(".cards .value").first.inner_text() == "10"

        write_parts(str(output), 20, 5, start=10, manifest=False)
        rows = read_rollouts(resolve(str(output))).to_pylist()
        scored = sum(r["reward"] is not None for r in rows)
        page.wait_for_function(f"() => ({drawn}) === {scored}", timeout=30_000)
        assert page.locator(".cards .value").first.inner_text() == "30"
        failed = Counter(r["error"].split(":")[0] for r in rows if r["error"])
        bars = page.evaluate(
            "() => { const c = Chart.getChart('error-breakdown'); return [c.data.labels, c.data.datasets[0].data]; }"
        )
        assert dict(zip(*bars)) == failed

        (output / "README.md").write_text("---\nlicense: other\n---\n")  # what a run writes last
        page.wait_for_selector("#run-overview [data-final]", state="attached", timeout=30_000)
        assert "WRITTEN" in page.inner_text("#run-status")
        browser.close()
    assert not errors
