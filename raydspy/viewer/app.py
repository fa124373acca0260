"""The viewer put into a FastAPI app: into the HTTP service's (`raydspy.service.api.create_app`,
behind the service's token) or into an app of its own over output folders (``raydspy view``).

    >>> app = create_viewer_app("rollouts/banking77")      # then: uvicorn.run(app, port=8266)
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from raydspy.core.storage import StorageOptions
from raydspy.viewer.auth import ViewerAuth
from raydspy.viewer.routes import PREFIX, base_path, viewer_router
from raydspy.viewer.sources import FolderRuns, RunSource

__all__ = ["install_viewer", "create_viewer_app", "STATIC"]

#: The stylesheet, the page script and the vendored chart library (static/vendor, see frontend/).
STATIC = Path(__file__).parent / "static"


def install_viewer(app: FastAPI, source: RunSource, auth: ViewerAuth, *, root_redirect: bool = True) -> None:
    """Add the viewer's pages under ``/viewer`` and its static files under ``/viewer/static`` (no
    credentials needed for those: a stylesheet, a script and Chart.js); with ``root_redirect``,
    ``/`` redirects to the viewer."""
    app.include_router(viewer_router(source, auth))
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="viewer-static")
    if root_redirect:

        @app.get("/", include_in_schema=False)
        def root(request: Request) -> RedirectResponse:
            return RedirectResponse(base_path(request) + "/", status_code=303)


def create_viewer_app(uri: str, storage: StorageOptions | None = None, token: str | None = None) -> FastAPI:
    """A viewer of the output folder ``uri`` (local, ``s3://``, ``gs://``) and nothing else.

    Args:
        uri: one run's output, or a folder of outputs (each sub-folder a run).
        storage: endpoint options of an S3-compatible store.
        token: when set, pages need it (login form or bearer header), as in the service.

    Raises:
        StorageError: ``uri`` cannot be resolved.
    """
    app = FastAPI(title="raydspy viewer", docs_url=None, redoc_url=None, openapi_url=None)
    install_viewer(app, FolderRuns(uri, storage), ViewerAuth(token))
    return app
