"""Teacher-side structured outputs: DSPy's JSONAdapter, with the signature's JSON schema always
sent as an OpenAI ``response_format`` so the server constrains decoding to it.

DSPy's JSONAdapter sends a schema only when litellm believes the model supports one, which it
never does for a self-hosted vLLM endpoint: it then sends plain JSON mode and a small teacher
ignores the format. With the schema enforced by vLLM's structured outputs every completion parses
(RECIPES.md: 128/128 parsed for the 135M teacher on banking77, against 10/64 without).
"""

from __future__ import annotations

from typing import Any

import dspy
from dspy.adapters.json_adapter import _get_structured_outputs_response_format

__all__ = ["StructuredOutputAdapter", "PlainJSONAdapter", "response_format_for"]


def response_format_for(signature: type[dspy.Signature]) -> dict[str, Any]:
    """The OpenAI ``response_format`` (type ``json_schema``) of ``signature``'s output fields.

    Built with DSPy's own schema builder, so the schema matches what JSONAdapter parses
    (Literal fields become enums, every property required, no additional properties).

    Raises:
        ValueError: an output field is an open-ended mapping, which no JSON schema can pin down.
    """
    model = _get_structured_outputs_response_format(signature)
    return {
        "type": "json_schema",
        "json_schema": {"name": signature.__name__ or "outputs", "schema": model.model_json_schema(), "strict": True},
    }


class StructuredOutputAdapter(dspy.JSONAdapter):
    """JSONAdapter that asks the server to enforce the signature's JSON schema.

    Use it with a teacher that implements OpenAI structured outputs (vLLM, SGLang, OpenAI).
    Prompts are JSONAdapter's; only the request gains ``response_format``.
    """

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("use_native_function_calling", False)
        super().__init__(**kwargs)

    def _prepare_response_format(self, lm: dspy.BaseLM, lm_kwargs: dict[str, Any], signature: type[dspy.Signature]) -> None:
        lm_kwargs["response_format"] = response_format_for(signature)


class PlainJSONAdapter(dspy.JSONAdapter):
    """JSONAdapter's prompts and parsing with **no** constraint on decoding: no ``response_format``
    at all (DSPy's JSONAdapter would otherwise ask for JSON mode, which vLLM enforces).

    The student's format: it sees the same messages the teacher saw under
    `StructuredOutputAdapter`, and must produce parseable JSON on its own. Its format compliance is
    what distillation has to teach; ``build_format_reward(signature, PlainJSONAdapter())`` scores it.
    """

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("use_native_function_calling", False)
        super().__init__(**kwargs)

    def _prepare_response_format(self, lm: dspy.BaseLM, lm_kwargs: dict[str, Any], signature: type[dspy.Signature]) -> None:
        lm_kwargs.pop("response_format", None)
