"""What ``raydspy collect`` prints, run as a user runs it (a child process starting its own local
Ray): raydspy's status lines, progress and summary, and one ``logs:`` line naming the folder that
holds Ray's and Ray Data's logs; those logs on the terminal only with ``--verbose``; a teacher that
does not answer still reported in one line.

The teacher is a fake OpenAI server (the point is the terminal, not the LM); the program is the
``orders`` preset's two-stage program, with structured outputs.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

pytestmark = pytest.mark.ray  # each command starts its own local Ray, as the CLI does

REPO = Path(__file__).resolve().parents[1]

#: Lines of Ray's, Ray Data's and Serve's own logs, as they look on a terminal (text or JSON).
LIBRARY_LINES = re.compile(
    r"\bINFO\b|\bDEBUG\b|^\s*\{|Running Dataset|Starting execution of Dataset|Execution plan|Started a local Ray"
)

#: What raydspy itself prints on stderr in a run: its status lines, the progress lines it prints
#: off a terminal (`raydspy.cli.progress.ProgressDisplay`), and where the logs are.
RAYDSPY_LINES = re.compile(r"^(logs: |collecting: |rollouts \d+/\d+|resuming: |error: )")


def _orders_teacher(request, k):
    """A valid answer of each stage of the orders program (JSON: structured outputs)."""
    if "`reply`" in request["messages"][0]["content"]:
        return json.dumps({"reply": "Your 2 mugs go to Oslo."})
    return json.dumps({"city": "Oslo", "quantity": 2, "item": "mugs"})


def _collect(output: Path, teacher_url: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "500"}
    env.pop("RAY_ADDRESS", None)  # a local Ray of its own, as `raydspy collect` starts one
    command = [
        *(sys.executable, "-m", "raydspy.cli.main", "collect", "--task", "orders", "--limit", "3", "--n", "2"),
        *("--output", str(output), "--teacher-url", teacher_url, "--teacher-model", "fake-model", "--no-cache"),
        *("--num-cpus", "4", "--actors", "1", "--threads", "2", *extra),
    ]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _logs_folder(stderr: str) -> Path:
    found = re.search(r"^logs: (\S+)", stderr, re.MULTILINE)
    assert found, stderr
    return Path(found.group(1))


def test_collect_prints_progress_summary_and_where_the_logs_are(tmp_path):
    with FakeOpenAI(reply=_orders_teacher) as teacher:
        done = _collect(tmp_path / "out", teacher.url)
    assert done.returncode == 0, done.stdout + done.stderr
    terminal = done.stdout + done.stderr
    assert not [line for line in terminal.splitlines() if LIBRARY_LINES.search(line)], terminal
    assert all(RAYDSPY_LINES.match(line) for line in done.stderr.splitlines()), done.stderr
    assert "raydspy run summary" in done.stdout and re.search(r"rows in output\W+6\b", done.stdout), done.stdout
    assert len(terminal.splitlines()) < 30, terminal

    folder = _logs_folder(done.stderr)
    assert folder.is_dir() and folder.name == "logs" and folder.parent.name.startswith("session_")
    assert (folder / "ray-data" / "ray-data.log").is_file()  # Ray Data's own log file
    (own,) = folder.glob("raydspy-collect-*.log")  # this command's: what it kept off the terminal
    log = own.read_text()
    assert "Started a local Ray instance" in log and "Starting execution of Dataset" in log, log[-3000:]


def test_verbose_shows_the_libraries_logs(tmp_path):
    with FakeOpenAI(reply=_orders_teacher) as teacher:
        done = _collect(tmp_path / "out", teacher.url, "--verbose")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Started a local Ray instance" in done.stderr and "Starting execution of Dataset" in done.stderr
    assert "raydspy run summary" in done.stdout
    folder = _logs_folder(done.stderr)  # the workers' and Serve's logs are still only there
    assert folder.is_dir() and not list(folder.glob("raydspy-collect-*.log"))


def test_a_teacher_that_does_not_answer_is_one_error_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # nothing listens there once closed
    done = _collect(tmp_path / "out", url)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"teacher unreachable at {url}" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not LIBRARY_LINES.search(done.stdout + done.stderr)
    assert done.stdout == ""
