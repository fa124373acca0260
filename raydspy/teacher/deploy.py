"""Deploying a Serve config file (``serve_configs/*.yaml``) from Python, and waiting for it.

``serve run FILE`` does the same from a shell; this is for the CLI's ``demo`` and ``teacher up``
and for the tests, which start the teacher once per session on the Ray they already run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from ray import serve

from raydspy.core.specs import load_object
from raydspy.errors import ConfigError, TeacherUnreachableError
from raydspy.teacher.client import TeacherConfig

__all__ = ["SERVE_CONFIGS", "load_serve_config", "deploy_serve_config", "wait_for_teacher"]

#: The checkout's Serve configs (repo root: raydspy/teacher/deploy.py is three levels below it).
SERVE_CONFIGS = Path(__file__).resolve().parents[2] / "serve_configs"


def load_serve_config(path: str | Path) -> dict[str, Any]:
    """Read a Serve config YAML (the ``serve deploy`` format).

    Raises:
        ConfigError: the file is missing or has no ``applications``.
    """
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read Serve config {str(path)!r}: {e}") from e
    if not isinstance(config, dict) or not config.get("applications"):
        raise ConfigError(f"Serve config {str(path)!r} has no `applications`")
    return config


def deploy_serve_config(path: str | Path) -> list[str]:
    """Deploy every application of a Serve config on the running Ray (``ray.init`` first).

    Each application's ``import_path`` is called with its ``args``, as ``serve run`` does, and
    deployed under its ``name`` and ``route_prefix``; returns once Serve reports it running.

    Returns:
        The application names deployed.
    """
    config = load_serve_config(path)
    http = config.get("http_options") or {}
    serve.start(
        http_options={k: v for k, v in http.items() if k in ("host", "port")},
        proxy_location=config.get("proxy_location", "HeadOnly"),
    )
    names = []
    for app in config["applications"]:
        builder = load_object(app["import_path"])
        application = builder(app.get("args") or {})
        serve.run(application, name=app["name"], route_prefix=app.get("route_prefix", "/"))
        names.append(app["name"])
    return names


def wait_for_teacher(teacher: TeacherConfig, timeout_s: float = 900.0, poll_s: float = 2.0) -> float:
    """Poll the teacher until it lists its model.

    Returns:
        Seconds waited.

    Raises:
        TeacherUnreachableError: still not ready after ``timeout_s``.
    """
    started = time.monotonic()
    while True:
        try:
            teacher.check_reachable(timeout_s=5.0)
            return time.monotonic() - started
        except TeacherUnreachableError:
            if time.monotonic() - started > timeout_s:
                raise
            time.sleep(poll_s)
