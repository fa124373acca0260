"""The HTTP service: its FastAPI app around a real RunManager whose runs execute as Ray tasks
on the session's local Ray (TestClient for the routes; one test goes through Ray Serve's proxy).

Runs are dry runs of the banking77 program (no LM), or real runs against a slow loopback
OpenAI-compatible server when a run must still be going while the test cancels it.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from fake_openai import slow_teacher
from fastapi.testclient import TestClient

from raydspy.errors import ConfigError
from raydspy.programs import banking77
from raydspy.service.api import create_app
from raydspy.service.dispatch import RunManager
from raydspy.service.runs import RunRecord, utcnow
from raydspy.service.schemas import RunState
from raydspy.service.settings import ServiceSettings

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROGRAM = "raydspy.programs.banking77:program"
REWARDS = "raydspy.programs.banking77:rewards"


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """Allowed input and output folders, a sample input, and a state folder."""
    root = tmp_path_factory.mktemp("service")
    (root / "in").mkdir()
    (root / "out").mkdir()
    banking77.write_sample(root / "in" / "train.csv", size=12)
    return root


def _settings(space, **overrides) -> ServiceSettings:
    values = dict(
        token=TOKEN,
        input_prefixes=[str(space / "in")],
        output_prefixes=[str(space / "out")],
        teacher_prefixes=["http://127.0.0.1:"],
        state_uri=str(space / "state"),
        max_body_bytes=4096,
        max_n=8,
        dispatch_interval_s=0.2,
    )
    values.update(overrides)
    return ServiceSettings.load(values)


@pytest.fixture
def client(space):
    manager = RunManager(_settings(space))
    with TestClient(create_app(manager)) as c:
        yield c


def _run(space, name: str, **fields) -> dict:
    body = {
        "program": PROGRAM,
        "rewards": REWARDS,
        "input_uri": str(space / "in" / "train.csv"),
        "output_uri": str(space / "out" / name),
        "n": 2,
        "dry_run": True,
        "batch_size": 4,
        "teacher": {"structured_outputs": True},
    }
    body.update(fields)
    return body


def _wait(client, run_id: str, until, timeout_s: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get(f"/v1/runs/{run_id}", headers=AUTH).json()
        if until(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.3)


# -- settings and security (no Ray) ------------------------------------------------------------


def test_settings_refuse_to_start_without_a_token(space, monkeypatch):
    monkeypatch.delenv("RAYDSPY_SERVICE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="RAYDSPY_SERVICE_TOKEN"):
        ServiceSettings.load({"state_uri": str(space / "state")})


def test_settings_from_yaml_file_and_environment(space, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYDSPY_SERVICE_TOKEN", "from-env")
    monkeypatch.setenv("RAYDSPY_SERVICE_MAX_N", "3")
    path = tmp_path / "service.yaml"
    path.write_text("allowed_modules: [myproj.programs]\nmax_n: 5\n")
    settings = ServiceSettings.load({"config_file": str(path), "max_actors": 2})
    assert settings.token.get_secret_value() == "from-env"
    assert settings.allowed_modules == ["myproj.programs"]
    assert (settings.max_n, settings.max_actors) == (5, 2)  # the file over the environment, args over both


def test_the_runs_teacher_fields_reach_its_teacher_config(space):
    from raydspy.service.schemas import RunRequest
    from raydspy.service.worker import _configs

    teacher = {
        "base_url": "http://teacher:8000/v1",
        "model": "m",
        "temperature": 0.7,
        "max_tokens": 64,
        "structured_outputs": True,
        "max_text_chars": 400,
        "seed": 5,
    }
    policy = _settings(space, teacher_prefixes=["http://teacher:8000/v1"]).policy()
    record = RunRecord(id="run-1", request=RunRequest(**_run(space, "seeded", teacher=teacher)), policy=policy)
    config, _ = _configs(record, None)
    assert {k: getattr(config, k) for k in teacher} == teacher
    assert config.sampling["seed"] == 5  # part of every rollout id, and each rollout's own seed


def test_the_service_takes_every_run_field_the_cli_has_with_the_same_defaults(space):
    from raydspy.cli.flags import PIPELINE_FLAGS, TEACHER_FLAGS
    from raydspy.pipeline.config import PipelineConfig
    from raydspy.service.schemas import RunRequest, TeacherSpec
    from raydspy.service.worker import _configs

    assert set(PIPELINE_FLAGS) <= set(RunRequest.model_fields)
    assert set(TEACHER_FLAGS) - {"api_key"} <= set(TeacherSpec.model_fields)  # the key is the service's
    for name in PIPELINE_FLAGS:
        assert RunRequest.model_fields[name].get_default() == PipelineConfig.model_fields[name].get_default(), name
    run = {"rollouts_per_call": 4, "skip_invalid": True, "actor_start_timeout_s": 60, "threads_per_actor": 3}
    teacher = {"base_url": "http://t:8000/v1", "model": "m", "timeout_s": 30.0, "cache": False}
    policy = _settings(space, teacher_prefixes=["http://t:8000/v1"]).policy()
    record = RunRecord(id="run-2", request=RunRequest(**_run(space, "all", teacher=teacher, **run)), policy=policy)
    config, layout = _configs(record, None)
    assert {k: getattr(layout, k) for k in run} == run and {k: getattr(config, k) for k in teacher} == teacher


def test_the_request_keeps_the_configs_limits(client, space):
    body = _run(space, "limits", threads_per_actor=10_000)
    response = client.post("/v1/runs", json=body, headers=AUTH)
    assert response.status_code == 422 and "threads_per_actor" in response.text


def test_bearer_token_is_required(client):
    assert client.get("/v1/runs").status_code == 401
    assert client.get("/v1/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/runs", headers=AUTH).status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/cancel", "/v1/runs/{run_id}/rollouts"} <= set(paths)


@pytest.mark.parametrize(
    "change, where",
    [
        ({"program": None}, "program"),
        ({"input_uri": None}, "input_uri"),
        ({"task": "nope"}, "Input should be 'banking77' or 'orders'"),
        ({"n": 0}, "n"),
        ({"surprise": 1}, "surprise"),
        ({"program": "not a spec"}, "program"),
        ({"teacher": {"temperature": 9}}, "temperature"),
    ],
)
def test_invalid_bodies_get_422_with_the_reason(client, space, change, where):
    body = {k: v for k, v in {**_run(space, "bad"), **change}.items() if v is not None}
    response = client.post("/v1/runs", json=body, headers=AUTH)
    assert response.status_code == 422
    assert where in json.dumps(response.json()["detail"])


def test_a_task_fills_in_what_the_request_leaves_out(space):
    from raydspy.service.schemas import RunRequest
    from raydspy.task import load_task

    task = load_task("orders")
    out = str(space / "out" / "task")
    request = RunRequest(task="orders", output_uri=out, teacher={"temperature": 0.9}).with_task()
    assert (request.program, request.rewards, request.input_uri) == (task.program, task.rewards, task.input)
    assert (request.n, request.id_field) == (task.n, task.id_field) == (2, "id")
    teacher = request.teacher
    assert (teacher.temperature, teacher.max_tokens, teacher.structured_outputs) == (0.9, task.max_tokens, True)
    # the request's own values win; a null counts as left out
    own = RunRequest(task="orders", output_uri=out, input_uri="mine.jsonl", n=5, rewards=None).with_task()
    assert (own.input_uri, own.n, own.rewards) == ("mine.jsonl", 5, task.rewards)
    assert RunRequest(**_run(space, "plain")).with_task().program == PROGRAM  # no task: as sent


def test_reward_weights_must_name_the_runs_rewards(client, space):
    body = _run(space, "weights", reward_weights={"exact_match": 2.0, "exact": 1.0})
    response = client.post("/v1/runs", json=body, headers=AUTH)
    assert response.status_code == 422 and "unknown reward 'exact'" in response.json()["detail"]


def test_a_tasks_input_is_held_to_the_input_prefixes(client, space):
    body = _run(space, "task", task="orders", program=None, rewards=None, input_uri=None)
    response = client.post("/v1/runs", json=body, headers=AUTH)
    assert response.status_code == 403 and "input URI" in response.json()["detail"]


def test_limits_and_unloadable_programs_get_422(client, space):
    response = client.post("/v1/runs", json=_run(space, "x", n=9), headers=AUTH)
    assert response.status_code == 422 and "max_n=8" in response.json()["detail"]
    # allow-listed, but it gives a list, not a dspy.Module
    response = client.post(
        "/v1/runs", json=_run(space, "x", program="raydspy.programs.banking77:top_labels"), headers=AUTH
    )
    assert response.status_code == 422 and "not a dspy.Module" in response.json()["detail"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"program": "os:getcwd"}, "module 'os' is not allowed"),
        ({"rewards": "subprocess:run"}, "module 'subprocess' is not allowed"),
        ({"program": "raydspy.programsX:program"}, "not allowed"),
        ({"input_uri": "/etc/passwd"}, "input URI"),
        ({"output_uri": "/tmp/elsewhere"}, "output URI"),
        ({"output_uri": "s3://rollouts/out?endpoint_override=evil:9000"}, "query string"),
        ({"teacher": {"base_url": "http://169.254.169.254/v1"}}, "teacher URL"),
    ],
)
def test_allow_lists_and_prefixes_get_403(client, space, change, message):
    response = client.post("/v1/runs", json=_run(space, "x", **change), headers=AUTH)
    assert response.status_code == 403
    assert message in response.json()["detail"]


def test_paths_escaping_a_prefix_are_refused(client, space):
    body = _run(space, "x", output_uri=str(space / "out" / ".." / "in" / "evil"))
    assert client.post("/v1/runs", json=body, headers=AUTH).status_code == 403
    (space / "out" / "link").symlink_to("/tmp", target_is_directory=True)
    body = _run(space, "x", output_uri=str(space / "out" / "link" / "evil"))
    assert client.post("/v1/runs", json=body, headers=AUTH).status_code == 403


def test_oversized_bodies_get_413(client, space):
    body = _run(space, "big", id_field="x" * 100)
    big = json.dumps(body).replace('"n": 2', '"n": 2' + ", " * 5000)
    response = client.post("/v1/runs", content=big, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413

    def chunks():  # no Content-Length: the limit applies while the body streams in
        yield b'{"program": "' + b"a" * 3000
        yield b"b" * 3000 + b'"}'

    response = client.post("/v1/runs", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413


def test_unknown_run_is_404(client):
    assert client.get("/v1/runs/run-nope", headers=AUTH).status_code == 404
    assert client.post("/v1/runs/run-nope/cancel", headers=AUTH).status_code == 404
    assert client.get("/v1/runs/..%2F..%2Fetc/rollouts", headers=AUTH).status_code == 404


# -- runs on Ray ---------------------------------------------------------------------------------


@pytest.fixture
def running(ray_local, space):
    """A client whose manager's dispatcher is running."""
    manager = RunManager(_settings(space)).start()
    with TestClient(create_app(manager)) as c:
        yield c
    manager.stop()


def test_submit_status_preview_list(running, space):
    response = running.post("/v1/runs", json=_run(space, "dry"), headers=AUTH)
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    assert response.json()["state"] == "PENDING"

    status = _wait(running, run_id, lambda s: RunState(s["state"]).terminal)
    assert status["state"] == "SUCCEEDED", status
    assert status["rollouts_done"] == status["rollouts_total"] == 24
    assert status["errors"] == 0 and status["rollouts_per_s"] > 0

    preview = running.get(f"/v1/runs/{run_id}/rollouts?limit=5", headers=AUTH).json()
    assert len(preview["rows"]) == 5
    row = preview["rows"][0]
    assert set(row["inputs"]) == {"text", "category"} and row["dry_run"] and row["lm_calls"] == 1
    assert "trace" not in row
    with_trace = running.get(f"/v1/runs/{run_id}/rollouts?limit=1&trace=true", headers=AUTH).json()
    assert "Respond with a JSON object" in with_trace["rows"][0]["trace"][0]["messages"][-1]["content"]

    listed = running.get("/v1/runs", headers=AUTH).json()["runs"]
    assert run_id in [r["id"] for r in listed]
    assert running.post(f"/v1/runs/{run_id}/cancel", headers=AUTH).status_code == 409  # it already ended


def test_a_run_of_a_task_with_reward_weights(running, space):
    """A task (the two-stage orders program) and reward weights through the service, against a
    fake teacher: the task's program, rewards and n run; the weights make the combined reward."""
    from fake_openai import FakeOpenAI, orders_teacher

    examples = space / "in" / "orders.jsonl"
    rows = [
        {"id": f"o{i}", "message": f"{i} mugs to Oslo.", "city": "Oslo", "quantity": 2, "item": "mugs"}
        for i in range(3)
    ]
    examples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with FakeOpenAI(reply=orders_teacher) as teacher:
        statuses = {}
        for name, weights in (("orders-mean", {}), ("orders-weighted", {"reply_mentions": 0.0})):
            body = {
                "task": "orders",
                "input_uri": str(examples),
                "output_uri": str(space / "out" / name),
                "reward_weights": weights,
                "teacher": {"base_url": teacher.url, "model": "fake-model", "cache": False},
            }
            response = running.post("/v1/runs", json=body, headers=AUTH)
            assert response.status_code == 201, response.text
            statuses[name] = _wait(running, response.json()["id"], lambda s: RunState(s["state"]).terminal)
    for status in statuses.values():
        assert status["state"] == "SUCCEEDED", status
        assert status["program"] == "raydspy.programs.orders:program" and status["rollouts_total"] == 6
    # fields right, the reply names none of them: the mean of four rewards, or the three weighted in
    assert statuses["orders-mean"]["mean_reward"] == pytest.approx(0.75)
    assert statuses["orders-weighted"]["mean_reward"] == pytest.approx(1.0)


def test_a_failing_run_records_why(running, space):
    (space / "in" / "nolabel.jsonl").write_text('{"query": "card?"}\n')
    run_id = running.post(
        "/v1/runs", json=_run(space, "fail", input_uri=str(space / "in" / "nolabel.jsonl")), headers=AUTH
    ).json()["id"]
    status = _wait(running, run_id, lambda s: RunState(s["state"]).terminal)
    assert status["state"] == "FAILED"
    assert "InputError" in status["message"] and "text" in status["message"]


def test_cancel_stops_a_running_run(running, space):
    teacher = slow_teacher(delay_s=0.5)
    try:
        body = _run(
            space,
            "cancel",
            dry_run=False,
            batch_size=1,
            num_actors=1,
            threads_per_actor=1,
            n=2,
            teacher={"base_url": teacher.url, "model": "slow-model", "temperature": 1.0},
        )
        run_id = running.post("/v1/runs", json=body, headers=AUTH).json()["id"]
        status = _wait(running, run_id, lambda s: s["state"] == "RUNNING" and s["rollouts_done"] >= 2)
        assert status["state"] == "RUNNING", status
        response = running.post(f"/v1/runs/{run_id}/cancel", headers=AUTH)
        assert response.status_code == 200 and response.json()["cancel_requested"]
        status = _wait(running, run_id, lambda s: RunState(s["state"]).terminal)
        assert status["state"] == "CANCELLED", status
        assert 2 <= status["rollouts_done"] < 24
    finally:
        teacher.close()


def test_cancel_a_queued_run(space, ray_local):
    manager = RunManager(_settings(space))  # no dispatcher: the run stays queued
    with TestClient(create_app(manager)) as c:
        run_id = c.post("/v1/runs", json=_run(space, "queued"), headers=AUTH).json()["id"]
        assert c.post(f"/v1/runs/{run_id}/cancel", headers=AUTH).json()["state"] == "CANCELLED"


def test_a_restarted_service_keeps_its_records_and_resumes_runs(space, ray_local):
    first = RunManager(_settings(space))
    with TestClient(create_app(first)) as c:
        run_id = c.post("/v1/runs", json=_run(space, "restart"), headers=AUTH).json()["id"]
    # The old replica had dispatched it and died with its task: the record still says RUNNING.
    record = first.store.get(run_id)
    first.store.put(
        record.model_copy(
            update={"state": RunState.RUNNING, "attempt": 1, "dispatched_at": utcnow(), "started_at": utcnow()}
        )
    )

    second = RunManager(_settings(space)).start()
    try:
        with TestClient(create_app(second)) as c:
            assert run_id in [r["id"] for r in c.get("/v1/runs", headers=AUTH).json()["runs"]]
            status = _wait(c, run_id, lambda s: RunState(s["state"]).terminal)
        assert status["state"] == "SUCCEEDED" and status["rollouts_done"] == 24
        assert second.store.get(run_id).attempt == 2
    finally:
        second.stop()
    third = RunManager(_settings(space))
    assert isinstance(third.store.get(run_id), RunRecord) and third.store.get(run_id).state == RunState.SUCCEEDED


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_through_ray_serve(ray_local, space):
    """The Serve deployment of serve_configs/service.yaml's import path, over real HTTP."""
    import requests
    from ray import serve

    from raydspy.service.app import build_app

    settings = _settings(space).model_dump(mode="json")
    settings["token"] = TOKEN
    serve.start(http_options={"host": "127.0.0.1", "port": _free_port()})
    from ray.serve.context import _get_global_client

    port = _get_global_client().http_config.port
    serve.run(build_app(settings), name="raydspy-test", route_prefix="/raydspy-test")
    base = f"http://127.0.0.1:{port}/raydspy-test"
    try:
        assert requests.get(f"{base}/v1/runs", timeout=30).status_code == 401
        assert requests.get(f"{base}/docs", timeout=30).status_code == 200
        response = requests.post(f"{base}/v1/runs", json=_run(space, "serve"), headers=AUTH, timeout=30)
        assert response.status_code == 201, response.text
        run_id = response.json()["id"]
        deadline = time.monotonic() + 180
        while True:
            status = requests.get(f"{base}/v1/runs/{run_id}", headers=AUTH, timeout=30).json()
            if RunState(status["state"]).terminal or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status["state"] == "SUCCEEDED" and status["rollouts_done"] == 24
    finally:
        serve.delete("raydspy-test")


def test_mlflow_needs_a_configured_tracking_uri(client, space):
    response = client.post("/v1/runs", json=_run(space, "x", mlflow=True), headers=AUTH)
    assert response.status_code == 422 and "mlflow_tracking_uri" in response.json()["detail"]


def test_a_run_tracked_in_mlflow(space, ray_local, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    # This process reads the file store too; MLflow 3 opens one only when asked to (the run's
    # worker sets the same for itself, raydspy.pipeline.tracking).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (space / "mlruns").as_uri()
    manager = RunManager(_settings(space, mlflow_tracking_uri=uri)).start()
    try:
        with TestClient(create_app(manager)) as c:
            body = _run(space, "tracked", mlflow=True, mlflow_traces=3)
            run_id = c.post("/v1/runs", json=body, headers=AUTH).json()["id"]
            status = _wait(c, run_id, lambda s: RunState(s["state"]).terminal)
        assert status["state"] == "SUCCEEDED" and status["mlflow_run_id"], status
        run = mlflow.MlflowClient(uri).get_run(status["mlflow_run_id"])
        assert run.info.run_name == run_id and run.data.metrics["rows"] == 24
        assert run.data.tags["rollouts_uri"] == str(space / "out" / "tracked")
        traces = mlflow.MlflowClient(uri).search_traces(
            locations=[run.info.experiment_id], filter_string=f"metadata.`mlflow.sourceRun` = '{run.info.run_id}'"
        )
        assert len(traces) == 3 and all(t.data.spans[0].name == "ChainOfThought.forward" for t in traces)
    finally:
        manager.stop()
