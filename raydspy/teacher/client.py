"""The teacher: an OpenAI-compatible endpoint (vLLM on Ray Serve, or any other) and how to call it.

`TeacherConfig` is what travels to every Collect actor: plain data, validated once, from which
each actor builds its own ``dspy.LM``. The Ray Serve application that *serves* the embedded
teacher lives in `raydspy.teacher.app`; the YAML files in ``serve_configs/`` deploy it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from raydspy.core.retries import RetryPolicy
from raydspy.core.token_traces import MAX_TOP_LOGPROBS, TokenRequest, token_request
from raydspy.errors import TeacherUnreachableError
from raydspy.teacher.embedded import DEFAULT_TEACHER_URL, EMBEDDED_MODEL_ID

if TYPE_CHECKING:  # DSPy and httpx load when an LM is built, not when a flag's help is shown
    import dspy

    from raydspy.core.retrying_lm import RetryingLM

__all__ = ["TeacherConfig", "SAMPLING_FIELDS", "DEFAULT_TEACHER_URL", "EMBEDDED_TEACHER_MODEL"]

EMBEDDED_TEACHER_MODEL = EMBEDDED_MODEL_ID


class TeacherConfig(BaseModel):
    """Where the teacher is and how rollouts sample from it."""

    # No NaN or infinity (a run's teacher is stored as JSON, which has neither); every number bounded.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    base_url: str = Field(
        DEFAULT_TEACHER_URL, min_length=1, max_length=2048, description="OpenAI-compatible base URL, ending in /v1."
    )
    model: str = Field(
        EMBEDDED_TEACHER_MODEL, min_length=1, max_length=256, description="Model name the endpoint serves."
    )
    api_key: str = Field(
        "not-needed", max_length=4096, description="Bearer token; vLLM needs none unless started with --api-key."
    )
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="Sampling temperature; > 0 for distinct rollouts.")
    max_tokens: int = Field(256, ge=1, le=1_048_576, description="Completion tokens per LM call.")
    seed: int | None = Field(
        None,
        ge=0,
        le=2**32 - 1,
        description="Seed the run: each rollout's requests carry a seed derived from its rollout id "
        "(`raydspy.core.identity.rollout_seed`), so a rollout sampled again draws the same random numbers from a "
        "teacher that honours OpenAI's `seed`, as vLLM does. None: unseeded.",
    )
    structured_outputs: bool = Field(
        False,
        description="Send each signature's JSON schema as response_format (vLLM structured outputs), "
        "so every completion parses even from a small teacher. Uses JSONAdapter prompts.",
    )
    max_text_chars: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="With structured outputs: bound each free-text output field (e.g. reasoning) to this many "
        "characters in the schema, so a teacher that loops is cut inside the JSON and still parses.",
    )
    timeout_s: float = Field(
        600.0,
        gt=0,
        le=86400,
        description="Per-request timeout in seconds. Keep it above the queueing of a saturated teacher: a request "
        "that times out is cancelled with its work half done and sent again (docs/benchmarks-history.md).",
    )
    cache: bool = Field(
        True,
        description="DSPy's request cache: a rollout re-run after a crash is answered from it at no cost. "
        "Off, every call reaches the teacher.",
    )
    record_logprobs: bool = Field(
        False,
        description="Record each LM call's prompt and completion token ids and the completion's logprobs "
        "(the rows' trace_tokens column), from vLLM's return_token_ids and logprobs. Needs a vLLM teacher; "
        "not part of rollout ids.",
    )
    top_logprobs: int = Field(
        0,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="With record_logprobs on: also the K most likely tokens and their logprobs at each "
        "completion position (for distillation on the teacher's distribution). 0: none.",
    )
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy,
        description="Retries of time-outs, refused or dropped connections, 429 and 5xx: exponential "
        "back-off with full jitter, bounded in attempts and seconds.",
    )

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_need_recording(cls, value: int, info: ValidationInfo) -> int:
        token_request(bool(info.data.get("record_logprobs")), value)  # raises on top_logprobs alone
        return value

    @property
    def token_request(self) -> TokenRequest | None:
        """What rollouts record of each call's tokens (`raydspy.core.token_traces`); None: nothing."""
        return token_request(self.record_logprobs, self.top_logprobs)

    @property
    def sampling(self) -> dict[str, Any]:
        """Request parameters that change the samples; part of every rollout id (``seed`` only when
        set, so the ids of unseeded runs are those of earlier versions)."""
        sampling = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            sampling["seed"] = self.seed
        return sampling

    def lm(self) -> RetryingLM:
        """A ``dspy.LM`` for this teacher (OpenAI-compatible client) that retries under ``retry``."""
        from raydspy.core.retrying_lm import RetryingLM

        return RetryingLM(
            f"openai/{self.model}",
            api_base=self.base_url,
            api_key=self.api_key,
            timeout=self.timeout_s,
            cache=self.cache,
            retry_policy=self.retry,
            **self.sampling,
        )

    def adapter(self) -> dspy.Adapter | None:
        """The adapter rollouts must use: `StructuredOutputAdapter` with structured outputs on,
        else None (the program's own, ChatAdapter by default)."""
        from raydspy.core.adapters import StructuredOutputAdapter

        return StructuredOutputAdapter(max_text_chars=self.max_text_chars) if self.structured_outputs else None

    def check_reachable(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Fail fast, before any rollout, when the endpoint is down or lacks the model.

        Returns:
            The model's entry in ``{base_url}/models`` (vLLM adds ``max_model_len``, the context
            length in tokens).

        Raises:
            TeacherUnreachableError: no answer from ``{base_url}/models``, an HTTP error, or
                ``model`` not among the models it lists.
        """
        import httpx

        url = self.base_url.rstrip("/") + "/models"
        try:
            response = httpx.get(url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=timeout_s)
            response.raise_for_status()
            models = {m.get("id"): m for m in response.json().get("data", [])}
        except (httpx.HTTPError, ValueError) as e:
            raise TeacherUnreachableError(
                f"teacher unreachable at {self.base_url}: {type(e).__name__}: {e}. Start one with "
                "`raydspy teacher up` (or `serve run serve_configs/teacher-cpu.yaml`), or pass --teacher-url"
            ) from e
        if self.model not in models:
            raise TeacherUnreachableError(
                f"teacher at {self.base_url} does not serve model {self.model!r}; it serves {list(models)}"
            )
        return models[self.model]

    def context_length(self, timeout_s: float = 10.0) -> int | None:
        """The teacher's context length in tokens, when the endpoint reports it (vLLM does)."""
        length = self.check_reachable(timeout_s).get("max_model_len")
        return int(length) if isinstance(length, int) and length > 0 else None


#: The fields of a teacher a run chooses beside its endpoint (``base_url``, ``model``): the teacher
#: flags of ``raydspy collect`` and the service's ``teacher`` object.
SAMPLING_FIELDS = (
    "temperature",
    "max_tokens",
    "seed",
    "structured_outputs",
    "max_text_chars",
    "timeout_s",
    "cache",
    "record_logprobs",
    "top_logprobs",
)
