"""The service's API page (`raydspy.service.docs.install_docs`) on a bare FastAPI app, no Ray:
Swagger UI from the package's vendored copy, not a CDN, under a strict Content-Security-Policy,
every URL under the ASGI root path (Serve's route prefix); the vendored copy is the version
locked in package-lock.json, its license beside it. One test opens the page in headless Chromium
(skipped where it is missing) and finds the operations drawn, nothing blocked, no other origin."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from raydspy.service.docs import ASSETS, DOCS_STATIC, HEADERS, STATIC, install_docs

VIEWER = Path(__file__).resolve().parent.parent / "raydspy" / "viewer"
JS = {"text/javascript", "application/javascript"}


def _app() -> FastAPI:
    app = FastAPI(title="raydspy-docs-test", docs_url=None, redoc_url=None)

    @app.get("/v1/ping", summary="Ping the service")
    def ping() -> dict:
        """Answers pong."""
        return {"pong": True}

    install_docs(app)
    return app


def _assets(html: str) -> list[tuple[str, str]]:
    """(tag, URL) of each script and link of the page."""
    return [(tag, unescape(url)) for tag, url in re.findall(r'<(script|link)\b[^>]*?(?:src|href)="([^"]*)"', html)]


@pytest.fixture(params=["", "/raydspy"], ids=["at the root", "under a route prefix"])
def client(request):
    with TestClient(_app(), root_path=request.param, follow_redirects=False) as c:
        c.root = request.param
        yield c


def test_the_page_has_a_strict_csp_and_no_inline_script(client):
    page = client.get(f"{client.root}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == HEADERS["Content-Security-Policy"]
    csp = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'" and csp["default-src"] == "'self'"
    assert "unsafe" not in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page.text, re.S)
    assert len(scripts) == 2 and all('src="' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son\w+=", page.text)  # no inline event handler either
    assert 'id="swagger-ui"' in page.text  # what test_service.py looks for in the service's /docs


def test_the_page_loads_nothing_from_another_origin(client):
    page = client.get(f"{client.root}/docs").text
    assert "http://" not in page and "https://" not in page and "//" not in page.replace("<!DOCTYPE", "")
    assets = _assets(page)
    assert {tag for tag, _ in assets} == {"script", "link"}
    for _, url in assets:
        assert url.startswith("data:") or (url.startswith(f"{client.root}/") and not urlsplit(url).netloc), url


def test_every_script_and_stylesheet_of_the_page_answers_under_the_root_path(client):
    page = client.get(f"{client.root}/docs").text
    assets = [(tag, url) for tag, url in _assets(page) if not url.startswith("data:")]
    assert [url for _, url in assets] == [
        f"{client.root}{DOCS_STATIC}/vendor/swagger-ui.css",
        f"{client.root}{DOCS_STATIC}/vendor/swagger-ui-bundle.js",
        f"{client.root}{DOCS_STATIC}/docs.js",
    ]
    for tag, url in assets:
        response = client.get(url)
        kind = response.headers["content-type"].split(";")[0]
        assert response.status_code == 200 and kind in (JS if tag == "script" else {"text/css"}), (url, kind)
        assert response.headers["x-content-type-options"] == "nosniff" and len(response.content) > 100
        # Unchanged, a file is not sent again: browsers keep the 1.8 MB bundle.
        again = client.get(url, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and not again.content
    openapi = unescape(re.search(r'data-openapi-url="([^"]*)"', page)[1])
    assert openapi == f"{client.root}/openapi.json"
    document = client.get(openapi)
    assert document.status_code == 200 and "/v1/ping" in document.json()["paths"]
    assert "/docs" not in document.json()["paths"]  # the page is not part of the API


def test_only_the_pages_files_are_served_from_the_static_folder(client):
    assert (STATIC / "viewer.js").is_file() and (STATIC / "vendor" / "chart.umd.min.js").is_file()
    for path in ["viewer.js", "style.css", "vendor/chart.umd.min.js", "vendor/swagger-ui.LICENSE", "vendor", ""]:
        assert client.get(f"{client.root}{DOCS_STATIC}/{path}").status_code == 404, path
    for path in ["..%2f..%2fservice%2fdocs.py", "vendor%2f..%2f..%2fauth.py", "docs.js%00"]:  # out of the folder
        assert client.get(f"{client.root}{DOCS_STATIC}/{path}").status_code == 404, path
    assert client.post(f"{client.root}{DOCS_STATIC}/docs.js").status_code == 405


def test_the_pages_script_starts_swagger_ui_on_the_data_attribute():
    script = (STATIC / "docs.js").read_text()
    assert "SwaggerUIBundle(" in script and "dataset.openapiUrl" in script and 'dom_id: "#swagger-ui"' in script
    assert "validatorUrl: null" in script  # Swagger UI's default asks validator.swagger.io about the document
    assert "http://" not in script and "https://" not in script


def test_the_vendored_swagger_ui_is_the_locked_version_with_its_license():
    wanted = json.loads((VIEWER / "frontend" / "package.json").read_text())["dependencies"]["swagger-ui-dist"]
    lock = json.loads((VIEWER / "frontend" / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/swagger-ui-dist"]["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", wanted) and version == wanted  # pinned exactly, and locked
    assert lock["packages"][""]["dependencies"]["swagger-ui-dist"] == version
    bundle = (STATIC / "vendor" / "swagger-ui-bundle.js").read_text()
    assert f'PACKAGE_VERSION:"{version}"' in bundle  # Swagger UI's build info, inside the bundle
    assert bundle.startswith("/*! For license information please see swagger-ui-bundle.js.LICENSE.txt */")
    assert "Copyright (c)" in (STATIC / "vendor" / "swagger-ui-bundle.js.LICENSE.txt").read_text()
    license_text = (STATIC / "vendor" / "swagger-ui.LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text
    assert "SmartBear" in (STATIC / "vendor" / "swagger-ui.NOTICE").read_text()
    assert (STATIC / "vendor" / "swagger-ui.css").read_text().startswith(".swagger-ui{")
    assert all((STATIC / name).is_file() for name in ASSETS)


def test_install_docs_wants_an_app_without_fastapis_own_pages_and_with_an_openapi_document():
    with pytest.raises(ValueError, match="docs_url=None"):
        install_docs(FastAPI())
    with pytest.raises(ValueError, match="docs_url=None"):
        install_docs(FastAPI(docs_url=None))  # ReDoc's page loads its script from a CDN too
    with pytest.raises(ValueError, match="no OpenAPI document"):
        install_docs(FastAPI(docs_url=None, redoc_url=None, openapi_url=None))


def test_a_custom_openapi_url_and_title_are_escaped_into_the_page():
    app = FastAPI(title='<b>"x"</b>', docs_url=None, redoc_url=None, openapi_url="/api/schema.json")
    install_docs(app)
    with TestClient(app, root_path="/a&b") as c:
        page = c.get("/a&b/docs").text
    assert "<b>" not in page and "&lt;b&gt;&quot;x&quot;&lt;/b&gt; - API" in page
    assert 'data-openapi-url="/a&amp;b/api/schema.json"' in page


# -- in a browser --------------------------------------------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        message = "chromium is missing: scripts/setup.sh installs it (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("playwright.sync_api")
    return found


def test_a_browser_draws_the_operations_under_the_csp_from_this_origin_only():
    """Under a route prefix, as behind Serve's proxy (a Starlette Mount sets ``root_path`` the same way)."""
    import uvicorn
    from playwright.sync_api import sync_playwright
    from starlette.applications import Starlette
    from starlette.routing import Mount

    chromium = _chromium()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Mount("/raydspy", _app())]), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        origin = f"http://127.0.0.1:{port}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            urls: list[str] = []
            problems: list[str] = []
            page.on("request", lambda request: urls.append(request.url))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("console", lambda message: message.type == "error" and problems.append(message.text))
            page.goto(f"{origin}/raydspy/docs")
            page.wait_for_selector(".opblock-summary", timeout=20_000)
            assert "/v1/ping" in page.inner_text(".opblock-summary")
            page.click(".opblock-summary")
            page.click(".try-out__btn")
            page.click(".execute")
            page.wait_for_selector(".live-responses-table", timeout=20_000)
            assert '"pong": true' in page.inner_text(".live-responses-table")
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not problems, problems  # a CSP violation is a console error: "Refused to load ..."
    assert {urlsplit(u).netloc for u in urls} == {f"127.0.0.1:{port}"}
    assert {urlsplit(u).path for u in urls} == {
        "/raydspy/docs",
        "/raydspy/docs/static/vendor/swagger-ui.css",
        "/raydspy/docs/static/vendor/swagger-ui-bundle.js",
        "/raydspy/docs/static/docs.js",
        "/raydspy/openapi.json",
        "/raydspy/v1/ping",
    }
