"""The Ray Serve deployment: the FastAPI app of `raydspy.service.api` as a Serve ingress.

    serve run serve_configs/service.yaml          # or: serve deploy, or a KubeRay RayService

``build_app(args)`` is the config's ``import_path``; ``args`` are `ServiceSettings` fields (the
token comes from ``$RAYDSPY_SERVICE_TOKEN`` in the replica's environment). One replica: the run
queue lives in it, and its records persist under ``state_uri``, so a restarted replica resumes.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from raydspy.service.api import create_app
from raydspy.service.dispatch import RunManager
from raydspy.service.settings import ServiceSettings

__all__ = ["RaydspyService", "build_app"]

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=256)
@serve.ingress()  # the app is built per replica, around its RunManager (__serve_build_asgi_app__)
class RaydspyService:
    """Holds the `RunManager` (records, queue, dispatcher) behind the HTTP routes."""

    def __init__(self, settings: dict[str, Any] | None = None):
        self.manager = RunManager(ServiceSettings.load(settings)).start()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.manager)

    def __del__(self):
        manager = getattr(self, "manager", None)
        if manager is not None:
            manager.stop()


def build_app(args: dict[str, Any]) -> Application:
    """The Serve application for a config's ``args`` (checked here, so a bad config fails at deploy)."""
    ServiceSettings.load(args)
    return RaydspyService.bind(dict(args))
