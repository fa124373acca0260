"""The service's API page, ``/docs``: Swagger UI served from the package, not from a CDN.

FastAPI's default ``/docs`` page loads Swagger UI's script and stylesheet from a CDN: third-party
JavaScript, at a version nobody pinned, running on the service's origin (where the viewer's
session cookie and the token typed into "Authorize" live), and nothing at all on a cluster
without internet. `install_docs` serves the same UI from the copy vendored with the viewer's
Chart.js (``raydspy/viewer/static/vendor``, from npm at the version locked in
``raydspy/viewer/frontend/package-lock.json``: ``scripts/viewer_assets.sh``):

    GET {root}/docs                                 the page (its own HTML, no inline script)
    GET {root}/docs/static/docs.js                  our script: starts Swagger UI on the OpenAPI document
    GET {root}/docs/static/vendor/swagger-ui-bundle.js, .../swagger-ui.css    Swagger UI

``{root}`` is the ASGI root path (Serve's route prefix, e.g. ``/raydspy``): the page loads
``{root}/openapi.json`` and the files above under it. The page is sent with a
Content-Security-Policy that allows scripts, styles and requests of the service's own origin
only (images also as ``data:`` URLs, which Swagger UI's stylesheet uses for its icons; the
page's empty ``data:`` icon keeps the browser from asking the origin's root for ``/favicon.ico``).

    >>> app = FastAPI(docs_url=None, redoc_url=None)
    >>> install_docs(app)
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

__all__ = ["install_docs", "DOCS_PATH", "DOCS_STATIC", "HEADERS", "ASSETS"]

DOCS_PATH = "/docs"
DOCS_STATIC = f"{DOCS_PATH}/static"
#: The folder the files come from: the viewer's static folder (its ``vendor`` sub-folder holds
#: the vendored libraries and their licenses).
STATIC = Path(__file__).resolve().parent.parent / "viewer" / "static"
#: The files served under `DOCS_STATIC` (paths relative to `STATIC`): these and no others, so
#: the mount does not publish the rest of the folder a second time.
ASSETS = ("docs.js", "vendor/swagger-ui-bundle.js", "vendor/swagger-ui.css")

#: The page's headers: like the viewer's pages (`raydspy.viewer.routes.HEADERS`), nothing from
#: another origin. ``connect-src 'self'``: Swagger UI fetches the OpenAPI document and sends
#: "Try it out" requests to this origin only; ``img-src data:`` for the stylesheet's icons.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{static}/vendor/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{static}/vendor/swagger-ui-bundle.js"></script>
<script src="{static}/docs.js"></script>
</body>
</html>
"""


class _Assets(StaticFiles):
    """`StaticFiles` over `STATIC` that serves only `ASSETS` (anything else is a 404), marked
    ``nosniff`` and ``no-cache`` (browsers keep the 1.8 MB bundle but revalidate it, so a new
    version is picked up at once; unchanged, it is a 304)."""

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if Path(path).as_posix() not in ASSETS:
            return "", None
        return super().lookup_path(path)

    def file_response(self, full_path, stat_result: os.stat_result, scope: Scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-cache"
        return response


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def install_docs(app: FastAPI) -> None:
    """Add the API page at ``/docs`` (Swagger UI, out of the schema) and its files under
    ``/docs/static`` to ``app``, whose OpenAPI document it shows. Call it on an app created with
    ``docs_url=None, redoc_url=None`` (FastAPI's own pages load their scripts from a CDN).

    Raises:
        ValueError: ``app`` has FastAPI's own docs or ReDoc page, or no OpenAPI document
            (``openapi_url=None``).
        FileNotFoundError: the vendored Swagger UI is missing (run ``scripts/viewer_assets.sh``).
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError(
            f"create the app with docs_url=None, redoc_url=None: its own pages ({app.docs_url}, {app.redoc_url}) "
            "load Swagger UI and ReDoc from a CDN"
        )
    if app.openapi_url is None:
        raise ValueError("the app has no OpenAPI document (openapi_url=None): /docs would have nothing to show")
    missing = [name for name in ASSETS if not (STATIC / name).is_file()]
    if missing:
        raise FileNotFoundError(f"missing in {STATIC}: {', '.join(missing)} (scripts/viewer_assets.sh vendors them)")
    openapi_url = app.openapi_url

    @app.get(DOCS_PATH, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = _root(request)
        page = _PAGE.format(
            title=html.escape(app.title),
            static=html.escape(root + DOCS_STATIC),
            openapi=html.escape(root + openapi_url),
        )
        return HTMLResponse(page, headers=HEADERS)

    app.mount(DOCS_STATIC, _Assets(directory=STATIC), name="docs-static")
