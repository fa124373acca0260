"""An allow-listed module as an operator might write one, carelessly: it imports modules and
functions that are not its own. The service's tests (tests/test_service_boundary.py) allow it and
check that a request can reach only what it defines, and that nothing is called unless it may be."""

from __future__ import annotations

import os  # noqa: F401 - reachable as `exposed:os...` if specs could hop into modules
import subprocess  # noqa: F401
from os import system  # noqa: F401 - a function this module merely imported

import dspy

from raydspy.programs.banking77 import make_signature, top_labels


class NeedsArgs(dspy.Module):
    """A program class whose constructor needs an argument: a spec naming it cannot build it."""

    def __init__(self, labels: list[str]):
        super().__init__()
        self.predict = dspy.Predict(make_signature(labels))

    def forward(self, **inputs):
        return self.predict(**inputs)


class Tasks:
    """A namespace of programs: ``exposed:Tasks.program`` is a dotted path within this module."""

    @staticmethod
    def program() -> dspy.Module:
        return dspy.ChainOfThought(make_signature(top_labels()))


def broken_program() -> dspy.Module:
    raise RuntimeError("the factory is broken")


def exact(inputs: dict, outputs: dict) -> float:
    return float(outputs.get("label") == inputs.get("label"))
