"""Every panel of the Grafana dashboards (dashboards/*.json) plots real data in a real Prometheus.

A Prometheus (Debian's ``prometheus`` binary, which scripts/setup.sh installs) runs on a free
loopback port with a temporary TSDB and a scrape job that finds its targets the way an operator's
does: through the service-discovery file that Ray writes in the head's session dir
(``<temp-dir>/session_*/prom_metrics_service_discovery.json``, `file_sd_configs`), scraped every
second. Two real collection jobs (jobs/collect.py) run side by side on the real `ray start --head` of
tests/ray_head.py, each against its own loopback fake teacher: one whose every third completion
does not parse (some rollouts fail, so the error counter exists) and one that never fails (Ray
never exports its error counter). Then the scrape target is up, and each expression of each panel,
its ``$run`` set to either run (its output URI, regex-escaped as Grafana does), returns at least one
series with a finite value over the run: no panel stays empty on real data, failures or none.
The test skips only when the ``prometheus`` binary is missing.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from fake_openai import slow_teacher
from ray_head import REPO
from test_jobs import _wait_for_job
from test_metrics import submit_collect_job

from raydspy.programs import banking77

#: Skips a test, before the session's Ray head starts, when there is no Prometheus to run.
NEEDS_PROMETHEUS = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="the prometheus binary is missing (scripts/setup.sh installs it: apt-get install prometheus)",
)
#: Both collection jobs end within this (about 50 s on a busy 2-core machine, most of it job start-up).
JOBS_TIMEOUT_S = 150.0
SD_FILE = "prom_metrics_service_discovery.json"  # ray._private.ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE


def _dashboard_exprs() -> list[tuple[str, str, str]]:
    """``(dashboard file, panel title, expr)`` of every target of every panel in dashboards/*.json."""
    found = []
    for path in sorted((REPO / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


def promql_regex_literal(value: str) -> str:
    """``value`` as a regex matching only itself, inside a double-quoted PromQL string (what
    Grafana puts in ``=~"$run"``): regex metacharacters escaped, then the string's own escapes."""
    regex = re.sub(r"([\\.+*?()|\[\]{}^$-])", r"\\\1", value)
    return regex.replace("\\", "\\\\").replace('"', '\\"')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sd_file(temp_dir: str, timeout_s: float = 30.0) -> Path:
    """The service-discovery file Ray 2.60 writes in the head's session dir (refreshed every 5 s;
    a link to it also sits at ``<temp-dir>/prom_metrics_service_discovery.json``, the path that
    ``ray metrics launch-prometheus``'s config reads)."""
    deadline = time.monotonic() + timeout_s
    while True:
        files = sorted(Path(temp_dir).glob(f"session_2*/{SD_FILE}"))
        if files:
            return files[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no {SD_FILE} under {temp_dir}/session_*/ after {timeout_s} s")
        time.sleep(0.5)


@pytest.fixture
def prometheus(ray_head):
    """A Prometheus scraping the head's service-discovery targets every second; yields its URL."""
    binary = shutil.which("prometheus")
    assert binary is not None  # the tests that use this fixture skip without it (NEEDS_PROMETHEUS)
    sd_file = _sd_file(ray_head.temp_dir)
    node_port = ray_head.metrics_url.rsplit(":", 1)[1].removesuffix("/metrics")
    root = Path(tempfile.mkdtemp(prefix="prom-", dir="/tmp"))
    config = root / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "- job_name: ray\n"
        "  file_sd_configs:\n"
        "  - files:\n"
        f"    - '{sd_file}'\n"
        "    refresh_interval: 5s\n"
        # Ray lists the node by its routable IP (here the machine's, not --node-ip-address), plus
        # the autoscaler's and dashboard's metrics ports, Ray's fixed defaults 44217 and 44227 that
        # on a shared machine belong to whichever Ray bound them first: scrape this head's node
        # only, over loopback.
        "  relabel_configs:\n"
        "  - source_labels: [__address__]\n"
        f"    regex: '.+:{node_port}'\n"
        "    action: keep\n"
        "  - source_labels: [__address__]\n"
        "    regex: '.+:([0-9]+)'\n"
        "    target_label: __address__\n"
        "    replacement: '127.0.0.1:$1'\n"
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "prometheus.log", "w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {process.returncode}:\n{(root / 'prometheus.log').read_text()}"
                )
            try:
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready in 30 s:\n{(root / 'prometheus.log').read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _query(url: str, path: str, **params) -> list[dict]:
    body = requests.get(f"{url}/api/v1/{path}", params=params, timeout=10).json()
    assert body["status"] == "success", (params, body)
    return body["data"]["result"]


def _finite(series: list[dict]) -> list[float]:
    """The finite sample values of a query's result (instant vector or range matrix)."""
    values = [float(v) for s in series for _, v in (s["values"] if "values" in s else [s["value"]])]
    return [v for v in values if math.isfinite(v)]


@NEEDS_PROMETHEUS
def test_every_dashboard_query_returns_data_in_prometheus(ray_head, prometheus, tmp_path):
    """Two runs side by side: one with failed rollouts, one without (whose error counter Ray never
    exports: the error panels must still show 0, not nothing)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    exprs = _dashboard_exprs()
    assert exprs and all("$run" in e for _, _, e in exprs)
    sample = banking77.write_sample(tmp_path / "train.csv", size=8)  # 8 examples x 2 rollouts: 16 rows a run
    outputs = {"faulty": str(tmp_path / "faulty"), "clean": str(tmp_path / "clean")}
    # Every third completion of the faulty run's teacher does not parse: error rows.
    teachers = {"faulty": slow_teacher(delay_s=0.5, bad_every=3), "clean": slow_teacher(delay_s=0.5)}
    client = JobSubmissionClient(ray_head.dashboard_url)
    started = time.time()
    deadline = time.monotonic() + JOBS_TIMEOUT_S
    jobs: dict[str, str] = {}
    try:
        jobs = {name: submit_collect_job(client, sample, outputs[name], teachers[name].url) for name in outputs}
        for name, job_id in jobs.items():
            status = _wait_for_job(client, job_id, timeout_s=max(0.0, deadline - time.monotonic()))
            assert status == JobStatus.SUCCEEDED, (name, status, client.get_job_logs(job_id)[-3000:])
    finally:
        for job_id in jobs.values():
            if not client.get_job_status(job_id).is_terminal():
                client.stop_job(job_id)  # timed out: leave nothing running on the session's head
        for teacher in teachers.values():
            teacher.close()
    runs = {name: promql_regex_literal(output) for name, output in outputs.items()}
    # Workers report to the node every second and Prometheus scrapes every second: wait until both
    # runs' last counts are in the TSDB (Ray keeps exporting a finished run's series for a while).
    written = " or ".join(
        f'sum by (run) (ray_raydspy_rollouts_written_total{{run=~"{r}"}}) >= 16' for r in runs.values()
    )
    deadline = time.monotonic() + 20
    while len(_finite(_query(prometheus, "query", query=written))) < len(runs):
        assert time.monotonic() < deadline, (
            f"never all 16 rows in Prometheus: {_query(prometheus, 'query', query=written)}"
        )
        time.sleep(1.0)
    time.sleep(2.0)  # a couple more scrapes, so windows ending now hold the runs' last samples
    ended = time.time()

    up = _query(prometheus, "query", query='up{job="ray"}')
    node = ray_head.metrics_url.removeprefix("http://").removesuffix("/metrics")
    assert {s["metric"]["instance"]: s["value"][1] for s in up} == {node: "1"}, up

    errors = {
        name: _finite(_query(prometheus, "query", query=f'sum(ray_raydspy_rollout_errors_total{{run=~"{r}"}})'))
        for name, r in runs.items()
    }
    assert errors["faulty"] and errors["faulty"][0] > 0 and not errors["clean"], errors
    empty = []
    for name, run in runs.items():
        for dashboard, title, expr in exprs:
            query = expr.replace("$run", run)
            result = _query(prometheus, "query_range", query=query, start=started, end=ended, step="1s")
            if not _finite(result):
                empty.append(f"{name} run, {dashboard} / {title}: {query} -> {result}")
    assert not empty, "panels with no finite value on a real run:\n" + "\n".join(empty)
    # The error panels of the run without failures read 0 (not "no data"), the other run's more.
    for _, title, expr in exprs:
        if "rollout_errors" in expr:
            for name, run in runs.items():
                result = _query(
                    prometheus, "query_range", query=expr.replace("$run", run), start=started, end=ended, step="1s"
                )
                values = _finite(result)
                assert (max(values) > 0) if name == "faulty" else (set(values) == {0.0}), (name, title, result)


def test_promql_regex_literal_matches_only_itself():
    value = '/tmp/a-b_c.d/x+y(1)"q'
    literal = promql_regex_literal(value)
    regex = json.loads(f'"{literal}"')  # PromQL's double-quoted strings unescape as JSON's do here
    assert re.fullmatch(regex, value) and not re.fullmatch(regex, value.replace(".", "x"))
