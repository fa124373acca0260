"""serve_configs/service.yaml is a valid Serve deploy config whose args are valid service settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raydspy.errors import ConfigError

CONFIG = Path(__file__).resolve().parents[1] / "serve_configs" / "service.yaml"


def _app() -> dict:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    (app,) = schema.applications
    return app


def test_service_yaml_is_a_serve_config_of_the_service_app():
    app = _app()
    assert app.import_path == "raydspy.service.app:build_app"
    assert app.route_prefix == "/raydspy"  # beside the teacher, which Serve routes at /
    assert "token" not in app.args  # the token comes from the environment


def test_service_yaml_args_build_the_application(monkeypatch):
    from ray.serve import Application

    from raydspy.service.app import build_app
    from raydspy.service.settings import ServiceSettings

    monkeypatch.setenv("RAYDSPY_SERVICE_TOKEN", "x" * 32)
    args = _app().args
    settings = ServiceSettings.load(args)
    assert settings.allowed_modules == ["raydspy.programs"] and settings.executor == "task"
    assert isinstance(build_app(args), Application)


def test_service_yaml_without_a_token_fails_at_deploy(monkeypatch):
    from raydspy.service.app import build_app

    monkeypatch.delenv("RAYDSPY_SERVICE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="bearer token"):
        build_app(_app().args)
