"""StructuredOutputAdapter's schema: free-text bounds, and that the structured-output backend
vLLM uses (xgrammar) enforces the schema we send."""

from __future__ import annotations

import json
from typing import Literal

import dspy
import pydantic
import pytest
import xgrammar
from xgrammar.testing import _is_grammar_accept_string

from raydspy.core.adapters import StructuredOutputAdapter, response_format_for
from raydspy.core.identity import program_hash
from raydspy.programs import banking77
from raydspy.teacher.client import TeacherConfig


class Address(pydantic.BaseModel):
    street: str
    zip_code: str = pydantic.Field(pattern=r"^[0-9]{5}$")


class Order(dspy.Signature):
    """Read an order."""

    text: str = dspy.InputField()
    summary: str = dspy.OutputField()
    priority: Literal["low", "high"] = dspy.OutputField()
    address: Address = dspy.OutputField()
    items: list[str] = dspy.OutputField()


def _strings(schema, found=None):
    found = [] if found is None else found
    if isinstance(schema, dict):
        if schema.get("type") == "string":
            found.append(schema)
        for value in schema.values():
            _strings(value, found)
    elif isinstance(schema, list):
        for value in schema:
            _strings(value, found)
    return found


def test_free_text_gets_max_length_and_closed_sets_do_not():
    schema = response_format_for(Order, max_text_chars=50)["json_schema"]["schema"]
    strings = _strings(schema)
    bounded = [s for s in strings if "maxLength" in s]
    assert schema["properties"]["summary"]["maxLength"] == 50
    assert schema["properties"]["items"]["items"]["maxLength"] == 50
    assert any(s.get("title") == "Street" and s["maxLength"] == 50 for s in strings)  # nested model
    assert all("enum" not in s and "pattern" not in s for s in bounded)
    assert len(bounded) == 3  # summary, items[], street; not priority (enum) nor zip_code (pattern)


def test_no_bound_leaves_the_schema_as_dspy_builds_it():
    assert "maxLength" not in json.dumps(response_format_for(Order))


def test_bound_below_one_is_refused():
    with pytest.raises(ValueError, match="max_text_chars"):
        StructuredOutputAdapter(max_text_chars=0)
    with pytest.raises(pydantic.ValidationError, match="max_text_chars"):
        TeacherConfig(structured_outputs=True, max_text_chars=0)


def test_the_bound_is_part_of_the_program_hash_only_when_set():
    program = banking77.program()
    unbounded = program_hash(program, StructuredOutputAdapter())
    assert unbounded == program_hash(program, StructuredOutputAdapter(max_text_chars=None))
    assert unbounded != program_hash(program, StructuredOutputAdapter(max_text_chars=400))
    assert TeacherConfig(structured_outputs=True, max_text_chars=400).adapter().max_text_chars == 400


def test_xgrammar_enforces_the_bounded_banking77_schema():
    signature = banking77.program().predictors()[0].signature
    schema = response_format_for(signature, max_text_chars=20)["json_schema"]["schema"]
    grammar = xgrammar.Grammar.from_json_schema(json.dumps(schema))
    label = banking77.top_labels(25)[0]
    assert _is_grammar_accept_string(grammar, json.dumps({"reasoning": "x" * 20, "label": label}))
    assert not _is_grammar_accept_string(grammar, json.dumps({"reasoning": "x" * 21, "label": label}))
    assert not _is_grammar_accept_string(grammar, json.dumps({"reasoning": "ok", "label": "not_a_label"}))
