"""The viewer's pages (server-side Jinja2 templates) and the fragments its pages poll.

    GET  {base}/                                  runs, live progress (rows polled from partials/runs)
    GET  {base}/runs/{id}?min_reward=&max_reward=&error=&example_id=&offset=
                                                  a run: summary, charts, filtered pages of rollouts
    GET  {base}/runs/{id}/rollouts/{rollout_id}?part=
                                                  one rollout: inputs, outputs, rewards, its trace call by call
    GET  {base}/partials/runs, {base}/partials/runs/{id}, {base}/partials/runs/{id}/overview?<filter>
                                                  the runs table's rows, a run's status, its counts and
                                                  charts (polled while it runs; 401 when signed out)
    GET  {base}/login, POST {base}/login, POST {base}/logout

``{base}`` is the app's root path (Serve's route prefix, e.g. ``/raydspy``) plus ``/viewer``.
A page asked for without credentials redirects to the login form (303); a fragment answers 401.
"""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse

from raydspy.errors import StorageError
from raydspy.viewer.auth import SESSION_COOKIE, ViewerAuth
from raydspy.viewer.filters import ANY_ERROR, NO_ERROR, RolloutFilter
from raydspy.viewer.sources import RunSource, RunUnknown
from raydspy.viewer.templating import TEMPLATES

__all__ = ["viewer_router", "PREFIX", "PAGE_ROWS"]

PREFIX = "/viewer"
PAGE_ROWS = 50

#: Every page: scripts and styles from the viewer's own static folder only, no framing, no
#: referrer leaving the site, nothing cached (rollouts may be private).
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def base_path(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/") + PREFIX


def _here(request: Request) -> str:
    """The path and query asked for, under the root path (ASGI servers differ on whether
    ``path`` includes ``root_path``: uvicorn and Serve's proxy do, some test clients do not)."""
    root, path = request.scope.get("root_path", "").rstrip("/"), request.url.path
    if root and not path.startswith(root + "/"):
        path = root + path
    return path + (f"?{request.url.query}" if request.url.query else "")


def _number(value: str | None, name: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{name} must be a number, got {value!r}")
    return number


def _filter(
    min_reward: str | None = None,
    max_reward: str | None = None,
    error: str | None = None,
    example_id: str | None = None,
) -> RolloutFilter:
    """The filter of a run page's query (a FastAPI dependency: 400 for a reward that is not a number)."""
    return RolloutFilter(
        min_reward=_number(min_reward, "min_reward"),
        max_reward=_number(max_reward, "max_reward"),
        error=error or None,
        example_id=example_id.strip() if example_id and example_id.strip() else None,
    )


#: A route's rollout filter, from its query parameters.
Filter = Annotated[RolloutFilter, Depends(_filter)]


def _link(path: str, params: dict[str, Any]) -> str:
    params = {k: v for k, v in params.items() if v is not None and v != ""}
    return f"{path}?{urlencode(params)}" if params else path


def overview(request: Request, run: Any, output: Any, flt: RolloutFilter) -> dict[str, Any]:
    """The template context of a run's counts and charts (``_run_overview.html``): ``run``,
    ``stats`` (`RolloutStats`), ``charts`` (each bar's count and the link that filters to it, the
    filter ``flt`` kept), ``clear`` (the run page's path) and ``overview_url`` (this fragment's).

    Raises:
        StorageError: the run's output cannot be read.
    """
    here = f"{base_path(request)}/runs/{quote(run.id, safe='')}"
    params = flt.params()
    counts, bars = output.overview()
    errors = counts.stats.errors_by_count
    charts = {
        "histogram": {
            "labels": [b.label for b in bars],
            "counts": [b.count for b in bars],
            "links": [_link(here, {**params, "min_reward": repr(b.low), "max_reward": repr(b.high)}) for b in bars],
        },
        "errors": {
            "labels": [t for t, _ in errors],
            "counts": [n for _, n in errors],
            "links": [_link(here, {**params, "error": t}) for t, _ in errors],
        },
    }
    fragment = _link(f"{base_path(request)}/partials/runs/{quote(run.id, safe='')}/overview", params)
    return {"run": run, "stats": counts.stats, "charts": charts, "clear": here, "overview_url": fragment}


def viewer_router(source: RunSource, auth: ViewerAuth) -> APIRouter:
    """The viewer's routes over the runs of ``source``, behind ``auth``."""
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    def page(request: Request, name: str, context: dict[str, Any], code: int = 200) -> HTMLResponse:
        context = {"base": base_path(request), "signed_in": auth.required and auth.allowed(request), **context}
        return TEMPLATES.TemplateResponse(request, name, context, status_code=code, headers=HEADERS)

    def signed_in_page(request: Request) -> None:
        if not auth.allowed(request):
            login = _link(f"{base_path(request)}/login", {"next": _here(request)})
            raise HTTPException(status.HTTP_303_SEE_OTHER, "sign in first", headers={"Location": login})

    def signed_in_fragment(request: Request) -> None:
        if not auth.allowed(request):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "sign in first", headers={"WWW-Authenticate": "Bearer"})

    Page = Depends(signed_in_page)
    Fragment = Depends(signed_in_fragment)

    def failure(request: Request, error: Exception) -> HTMLResponse:
        if isinstance(error, RunUnknown):
            return page(request, "error.html", {"message": f"no run {error.args[0]!r}"}, 404)
        return page(request, "error.html", {"message": str(error)}, 503)

    # -- sign in -------------------------------------------------------------------------

    def safe_next(request: Request, target: str | None) -> str:
        base = base_path(request)
        ok = target and target.startswith(base + "/") and not target.startswith("//") and "\\" not in target
        return target if ok else base + "/"

    @router.get("/login")
    def login_form(request: Request, next: str | None = None):
        if not auth.required:
            return RedirectResponse(safe_next(request, next), status.HTTP_303_SEE_OTHER)
        return page(request, "login.html", {"next": safe_next(request, next), "failed": False})

    @router.post("/login")
    def login(request: Request, token: Annotated[str, Form()], next: Annotated[str | None, Form()] = None):
        target = safe_next(request, next)
        if not auth.valid_token(token):
            return page(request, "login.html", {"next": target, "failed": True}, status.HTTP_401_UNAUTHORIZED)
        response = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
        response.set_cookie(
            SESSION_COOKIE,
            auth.session(),
            max_age=int(auth.session_s),
            path=base_path(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https",
        )
        return response

    @router.post("/logout")
    def logout(request: Request):
        # End the session on the server too: deleting the cookie alone would leave any copy of it working.
        auth.end(request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse(f"{base_path(request)}/login", status.HTTP_303_SEE_OTHER)
        response.delete_cookie(SESSION_COOKIE, path=base_path(request), httponly=True, samesite="strict")
        return response

    # -- the runs ------------------------------------------------------------------------

    @router.get("/", dependencies=[Page])
    def runs_page(request: Request):
        try:
            return page(request, "runs.html", {"runs": source.runs()})
        except StorageError as e:
            return failure(request, e)

    @router.get("/partials/runs", dependencies=[Fragment])
    def runs_rows(request: Request):
        try:
            return page(request, "_runs_rows.html", {"runs": source.runs()})
        except StorageError as e:
            return failure(request, e)

    @router.get("/partials/runs/{run_id}", dependencies=[Fragment])
    def run_status(request: Request, run_id: str):
        try:
            return page(request, "_run_status.html", {"run": source.run(run_id)})
        except (RunUnknown, StorageError) as e:
            return failure(request, e)

    # -- a run ---------------------------------------------------------------------------

    @router.get("/runs/{run_id}", dependencies=[Page])
    def run_page(
        request: Request,
        run_id: str,
        flt: Filter,
        offset: Annotated[int, Query(ge=0)] = 0,
    ):
        try:
            run = source.run(run_id)
            output = source.output(run)
            context = overview(request, run, output, flt)
            rows = output.page(flt, offset, PAGE_ROWS)
            card, manifests = output.card(), output.manifests()
        except (RunUnknown, StorageError) as e:
            return failure(request, e)
        here, params = context["clear"], flt.params()
        pages = {
            "previous": _link(here, {**params, "offset": max(offset - PAGE_ROWS, 0)}) if offset > 0 else None,
            "next": _link(here, {**params, "offset": offset + PAGE_ROWS}) if offset + PAGE_ROWS < rows.total else None,
        }
        context |= {
            "rows": rows,
            "filter": flt,
            "error_choices": [("", "every row"), (NO_ERROR, "no error"), (ANY_ERROR, "any error")]
            + [(t, f"{t} ({n})") for t, n in context["stats"].errors_by_count],
            "pages": pages,
            "back_params": urlencode({**params, "offset": offset} if offset else params),
            "card": card,
            "manifests": manifests,
        }
        return page(request, "run.html", context)

    @router.get("/partials/runs/{run_id}/overview", dependencies=[Fragment])
    def run_overview(request: Request, run_id: str, flt: Filter):
        try:
            run = source.run(run_id)
            context = overview(request, run, source.output(run), flt)
        except (RunUnknown, StorageError) as e:
            return failure(request, e)
        return page(request, "_run_overview.html", context)

    @router.get("/runs/{run_id}/rollouts/{rollout_id}", dependencies=[Page])
    def rollout_page(request: Request, run_id: str, rollout_id: str, part: str | None = None, back: str = ""):
        try:
            run = source.run(run_id)
            row = source.output(run).rollout(rollout_id, part)
        except (RunUnknown, StorageError) as e:
            return failure(request, e)
        if row is None:
            return page(request, "error.html", {"message": f"no rollout {rollout_id!r} in run {run_id!r}"}, 404)
        back_link = f"{base_path(request)}/runs/{run_id}" + (f"?{back}" if back else "")
        return page(request, "rollout.html", {"run": run, "row": row, "back": back_link})

    return router
