"""Where a command's output goes (`raydspy.cli.logs`): raydspy's lines on the terminal, the
libraries' logs in the log file, and what a user must act on still on the terminal. No Ray: the
routing runs in a child process whose stdout and stderr stand for the terminal; the command line
against a real local Ray is in tests/test_cli_output.py."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from raydspy.cli.logs import Actionable
from raydspy.cli.main import build_parser
from raydspy.cli.progress import live_redirects

REPO = Path(__file__).resolve().parents[1]

# What a command does in the child process: raydspy's status line and summary, and the kinds of
# output the libraries make (a non-propagating logger with its own stderr handler, as Ray's has;
# a Python warning; print; a write to descriptor 2 from outside Python's streams, as C++ does; the
# root logger's handlers replaced, as importing Ray Serve LLM does).
SCRIPT = textwrap.dedent(
    """
    import logging, os, sys, warnings
    from raydspy.cli import common
    from raydspy.cli.logs import route_logs

    ray_like = logging.getLogger("ray.data")
    ray_like.addHandler(logging.StreamHandler())  # bound to sys.stderr now, as Ray Data's is
    ray_like.propagate = False
    with route_logs("collect", verbose={verbose}, console=common.console, consoles=[common.out]) as route:
        common.console.print("collecting: program p")
        ray_like.info("Running Dataset: dataset_1")
        logging.getLogger("httpx").info("HTTP Request: GET http://teacher/v1/models")
        logging.getLogger("LiteLLM").warning("provider list is long")
        warnings.warn("a deprecated keyword", DeprecationWarning)
        print("Give Feedback / Get Help")
        os.write(2, b"E0000 fork_posix.cc: Other threads are currently calling into gRPC\\n")
        logging.getLogger().handlers = [logging.StreamHandler()]  # as importing Ray Serve LLM does
        logging.getLogger("raydspy.pipeline.driver").warning("skipping 2 invalid rows; listed in bad.jsonl")
        logging.getLogger("raydspy.pipeline.driver").info("plan: 4 rollouts")
        common.out.print("raydspy run summary")
    print("after: on the terminal again")
    """
)


def _run(*, verbose: bool) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", SCRIPT.format(verbose=verbose)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_quiet_the_terminal_gets_raydspys_lines_and_the_log_file_the_rest():
    done = _run(verbose=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["raydspy run summary", "after: on the terminal again"]
    err = done.stderr.splitlines()
    # No Ray: the log file stays in the temp folder, and its path is said at the end.
    assert err[:2] == ["collecting: program p", "warning: skipping 2 invalid rows; listed in bad.jsonl"]
    assert len(err) == 3 and (match := re.fullmatch(r"logs: (\S+raydspy-collect-\S+\.log)", err[2]))
    log = Path(match.group(1)).read_text()
    for line in (
        "Running Dataset: dataset_1",
        "HTTP Request: GET",
        "provider list is long",
        "DeprecationWarning: a deprecated keyword",
        "Give Feedback / Get Help",
        "fork_posix.cc",
        "skipping 2 invalid rows",
        "plan: 4 rollouts",
    ):
        assert line in log
    assert "collecting: program p" not in log and "raydspy run summary" not in log
    Path(match.group(1)).unlink()


def test_verbose_the_libraries_log_on_the_terminal_and_no_file_is_made():
    done = _run(verbose=True)
    assert done.returncode == 0, done.stderr
    for line in ("Running Dataset: dataset_1", "HTTP Request: GET", "fork_posix.cc", "skipping 2 invalid rows"):
        assert line in done.stderr
    assert "Give Feedback / Get Help" in done.stdout and "logs:" not in done.stderr


# On a terminal, while a spinner and a progress bar run: Ray's console handler writes to whatever
# ``sys.stderr`` is when it emits (`ray._private.log.PlainRayHandler`), which a live display that
# redirects the process's streams would carry to the terminal.
LIVE_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    from raydspy.cli import common
    from raydspy.cli.logs import route_logs
    from raydspy.cli.progress import ProgressDisplay, status

    class AtEmit(logging.StreamHandler):
        stream = property(lambda self: sys.stderr, lambda self, value: None)

    serve_like = logging.getLogger("ray.serve")
    serve_like.addHandler(AtEmit())
    serve_like.setLevel(logging.INFO)
    serve_like.propagate = False
    with route_logs("demo", verbose=False, console=common.console, consoles=[common.out]):
        with status(common.console, "deploying the teacher"):
            serve_like.info("Deploying new version of Deployment(name='LLMServer')")
            time.sleep(0.3)
        bar = ProgressDisplay(common.console, "rollouts")
        bar.start(2)
        print("Give Feedback / Get Help")
        serve_like.info("Application 'teacher' is ready")
        bar.update(2)
        time.sleep(0.3)
        bar.stop()
        common.console.print("teacher ready")
    """
)


def test_on_a_terminal_live_displays_do_not_carry_the_libraries_output_back():
    import os
    import pty

    controller, terminal = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-c", LIVE_SCRIPT],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "TERM": "xterm", "COLUMNS": "120"},
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    assert child.wait(timeout=60) == 0, shown
    text = shown.decode(errors="replace")
    assert "2/2" in text and "teacher ready" in text  # the bar drew, the status line printed
    assert "Deploying new version" not in text and "is ready" not in text and "Give Feedback" not in text
    log = re.search(r"logs: (\S+\.log)", text)
    assert log and "is ready" in Path(log.group(1)).read_text()  # no Ray: the file stays in the temp folder
    Path(log.group(1)).unlink()


def _record(name: str, level: int, message: str, **extra) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


IDLE = "Operator x is running but has no outputs for 30 seconds. Execution may be slower than expected."
HANG = "Cluster resources are not enough to run any task from x. The job may hang forever unless the cluster scales up."


@pytest.mark.parametrize(
    ("name", "level", "message", "extra", "shown"),
    [
        ("raydspy.pipeline.driver", logging.WARNING, "interrupted: 3 rollouts committed", {}, True),
        ("raydspy.pipeline.driver", logging.INFO, "plan: 4 rollouts", {}, False),
        ("ray.data._internal.execution.streaming_executor", logging.INFO, "Running Dataset: dataset_1", {}, False),
        # Ray Data's own tuning advice (a slow LM is what an idle operator looks like) stays in the
        # file; a run that would hang for want of resources is the user's to fix.
        ("ray.data._internal.execution.streaming_executor_state", logging.WARNING, IDLE, {}, False),
        ("ray.data._internal.execution.resource_manager", logging.WARNING, HANG, {}, True),
        ("ray.serve", logging.ERROR, "Deploying app 'teacher' failed", {}, True),
        ("ray.data.exceptions", logging.ERROR, "Full stack trace:", {"hide": True}, False),
        ("LiteLLM", logging.WARNING, "provider list is long", {}, False),
        ("py.warnings", logging.WARNING, "x.py:1: DeprecationWarning: old", {}, False),
    ],
)
def test_what_a_user_must_act_on_reaches_the_terminal(name, level, message, extra, shown):
    assert Actionable().filter(_record(name, level, message, **extra)) is shown


def test_live_displays_redirect_only_through_a_console_on_the_processs_streams():
    assert live_redirects(Console(stderr=True)) and live_redirects(Console())
    assert not live_redirects(Console(file=io.StringIO()))  # as a console kept on the terminal is


def test_verbose_before_or_after_the_command():
    parser = build_parser()
    assert not parser.parse_args(["collect", "--output", "o"]).verbose
    assert parser.parse_args(["-v", "collect", "--output", "o"]).verbose
    assert parser.parse_args(["collect", "--output", "o", "--verbose"]).verbose
    assert parser.parse_args(["teacher", "up", "-v"]).verbose and parser.parse_args(["export", "sft", "-v",
        "--rollouts", "r", "--output", "o"]).verbose  # fmt: skip
