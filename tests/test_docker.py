"""docker/Dockerfile and the KubeRay examples in k8s/, checked without a Docker engine or a
cluster: hadolint lints the Dockerfile; the YAML parses and has what KubeRay requires."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next(
        (str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()), None
    )


def test_dockerfile_passes_hadolint():
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install -c constraints.txt -e '.[service]')")
    result = subprocess.run([binary, "--failure-threshold", "warning", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_on_the_pinned_ray_image_and_copies_what_exists():
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    ray_pin = re.search(r"^ray==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    assert base.startswith(f"rayproject/ray:{ray_pin}-py311")
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"COPY of a missing path: {path}"
    assert '".[cpu,service]"' in text


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / "k8s" / name).read_text())


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["template"]["spec"]["containers"]


def _check_cluster(spec: dict) -> None:
    ray_pin = re.search(r"^ray==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    assert spec["rayVersion"] == ray_pin
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # KubeRay wants strings
    for group in [head, *spec.get("workerGroupSpecs", [])]:
        (container,) = _containers(group)
        assert container["image"] and container["resources"]["limits"]
    for group in spec.get("workerGroupSpecs", []):
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_rayservice_example():
    doc = _load("rayservice.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    _check_cluster(doc["spec"]["rayClusterConfig"])
    from ray.serve.schema import ServeDeploySchema

    serve_config = ServeDeploySchema.model_validate(yaml.safe_load(doc["spec"]["serveConfigV2"]))
    (app,) = serve_config.applications
    assert app.import_path == "raydspy.service.app:build_app"
    from raydspy.service.settings import ServiceSettings

    settings = ServiceSettings(token="x", **app.args)  # the args are valid service settings
    assert settings.executor == "job"
    env = _containers(doc["spec"]["rayClusterConfig"]["headGroupSpec"])[0]["env"]
    assert any(e["name"] == "RAYDSPY_SERVICE_TOKEN" and "secretKeyRef" in e["valueFrom"] for e in env)


def test_rayjob_example_runs_the_collect_entry_point():
    doc = _load("rayjob.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    spec = doc["spec"]
    _check_cluster(spec["rayClusterSpec"])
    entrypoint = spec["entrypoint"].split()
    assert entrypoint[:2] == ["python", "/opt/raydspy/jobs/collect.py"]
    from raydspy.cli.main import build_parser

    args = build_parser().parse_args(["collect", *entrypoint[2:]])  # the flags are `raydspy collect`'s
    assert args.program and args.input and args.output.startswith("s3://")
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
