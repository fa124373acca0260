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

from raydspy._compat import structured_outputs_response_format

__all__ = ["StructuredOutputAdapter", "PlainJSONAdapter", "response_format_for"]


def response_format_for(signature: type[dspy.Signature], *, max_text_chars: int | None = None) -> dict[str, Any]:
    """The OpenAI ``response_format`` (type ``json_schema``) of ``signature``'s output fields.

    Built with DSPy's own schema builder, so the schema matches what JSONAdapter parses
    (Literal fields become enums, every property required, no additional properties).

    Args:
        signature: the predictor's signature.
        max_text_chars: when set, every free-text string in the schema (a ``"type": "string"``
            with no ``enum``, ``const`` or ``pattern``) gets ``maxLength`` = this many characters
            (JSON Schema 2020-12, section 6.3.1; enforced by vLLM's xgrammar backend). A small
            model decoding greedily can loop inside a free-text field (``reasoning``) until
            ``max_tokens`` cuts the JSON; with the bound the grammar closes the field and the
            completion still parses.

    Raises:
        ValueError: an output field is an open-ended mapping, which no JSON schema can pin down.
    """
    schema = structured_outputs_response_format(signature).model_json_schema()
    if max_text_chars is not None:
        _bound_free_text(schema, max_text_chars)
    return {
        "type": "json_schema",
        "json_schema": {"name": signature.__name__ or "outputs", "schema": schema, "strict": True},
    }


def _bound_free_text(schema: Any, max_chars: int) -> None:
    """Set ``maxLength`` on every free-text string node of ``schema``, in place (nested models too)."""
    if isinstance(schema, dict):
        if schema.get("type") == "string" and not {"enum", "const", "pattern"} & schema.keys():
            schema["maxLength"] = min(max_chars, schema.get("maxLength", max_chars))
        for value in schema.values():
            _bound_free_text(value, max_chars)
    elif isinstance(schema, list):
        for value in schema:
            _bound_free_text(value, max_chars)


class StructuredOutputAdapter(dspy.JSONAdapter):
    """JSONAdapter that asks the server to enforce the signature's JSON schema.

    Use it with a teacher that implements OpenAI structured outputs (vLLM, SGLang, OpenAI).
    Prompts are JSONAdapter's; only the request gains ``response_format``.

    Args:
        max_text_chars: bound on each free-text output string, in characters (see
            `response_format_for`); None leaves them unbounded.

    Raises:
        ValueError: ``max_text_chars`` is below 1.
    """

    def __init__(self, *, max_text_chars: int | None = None, **kwargs: Any):
        if max_text_chars is not None and max_text_chars < 1:
            raise ValueError(f"max_text_chars must be >= 1, got {max_text_chars}")
        kwargs.setdefault("use_native_function_calling", False)
        super().__init__(**kwargs)
        self.max_text_chars = max_text_chars

    def _prepare_response_format(
        self, lm: dspy.BaseLM, lm_kwargs: dict[str, Any], signature: type[dspy.Signature]
    ) -> None:
        lm_kwargs["response_format"] = response_format_for(signature, max_text_chars=self.max_text_chars)


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

    def _prepare_response_format(
        self, lm: dspy.BaseLM, lm_kwargs: dict[str, Any], signature: type[dspy.Signature]
    ) -> None:
        lm_kwargs.pop("response_format", None)
