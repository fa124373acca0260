"""The HTTP service as a trust boundary: each probe of issue 27, as a hostile token holder would
send it, answered 4xx (or, for links planted in the prefixes, the run refuses without reading or
writing outside), nothing outside the allowed modules called, and the service still answering its
list and its viewer afterwards.

Most tests run the real app, manager and store in-process with a held executor (runs are queued,
never executed: no Ray); the runs that must execute to prove the worker refuses use the session's
local Ray (`ray_local`). Schemathesis fuzzes the same app from its schema: tests/test_service_fuzz.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import user_programs.exposed  # noqa: F401 - imported before `tripwires` patches os: it keeps the real os.system
from fastapi.testclient import TestClient

from raydspy.errors import ConfigError, NotAllowedError
from raydspy.programs import banking77
from raydspy.service.api import create_app
from raydspy.service.dispatch import RunManager
from raydspy.service.runs import RunRecord
from raydspy.service.schemas import RunRequest, RunState
from raydspy.service.settings import ServiceSettings

TOKEN = "boundary-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
ALLOWED = ["raydspy.programs", "user_programs.exposed"]
REPO = Path(__file__).resolve().parents[1]


class HeldExecutor:
    """Takes runs and never starts them (records what it was given)."""

    name = "task"

    def __init__(self):
        self.submitted: list[str] = []

    def reference(self, record) -> str:
        return f"held:{record.id}"

    def submit(self, record) -> None:
        self.submitted.append(record.id)

    def cancel(self, record) -> None:
        pass

    def outcome(self, record):
        return None


@pytest.fixture
def space(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "outside").mkdir()
    banking77.write_sample(tmp_path / "in" / "train.csv", size=6)
    return tmp_path


def _settings(space, **overrides) -> ServiceSettings:
    values = dict(
        token=TOKEN,
        allowed_modules=ALLOWED,
        input_prefixes=[str(space / "in")],
        output_prefixes=[str(space / "out")],
        teacher_prefixes=["http://127.0.0.1:"],
        state_uri=str(space / "state"),
        dispatch_interval_s=0.2,
    )
    values.update(overrides)
    return ServiceSettings.load(values)


@pytest.fixture
def manager(space):
    return RunManager(_settings(space), executor=HeldExecutor())


@pytest.fixture
def client(manager):
    with TestClient(create_app(manager)) as c:
        yield c


def _run(space, name: str = "r", **fields) -> dict:
    body = {
        "program": "raydspy.programs.banking77:program",
        "rewards": "raydspy.programs.banking77:rewards",
        "input_uri": str(space / "in" / "train.csv"),
        "output_uri": str(space / "out" / name),
        "n": 1,
        "dry_run": True,
    }
    body.update(fields)
    return body


def _still_answers(client) -> None:
    """After a probe: the list, the viewer and the docs still answer."""
    assert client.get("/v1/runs", headers=AUTH).status_code == 200
    assert client.get("/viewer/", headers=AUTH).status_code == 200
    assert client.get("/openapi.json").status_code == 200


# -- 1. specs cannot leave the allowed modules ---------------------------------------------------

PROBES = [
    "raydspy.programs.banking77:random._os.getpid",  # private attributes
    "raydspy.programs.banking77:random._os.abort",
    "raydspy.programs.banking77:dspy.primitives.local_interpreter.subprocess.run",  # a module hop
    "raydspy.programs.banking77:csv.re.enum",
    "raydspy.programs.banking77:random",
    "raydspy.programs.banking77:Path",  # a class the module imported: would be instantiated
    "raydspy.programs.banking77:ExactMatch",  # defined in raydspy.core, outside the allow-list
    "user_programs.exposed:system",  # `from os import system`
    "user_programs.exposed:subprocess.run",
    "user_programs.exposed:os.system",
    "os:system",
    "builtins:eval",
    "raydspy.programs.banking77:program.__class__",
]


@pytest.fixture
def tripwires(monkeypatch):
    """Every dangerous callable a probe could reach, replaced by one that records its call."""
    calls: list[str] = []
    for owner, name in [(os, "system"), (os, "abort"), (subprocess, "run"), (subprocess, "Popen")]:
        monkeypatch.setattr(owner, name, lambda *a, _n=name, **k: calls.append(_n))
    return calls


@pytest.mark.parametrize("field", ["program", "rewards"])
@pytest.mark.parametrize("spec", PROBES)
def test_a_spec_cannot_reach_outside_the_allowed_modules_and_nothing_is_called(client, space, tripwires, spec, field):
    response = client.post("/v1/runs", json=_run(space, **{field: spec}), headers=AUTH)
    assert response.status_code in (403, 422), response.text
    assert tripwires == []
    assert client.get("/v1/runs", headers=AUTH).json()["runs"] == []  # nothing was queued
    _still_answers(client)


def test_the_refusals_say_why(client, space):
    def detail(**fields) -> tuple[int, str]:
        response = client.post("/v1/runs", json=_run(space, **fields), headers=AUTH)
        return response.status_code, str(response.json()["detail"])

    code, why = detail(rewards="user_programs.exposed:system")
    assert code == 403 and "defined in 'posix', outside the allowed modules" in why
    code, why = detail(program="raydspy.programs.banking77:random")
    assert code == 403 and "is a module that 'raydspy.programs.banking77' imported" in why
    code, why = detail(program="user_programs.exposed:NeedsArgs")
    assert code == 422 and "missing 1 required positional argument: 'labels'" in why
    code, why = detail(program="user_programs.exposed:broken_program")
    assert code == 422 and "broken_program() raised RuntimeError: the factory is broken" in why
    code, _ = detail(program="raydspy.programs.banking77:_rows")
    assert code == 422  # a private name does not match the spec pattern


def test_what_an_allowed_module_defines_still_loads(client, space):
    fields = {"program": "user_programs.exposed:Tasks.program", "rewards": "user_programs.exposed:exact"}
    response = client.post("/v1/runs", json=_run(space, **fields), headers=AUTH)
    assert response.status_code == 201, response.text


def test_the_worker_applies_the_recorded_allow_lists_again(manager, space):
    from raydspy.pipeline.workers import make_runner
    from raydspy.service.worker import execute_run
    from raydspy.teacher.client import TeacherConfig

    with pytest.raises(NotAllowedError):
        make_runner("user_programs.exposed:system", TeacherConfig(), None, None, None, True, ALLOWED)
    with pytest.raises(NotAllowedError):
        make_runner("raydspy.programs.banking77:program", TeacherConfig(), "os:system", None, None, True, ALLOWED)
    # A record whose policy no longer allows its program (the operator narrowed the allow-list):
    # the worker fails it before it reads or runs anything (no Ray needed to get that far).
    record = manager.submit(RunRequest(**_run(space)))
    narrowed = manager.policy.model_copy(update={"allowed_modules": ("user_programs.exposed",)})
    manager.store.put(manager.store.get(record.id).model_copy(update={"policy": narrowed}))
    assert execute_run(record.id, manager.settings.state_uri) == "FAILED"
    assert "not allowed" in manager.store.get(record.id).message
    assert not (space / "out" / "r").exists()


# -- 2. finite numbers and bounded sizes ----------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '"reward_weights": {"exact_match": 1e999}',
        '"reward_weights": {"exact_match": NaN}',
        '"reward_weights": {"exact_match": -Infinity}',
        '"reward_weights": {"exact_match": -1}',
        '"reward_weights": {"exact_match": 1e7}',
        '"teacher": {"temperature": NaN}',
        '"teacher": {"timeout_s": Infinity}',
        '"max_error_rate": NaN',
        '"limit": ' + "9" * 4400,
        '"teacher": {"max_tokens": 1000000000}',
        '"teacher": {"timeout_s": 1e9}',
        '"teacher": {"seed": 99999999999999999999}',
        '"teacher": {"model": "' + "m" * 300 + '"}',
        '"teacher": {"max_text_chars": 100000000000}',
        '"actor_start_timeout_s": 1000000000',
        '"rollouts_per_call": 1000000000000',
        '"limit": 10000000000000',
        '"n": 1000000',
        '"num_actors": 100000',
        '"task": "' + "t" * 100 + '"',
        '"reward_weights": {' + ", ".join(f'"w{i}": 1' for i in range(100)) + "}",
    ],
)
def test_non_finite_and_unbounded_numbers_and_sizes_get_4xx_and_break_nothing(client, manager, space, raw):
    body = json.dumps(_run(space))[:-1] + ", " + raw + "}"
    response = client.post("/v1/runs", content=body, headers=AUTH)
    assert response.status_code in (400, 413, 422), response.text
    json.loads(response.text)  # a JSON answer even when the body held NaN
    assert manager.store.ids() == []
    _still_answers(client)
    RunManager(manager.settings, executor=HeldExecutor())  # a restarted replica starts


def test_a_60_kb_model_name_is_422_and_a_body_above_the_limit_413(client, space):
    assert client.post("/v1/runs", json=_run(space, teacher={"model": "m" * 60_000}), headers=AUTH).status_code == 422
    assert client.post("/v1/runs", json=_run(space, teacher={"model": "m" * 70_000}), headers=AUTH).status_code == 413


def test_a_nul_or_a_newline_in_a_uri_or_a_name_too_long_for_the_disk_is_422(client, space):
    out = str(space / "out")
    for uri in [out + "/a\x00b", out + "/a\r\nb", out + "/" + "x" * 256, out + "/" + "é" * 200]:
        response = client.post("/v1/runs", json=_run(space, output_uri=uri), headers=AUTH)
        assert response.status_code == 422, (uri, response.text)
    _still_answers(client)


# -- 3. fault isolation per record ----------------------------------------------------------------


def test_an_unreadable_record_is_skipped_logged_and_shown_and_breaks_nothing(client, manager, space):
    good = client.post("/v1/runs", json=_run(space, "good"), headers=AUTH).json()["id"]
    runs = space / "state" / "runs"
    (runs / "run-20260101-000000-cutshort.json").write_text('{"id": "run-2026')
    # The record issue 27 found: a reward weight stored as null (JSON has no infinity).
    record = json.loads((runs / f"{good}.json").read_text())
    record.update(id="run-20260101-000001-nullweight")
    record["request"]["reward_weights"] = {"exact_match": None}
    (runs / "run-20260101-000001-nullweight.json").write_text(json.dumps(record))

    listed = client.get("/v1/runs", headers=AUTH).json()
    assert [r["id"] for r in listed["runs"]] == [good]
    assert {u["id"] for u in listed["unreadable"]} == {"run-20260101-000000-cutshort", "run-20260101-000001-nullweight"}
    one = client.get("/v1/runs/run-20260101-000001-nullweight", headers=AUTH)
    assert one.status_code == 503 and "does not parse" in one.json()["detail"]
    _still_answers(client)

    restarted = RunManager(manager.settings, executor=HeldExecutor())  # the replica starts anyway
    restarted.dispatch_once()
    assert restarted.executor.submitted == [good]  # and the dispatcher starts the other runs


def test_a_run_whose_output_cannot_be_counted_does_not_fail_the_list(client, manager, space):
    run_id = client.post("/v1/runs", json=_run(space, "linked"), headers=AUTH).json()["id"]
    (space / "out" / "linked").symlink_to(space / "outside")  # refused by the run's storage
    listed = client.get("/v1/runs", headers=AUTH).json()["runs"]
    (status,) = [r for r in listed if r["id"] == run_id]
    assert status["rollouts_done"] is None and "symbolic link" in status["output_error"]
    assert client.get(f"/v1/runs/{run_id}", headers=AUTH).status_code == 200
    assert client.get(f"/v1/runs/{run_id}/rollouts", headers=AUTH).status_code == 503
    _still_answers(client)


# -- 4. prefixes: no world-writable default, teachers in a plain form -----------------------------


def test_a_prefix_another_local_user_could_control_is_refused_at_start(space, tmp_path):
    with pytest.raises(ConfigError, match="every local user can write"):
        RunManager(_settings(space, output_prefixes=["/tmp/raydspy-not-made-yet-xyz"]), executor=HeldExecutor())
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by every local user"):
        RunManager(_settings(space, input_prefixes=[str(shared)]), executor=HeldExecutor())


def test_the_shipped_service_config_has_no_prefix_another_user_could_control():
    import yaml

    from raydspy.service.policy import check_prefix_owner

    config = yaml.safe_load((REPO / "serve_configs" / "service.yaml").read_text())
    args = config["applications"][0]["args"]
    for prefix in args["input_prefixes"] + args["output_prefixes"]:
        assert not os.path.expanduser(prefix).startswith(("/tmp", "/var/tmp", "/dev/shm")), prefix
        check_prefix_owner(prefix, "prefix")  # this machine's home is the service user's own


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1/../../admin",
        "http://127.0.0.1:8000/v1/%2e%2e/admin",
        "http://127.0.0.1:8000/v1\r\nX-Injected: 1",
        "http://127.0.0.1:8000/v1?x=1",
        "http://127.0.0.1:8000/v1#frag",
        "http://user:pw@127.0.0.1:8000/v1",
        "http://127.0.0.1:8000\\@evil/v1",
    ],
)
def test_teacher_urls_that_are_not_plain_are_refused(client, space, url):
    response = client.post("/v1/runs", json=_run(space, dry_run=False, teacher={"base_url": url}), headers=AUTH)
    assert response.status_code in (403, 422), response.text


# -- 5. quotas ------------------------------------------------------------------------------------


def test_a_full_queue_answers_429_with_retry_after(space):
    manager = RunManager(_settings(space, max_queued_runs=2), executor=HeldExecutor())
    with TestClient(create_app(manager)) as client:
        for name in ("a", "b"):
            assert client.post("/v1/runs", json=_run(space, name), headers=AUTH).status_code == 201
        full = client.post("/v1/runs", json=_run(space, "c"), headers=AUTH)
        assert full.status_code == 429 and int(full.headers["Retry-After"]) > 0
        manager.dispatch_once()  # one slot free (max_concurrent_runs 2: both dispatched)
        assert client.post("/v1/runs", json=_run(space, "c"), headers=AUTH).status_code == 201


# -- 6. the token first, and /docs with no third-party assets ------------------------------------


def test_without_the_token_nothing_of_the_body_is_read(client, space):
    for body in [b"\x80 not json", b'{"n": NaN}', json.dumps(_run(space)).encode()]:
        response = client.post("/v1/runs", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"


def test_docs_load_nothing_from_another_origin(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "http://" not in page.text and "https://" not in page.text
    assert client.get("/redoc").status_code == 404


# -- 7. links and swaps inside the prefixes: the run refuses (Ray) --------------------------------


def _finish(manager, run_id: str, timeout_s: float = 240.0) -> RunRecord:
    deadline = time.monotonic() + timeout_s
    while True:
        manager.dispatch_once()
        record = manager.store.get(run_id)
        if record.state.terminal or time.monotonic() > deadline:
            return record
        time.sleep(0.3)


@pytest.fixture
def real_manager(space, ray_local):
    return RunManager(_settings(space))  # the real task executor, on the session's Ray


def test_a_link_inside_an_input_folder_is_refused_and_its_target_never_read(real_manager, space):
    folder = space / "in" / "folder"
    folder.mkdir()
    banking77.write_sample(folder / "a.csv", size=4)
    secret = space / "outside" / "secret.csv"
    secret.write_text("query,label\nTHE-SECRET,card_arrival\n")
    (folder / "b.csv").symlink_to(secret)
    record = real_manager.submit(RunRequest(**_run(space, "from-folder", input_uri=str(folder))))
    done = _finish(real_manager, record.id)
    assert done.state == RunState.FAILED and "symbolic link" in done.message, done.message
    rows = real_manager.preview(record.id, 100) if (space / "out" / "from-folder").exists() else []
    assert "THE-SECRET" not in json.dumps(rows, default=str)


def test_a_link_inside_an_output_is_never_written_through(real_manager, space):
    output = space / "out" / "linked-runs"
    output.mkdir()
    (output / "_runs").symlink_to(space / "outside")
    record = real_manager.submit(RunRequest(**_run(space, "linked-runs")))
    done = _finish(real_manager, record.id)
    assert done.state == RunState.FAILED and "symbolic link" in done.message, done.message
    assert list((space / "outside").iterdir()) == []


def test_an_output_swapped_for_a_link_while_queued_is_never_written_through(real_manager, space):
    record = real_manager.submit(RunRequest(**_run(space, "swapped")))  # checked: a plain folder
    (space / "out" / "swapped").symlink_to(space / "outside")  # then swapped, before it starts
    done = _finish(real_manager, record.id)
    assert done.state == RunState.FAILED, done.message
    assert list((space / "outside").iterdir()) == []
