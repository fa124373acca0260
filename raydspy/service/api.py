"""The HTTP routes (FastAPI). `create_app` builds the app around a `RunManager`; the Serve
deployment (`raydspy.service.app`) and the tests use the same function.

Errors: 401 without the bearer token; 403 for a program, rewards spec, URI or teacher outside
the service's allow-lists; 404 for an unknown run; 409 to cancel a run that ended; 413 for a
body above ``max_body_bytes``; 422 for a body that does not validate (FastAPI's detail lists each
problem) or a run that cannot load (its program or rewards do not import, a limit exceeded); 429
with ``Retry-After`` while ``max_queued_runs`` runs wait; 503 when a run's record or output
cannot be read now (that run alone: the list and the other runs still answer).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.routing import Match

from raydspy.errors import ConfigError, InputError, NotAllowedError, StorageError
from raydspy.service.dispatch import QueueFull, RunConflict, RunManager
from raydspy.service.docs import install_docs
from raydspy.service.gate import BearerGate, token_matches
from raydspy.service.limits import BodySizeLimit
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
    """401 unless the request carries ``Authorization: Bearer <the service's token>`` (checked first
    by `BearerGate`, before the body is read; here again, and declared in the OpenAPI schema)."""
    expected = manager(request).settings.token.get_secret_value()
    given = f"Bearer {credentials.credentials}" if credentials is not None else ""
    if not token_matches(given, expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


class ErrorBody(BaseModel):
    """Every error answer but 422's: what was wrong, in one sentence."""

    detail: str


class InvalidBody(BaseModel):
    """422: the request's problems, each with ``loc``, ``msg``, ``type`` and ``input`` (the body or
    a parameter did not validate), or one sentence (the run cannot load, a limit is exceeded)."""

    detail: str | list[dict[str, Any]]


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route gives (clients and the schema fuzzer read them)."""
    why = {
        400: "the body is not JSON",
        401: "missing or wrong bearer token",
        403: "outside the service's allow-lists",
        404: "no such run",
        409: "the run already ended",
        413: "body larger than max_body_bytes",
        429: "max_queued_runs runs already wait (see Retry-After)",
        503: "this run's record or output cannot be read now",
    }
    answers: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody, "description": why[code]} for code in codes}
    answers[422] = {"model": InvalidBody, "description": "the request does not validate, or the run cannot load"}
    return answers


Manager = Annotated[RunManager, Depends(manager)]
RunId = Annotated[str, Path(max_length=128, description="A run id, as POST /v1/runs returned it.")]
router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], tags=["runs"], responses=_responses(401))


@router.post(
    "/runs",
    status_code=status.HTTP_201_CREATED,
    response_model=RunCreated,
    summary="Submit a collection run",
    responses=_responses(400, 403, 413, 429),
)
def submit_run(body: RunRequest, runs: Manager) -> RunCreated:
    """Check the run against the service's allow-lists and limits, record it, queue it; returns its id."""
    record = runs.submit(body)
    return RunCreated(id=record.id, state=record.state)


@router.get("/runs", response_model=RunList, summary="List runs, newest first", responses=_responses(503))
def list_runs(runs: Manager) -> RunList:
    """Every run; a record that cannot be read is listed under ``unreadable``, a run whose output
    cannot be counted has ``output_error`` set: neither fails the list."""
    return runs.list()


@router.get(
    "/runs/{run_id}", response_model=RunStatus, summary="A run's state and progress", responses=_responses(404, 503)
)
def get_run(run_id: RunId, runs: Manager) -> RunStatus:
    return runs.status(run_id)


@router.post(
    "/runs/{run_id}/cancel", response_model=RunStatus, summary="Cancel a run", responses=_responses(404, 409, 503)
)
def cancel_run(run_id: RunId, runs: Manager) -> RunStatus:
    """A queued run is cancelled at once; a running one stops after its current batches (what it
    committed stays, and submitting the same run again resumes it)."""
    runs.cancel(run_id)
    return runs.status(run_id)


@router.get(
    "/runs/{run_id}/rollouts",
    response_model=RolloutPreview,
    summary="Preview committed rollouts",
    responses=_responses(404, 503),
)
def preview_run(
    run_id: RunId,
    runs: Manager,
    limit: Annotated[int, Query(ge=1, le=1000, description="Rows (capped by max_preview_rows).")] = 10,
    trace: Annotated[bool, Query(description="Include each row's trace of LM calls.")] = False,
) -> RolloutPreview:
    return RolloutPreview(id=run_id, rows=runs.preview(run_id, limit, trace=trace))


def _error(code: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull) else None
        return JSONResponse(
            {"detail": str(exc) if not isinstance(exc, KeyError) else f"no run {exc.args[0]!r}"},
            status_code=code,
            headers=headers,
        )

    return handler


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinity made a string: JSON has neither, and a body that sent
    one (Python's parser takes ``NaN`` and ``1e999``) is echoed in the 422's ``input``."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


async def _method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """405 whose ``Allow`` lists every method of the path (Starlette's names only the first route
    that matched the path, though GET and POST /v1/runs are two routes)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    allow = ", ".join(sorted(methods - {"HEAD"}))  # HEAD is implied by GET and not in the schema
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": allow})


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 (``detail``: each problem's ``loc``, ``msg``, ``type``, ``input``), made JSON-safe."""
    errors = [{k: v for k, v in e.items() if k != "ctx"} for e in exc.errors()]
    return JSONResponse({"detail": _json_safe(jsonable_encoder(errors))}, status_code=422)


def create_app(runs: RunManager) -> FastAPI:
    """The FastAPI app serving ``runs`` (OpenAPI docs at ``/docs``, with no third-party asset:
    `raydspy.service.docs`; the rollout viewer at ``/viewer/``, behind the same token: `raydspy.viewer`)."""
    app = FastAPI(
        title="raydspy",
        version="1",
        description=__doc__.split("\n\n")[1],
        openapi_tags=[{"name": "runs", "description": "Collection runs (bearer token required)"}],
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: `install_docs` serves our copy
        redoc_url=None,
    )
    install_docs(app)
    app.state.manager = runs
    app.include_router(router)
    install_viewer(app, ServiceRuns(runs), ViewerAuth(runs.settings.token.get_secret_value()))
    app.add_middleware(BodySizeLimit, max_bytes=runs.settings.max_body_bytes)
    app.add_middleware(BearerGate, token=runs.settings.token.get_secret_value())  # outermost: runs first
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(status.HTTP_405_METHOD_NOT_ALLOWED, _method_not_allowed)
    app.add_exception_handler(NotAllowedError, _error(status.HTTP_403_FORBIDDEN))
    app.add_exception_handler(RunNotFound, _error(status.HTTP_404_NOT_FOUND))
    app.add_exception_handler(RunConflict, _error(status.HTTP_409_CONFLICT))
    app.add_exception_handler(QueueFull, _error(status.HTTP_429_TOO_MANY_REQUESTS))
    app.add_exception_handler(ConfigError, _error(status.HTTP_422_UNPROCESSABLE_CONTENT))
    app.add_exception_handler(InputError, _error(status.HTTP_422_UNPROCESSABLE_CONTENT))
    app.add_exception_handler(StorageError, _error(status.HTTP_503_SERVICE_UNAVAILABLE))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    return app
