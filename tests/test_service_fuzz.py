"""Property-based fuzzing of the HTTP service from its own OpenAPI schema, with Schemathesis.

Every operation of ``/openapi.json`` gets generated requests, valid and invalid against the
schema, with the bearer token and without; each answer must be no 5xx, a status code the schema
documents, a body valid against it, invalid data rejected, missing auth refused. The app is the
real one (`create_app` around a real `RunManager` and store) over real files; only its executor
is held (runs are recorded and queued, never executed): the point is the HTTP layer, not Ray.
The viewer's pages (HTML, outside the schema) get the same promise from a Hypothesis test: any
query, any cookie, signed in or not, over a run with committed rows: no 5xx. After the fuzzing the
service still answers its list and its viewer.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode
from viewer_outputs import write_parts

from raydspy.programs import banking77
from raydspy.service.api import create_app
from raydspy.service.dispatch import RunManager
from raydspy.service.runs import RunRecord, new_run_id
from raydspy.service.schemas import RunRequest
from raydspy.service.settings import ServiceSettings

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class HeldExecutor:
    """Takes runs and never starts them, so fuzzed submissions stay queued."""

    name = "task"

    def reference(self, record) -> str:
        return f"held:{record.id}"

    def submit(self, record) -> None:
        pass

    def cancel(self, record) -> None:
        pass

    def outcome(self, record):
        return None


def _app(root):
    (root / "in").mkdir(exist_ok=True)
    (root / "out").mkdir(exist_ok=True)
    banking77.write_sample(root / "in" / "train.csv", size=4)
    manager = RunManager(
        ServiceSettings.load(
            dict(
                token=TOKEN,
                input_prefixes=[str(root / "in")],
                output_prefixes=[str(root / "out")],
                teacher_prefixes=["http://127.0.0.1:"],
                state_uri=str(root / "state"),
                max_queued_runs=4,
            )
        ),
        executor=HeldExecutor(),
    )
    return create_app(manager)


# Built at import: Schemathesis's lazy fixture loader (`from_fixture`) fails on pytest 9 (it reads
# the removed `Function._nodeid`), so the schema is loaded from the app itself, once.
_ROOT = Path(tempfile.mkdtemp(prefix="raydspy-fuzz-"))
APP = _app(_ROOT)
# A schema-valid run may still be refused for what only the service can judge (a program that
# does not import, n above max_n): 422 with one sentence. `schema_valid_bodies_validate` holds the
# line: such a request never fails the request's own validation (FastAPI's list of problems), so
# every constraint of a body is in the schema.
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", 401, 403, 404, 409, 422, 429]}}}
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


@schemathesis.check
def schema_valid_bodies_validate(ctx, response, case):
    """A request generated valid against the schema is never refused by request validation."""
    if case.meta.generation.mode == GenerationMode.POSITIVE and response.status_code == 422:
        detail = response.json()["detail"]
        assert isinstance(detail, str), f"a schema-valid request failed validation: {detail}"


@pytest.fixture(scope="module")
def app():
    yield APP
    shutil.rmtree(_ROOT, ignore_errors=True)


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@schema.parametrize()
@FUZZ
def test_every_operation_with_the_token(app, case):
    case.call_and_validate(headers=AUTH)


@schema.parametrize()
@FUZZ
def test_every_operation_without_the_token(app, case):
    response = case.call_and_validate()
    assert response.status_code in (401, 404, 405, 413, 422)  # nothing past the token check without it


# -- the viewer's pages are not in the schema (HTML): the same promise, fuzzed with Hypothesis ------

VIEWER_PATHS = [
    "/viewer/",
    "/viewer/runs/{run}",
    "/viewer/runs/{run}/rollouts/{rollout}",
    "/viewer/partials/runs",
    "/viewer/partials/runs/{run}",
    "/viewer/partials/runs/{run}/overview",
    "/viewer/login",
]
PARAMS = ["min_reward", "max_reward", "error", "example_id", "offset", "part", "next"]
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_HEADER = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)


@pytest.fixture(scope="module")
def viewed_run(app):
    """A queued run whose output holds committed rows, so its pages read real parts."""
    manager = app.state.manager
    # Recorded directly: the fuzzed submissions may have filled the queue (429) by now.
    record = RunRecord(id=new_run_id(), request=manager.validate(RunRequest(**_viewer_run())), policy=manager.policy)
    manager.store.put(record)
    write_parts(record.request.output_uri, 12, 5)
    rollout = manager.preview(record.id, 1)[0]["rollout_id"]
    return record.id, rollout


def _viewer_run() -> dict:
    return {
        "program": "raydspy.programs.banking77:program",
        "input_uri": str(_ROOT / "in" / "train.csv"),
        "output_uri": str(_ROOT / "out" / "viewed"),
        "dry_run": True,
    }


@given(
    path=st.sampled_from(VIEWER_PATHS),
    params=st.dictionaries(st.sampled_from(PARAMS), _TEXT, max_size=4),
    cookie=st.one_of(st.none(), _HEADER),
    signed_in=st.booleans(),
    run=st.one_of(st.none(), _TEXT.filter(lambda t: "/" not in t and t not in (".", ".."))),
)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_the_viewers_pages_answer_any_query_and_cookie_without_a_5xx(
    app, viewed_run, path, params, cookie, signed_in, run
):
    run_id, rollout = viewed_run
    url = path.format(run=quote(run if run is not None else run_id, safe=""), rollout=rollout)
    headers = {"Authorization": f"Bearer {TOKEN}"} if signed_in else {}
    if cookie is not None:
        headers["Cookie"] = f"raydspy_viewer={cookie}"
    with TestClient(app, follow_redirects=False) as client:
        response = client.get(url, params=params, headers=headers)
    assert response.status_code < 500, (url, params, response.text[:300])


def test_the_service_still_answers_after_the_fuzzing(app):
    with TestClient(app) as client:
        listed = client.get("/v1/runs", headers=AUTH)
        assert listed.status_code == 200 and listed.json()["unreadable"] == []
        assert client.get("/viewer/", headers=AUTH).status_code == 200
