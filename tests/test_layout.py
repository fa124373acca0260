"""The package layout keeps its promises: the core imports no Ray, the command line answers
``--help`` without Ray or DSPy, public names stay importable from ``raydspy``, and old Serve
import paths still resolve."""

from __future__ import annotations

import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import raydspy
import raydspy.core

PACKAGE = Path(raydspy.__file__).parent


def _imported_after(code: str) -> set[str]:
    """Top-level module names loaded by running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    return set(out.stdout.split())


def test_no_core_module_imports_ray():
    names = [f"raydspy.core.{m.name}" for m in pkgutil.iter_modules(raydspy.core.__path__)]
    assert "raydspy.core.collect" in names and "raydspy.core.runner" in names
    loaded = _imported_after("\n".join(f"import {name}" for name in names))
    assert "dspy" in loaded and "ray" not in loaded


def test_the_command_line_loads_neither_ray_nor_dspy_for_help():
    loaded = _imported_after("import raydspy.cli.main as m\nm.build_parser().format_help()")
    assert not loaded & {"ray", "dspy", "litellm", "torch", "trl"}


@pytest.mark.parametrize("name", raydspy.__all__)
def test_public_names_import_from_the_package(name):
    assert getattr(raydspy, name) is not None


def test_serve_configs_written_for_the_flat_layout_still_resolve():
    from raydspy.teacher.app import build_openai_app
    from raydspy.teacher_app import build_openai_app as old

    assert old is build_openai_app


def test_no_module_is_longer_than_350_lines():
    long = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 350
    }
    assert not long, f"split these modules: {long}"


def test_the_private_apis_raydspy_uses_exist_in_the_installed_versions():
    import dspy
    import ray.data

    from raydspy import _compat

    assert _compat.check_versions() == []
    model = _compat.structured_outputs_response_format(dspy.Signature("question -> answer"))
    assert "answer" in model.model_json_schema()["properties"]
    assert hasattr(ray.data.DataContext.get_current(), "_max_num_blocks_in_streaming_gen_buffer")
    params = inspect.signature(dspy.BaseLM.__call__).parameters
    assert list(params)[:2] == ["self", "prompt"] and "messages" in params and hasattr(dspy.BaseLM, "acall")
