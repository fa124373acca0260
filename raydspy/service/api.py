"""The HTTP routes (FastAPI). `create_app` builds the app around a `RunManager`; the Serve
deployment (`raydspy.service.app`) and the tests use the same function.

Errors: 401 without the bearer token; 403 for a program, rewards module, URI or teacher outside
the service's allow-lists; 404 for an unknown run; 409 to cancel a run that ended; 413 for a
body above ``max_body_bytes``; 422 for a body that does not validate (FastAPI's detail lists each
problem) or a run that cannot load (its program or rewards do not import, a limit exceeded).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from raydspy.errors import ConfigError, InputError, StorageError
from raydspy.service.dispatch import RunConflict, RunManager
from raydspy.service.limits import BodySizeLimit
from raydspy.service.policy import PolicyError
from raydspy.service.schemas import RolloutPreview, RunCreated, RunList, RunRequest, RunStatus
from raydspy.service.store import RunNotFound
from raydspy.viewer.app import install_viewer
from raydspy.viewer.auth import ViewerAuth
from raydspy.viewer.sources import ServiceRuns

__all__ = ["create_app", "router"]

_bearer = HTTPBearer(auto_error=False, description="RAYDSPY_SERVICE_TOKEN")


def manager(request: Request) -> RunManager:
    return request.app.state.manager


def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 unless the request carries ``Authorization: Bearer <the service's token>``."""
    expected = manager(request).settings.token.get_secret_value()
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


Manager = Annotated[RunManager, Depends(manager)]
router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], tags=["runs"])


@router.post("/runs", status_code=status.HTTP_201_CREATED, response_model=RunCreated, summary="Submit a collection run")
def submit_run(body: RunRequest, runs: Manager) -> RunCreated:
    """Check the run against the service's allow-lists and limits, record it, queue it; returns its id."""
    record = runs.submit(body)
    return RunCreated(id=record.id, state=record.state)


@router.get("/runs", response_model=RunList, summary="List runs, newest first")
def list_runs(runs: Manager) -> RunList:
    return RunList(runs=runs.list())


@router.get("/runs/{run_id}", response_model=RunStatus, summary="A run's state and progress")
def get_run(run_id: str, runs: Manager) -> RunStatus:
    return runs.status(run_id)


@router.post("/runs/{run_id}/cancel", response_model=RunStatus, summary="Cancel a run")
def cancel_run(run_id: str, runs: Manager) -> RunStatus:
    """A queued run is cancelled at once; a running one stops after its current batches (what it
    committed stays, and submitting the same run again resumes it)."""
    runs.cancel(run_id)
    return runs.status(run_id)


@router.get("/runs/{run_id}/rollouts", response_model=RolloutPreview, summary="Preview committed rollouts")
def preview_run(
    run_id: str,
    runs: Manager,
    limit: Annotated[int, Query(ge=1, le=1000, description="Rows (capped by max_preview_rows).")] = 10,
    trace: Annotated[bool, Query(description="Include each row's trace of LM calls.")] = False,
) -> RolloutPreview:
    return RolloutPreview(id=run_id, rows=runs.preview(run_id, limit, trace=trace))


def _error(code: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc) if not isinstance(exc, KeyError) else f"no run {exc.args[0]!r}"}, status_code=code
        )

    return handler


def create_app(runs: RunManager) -> FastAPI:
    """The FastAPI app serving ``runs`` (OpenAPI docs at ``/docs``; the rollout viewer at ``/viewer/``,
    behind the same token: `raydspy.viewer`)."""
    app = FastAPI(
        title="raydspy",
        version="1",
        description=__doc__.split("\n\n")[1],
        openapi_tags=[{"name": "runs", "description": "Collection runs (bearer token required)"}],
    )
    app.state.manager = runs
    app.include_router(router)
    install_viewer(app, ServiceRuns(runs), ViewerAuth(runs.settings.token.get_secret_value()))
    app.add_middleware(BodySizeLimit, max_bytes=runs.settings.max_body_bytes)
    app.add_exception_handler(PolicyError, _error(status.HTTP_403_FORBIDDEN))
    app.add_exception_handler(RunNotFound, _error(status.HTTP_404_NOT_FOUND))
    app.add_exception_handler(RunConflict, _error(status.HTTP_409_CONFLICT))
    app.add_exception_handler(ConfigError, _error(status.HTTP_422_UNPROCESSABLE_CONTENT))
    app.add_exception_handler(InputError, _error(status.HTTP_422_UNPROCESSABLE_CONTENT))
    app.add_exception_handler(StorageError, _error(status.HTTP_503_SERVICE_UNAVAILABLE))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    return app
