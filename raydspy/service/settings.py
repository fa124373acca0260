"""The service's configuration: from the Serve config's ``args``, a YAML file, and the environment.

Precedence (highest first): the Serve config's ``args`` (or keyword arguments), the YAML file
named by ``config_file`` (or ``$RAYDSPY_SERVICE_CONFIG_FILE``), environment variables
``RAYDSPY_SERVICE_<FIELD>`` (lists as JSON, e.g. ``RAYDSPY_SERVICE_INPUT_PREFIXES='["s3://data/"]'``),
then the defaults below. The bearer token belongs in the environment (``RAYDSPY_SERVICE_TOKEN``),
not in a file under version control.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from raydspy.errors import ConfigError
from raydspy.service.policy import RunPolicy
from raydspy.teacher.client import DEFAULT_TEACHER_URL

__all__ = ["ServiceSettings", "DEFAULT_STATE_URI"]

DEFAULT_STATE_URI = str(Path.home() / ".cache" / "raydspy" / "service")


class ServiceSettings(BaseSettings):
    """Who may call the service, what a run may touch, and how runs execute."""

    model_config = SettingsConfigDict(env_prefix="RAYDSPY_SERVICE_", extra="forbid", frozen=True)

    token: SecretStr | None = Field(
        None,
        description="Bearer token every /v1 request must carry. Required: the service refuses to start without one.",
    )
    allowed_modules: list[str] = Field(
        ["raydspy.programs"],
        description="Importable module prefixes programs and rewards may come from (`a.b` allows `a.b` and `a.b.c`).",
    )
    input_prefixes: list[str] = Field(
        default_factory=list, description="URI prefixes input URIs must lie under (local paths, s3://, gs://)."
    )
    output_prefixes: list[str] = Field(default_factory=list, description="URI prefixes output URIs must lie under.")
    teacher_prefixes: list[str] = Field(
        [DEFAULT_TEACHER_URL],
        description="Base URLs a run's teacher may use (prefix match); the service calls no other host.",
    )
    default_teacher_url: str = Field(DEFAULT_TEACHER_URL, description="Teacher used when a request names none.")
    default_teacher_model: str = Field("smollm2-135m-instruct", description="Its model name.")
    state_uri: str = Field(DEFAULT_STATE_URI, description="Where run records persist (local folder, s3:// or gs://).")
    s3_endpoint_url: str | None = Field(
        None, description="Endpoint of an S3-compatible store, for state, inputs and outputs."
    )
    max_body_bytes: int = Field(65536, ge=1024, description="Largest request body accepted (413 above it).")
    max_n: int = Field(64, ge=1, description="Largest `n` (rollouts per example) a request may ask for.")
    max_actors: int = Field(8, ge=1, description="Largest `num_actors` a request may ask for.")
    max_preview_rows: int = Field(100, ge=1, description="Largest `limit` of GET /v1/runs/{id}/rollouts.")
    max_concurrent_runs: int = Field(2, ge=1, description="Runs executing at once; later ones wait as PENDING.")
    max_queued_runs: int = Field(
        32,
        ge=1,
        description="Runs that may wait as PENDING at once; a submission beyond them gets 429 with Retry-After.",
    )
    executor: Literal["task", "job"] = Field(
        "task",
        description="`task`: each run is a Ray task owned by the service replica (re-queued if the replica "
        "restarts; runs resume). `job`: each run is a Ray job (JobSubmissionClient), independent of the replica.",
    )
    job_address: str | None = Field(
        None,
        description="Ray dashboard address for the `job` executor, e.g. http://127.0.0.1:8265 (default: $RAY_ADDRESS or local).",
    )
    job_runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="runtime_env of each run's Ray job (or task)."
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI for runs submitted with `mlflow: true` (a server, or a path every "
        "node shares); None refuses them.",
    )
    dispatch_interval_s: float = Field(1.0, gt=0, description="How often queued and running runs are checked.")

    @field_validator("allowed_modules")
    @classmethod
    def _modules(cls, value: list[str]) -> list[str]:
        bad = [m for m in value if not m or not all(part.isidentifier() for part in m.split("."))]
        if bad:
            raise ValueError(f"allowed_modules must be dotted module names, got {bad}")
        return value

    def policy(self) -> RunPolicy:
        """The allow-lists every run is held to (recorded with each run, applied by its worker)."""
        return RunPolicy(
            allowed_modules=tuple(self.allowed_modules),
            input_prefixes=tuple(self.input_prefixes),
            output_prefixes=tuple(self.output_prefixes),
            teacher_prefixes=tuple(self.teacher_prefixes),
        )

    @classmethod
    def load(cls, args: dict[str, Any] | None = None) -> ServiceSettings:
        """Settings from a Serve config's ``args`` over a YAML file over the environment.

        Raises:
            ConfigError: the YAML file is unreadable, a value is invalid, or no token is configured.
        """
        args = dict(args or {})
        path = args.pop("config_file", None) or os.environ.get("RAYDSPY_SERVICE_CONFIG_FILE")
        values: dict[str, Any] = {}
        if path:
            try:
                values = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as e:
                raise ConfigError(f"cannot read service config {path!r}: {e}") from e
            if not isinstance(values, dict):
                raise ConfigError(f"service config {path!r} must be a mapping of settings")
        values.update(args)
        try:
            settings = cls(**values)
        except ValueError as e:
            raise ConfigError(f"invalid service settings: {e}") from e
        if settings.token is None or not settings.token.get_secret_value():
            raise ConfigError(
                "the service needs a bearer token: set RAYDSPY_SERVICE_TOKEN (or `token` in its settings)"
            )
        return settings
