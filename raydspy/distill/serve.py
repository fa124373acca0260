"""The Ray Serve application of a trained student: `raydspy.teacher.app.build_openai_app` plus
local checkpoint paths made absolute.

A student checkpoint is a folder on the host that deploys the config (e.g. the ``model/`` folder of
a training run, `raydspy.distill.train.MODEL_DIR`). vLLM opens ``model_source`` inside the LLM
replica, whose working directory is not the one ``serve run`` was started from, so a relative
path in a config (``runs/banking77/sft-model``) is resolved here, where the builder runs, against
the current directory. Everything else (the embedded model's URI, hub ids, s3://) is passed on.

    applications:
      - name: student
        import_path: raydspy.distill.serve:build_student_app
        args: {llm_configs: [{model_loading_config: {model_id: student, model_source: ./runs/banking77/sft-model}}]}
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from raydspy.errors import ConfigError
from raydspy.teacher.app import build_openai_app

if TYPE_CHECKING:
    from ray.serve.deployment import Application

__all__ = ["build_student_app", "absolute_sources"]


def build_student_app(args: Mapping[str, Any]) -> Application:
    """`build_openai_app` after `absolute_sources` (same arguments: Ray's `LLMServingArgs`).

    Raises:
        ConfigError: a relative ``model_source`` names no existing folder.
    """
    resolved = dict(args)
    if "llm_configs" in resolved:
        resolved["llm_configs"] = absolute_sources(resolved["llm_configs"], os.getcwd())
    return build_openai_app(resolved)


def absolute_sources(llm_configs: list[Any], cwd: str) -> list[Any]:
    """LLM config dicts whose ``model_source`` is a relative local path get it made absolute
    against ``cwd``; other configs are returned as given."""
    out = []
    for config in llm_configs:
        loading = config.get("model_loading_config") if isinstance(config, Mapping) else None
        source = loading.get("model_source") if isinstance(loading, Mapping) else None
        if isinstance(source, str) and _is_relative_path(source, cwd):
            path = os.path.normpath(os.path.join(cwd, source))
            if not os.path.isdir(path):
                raise ConfigError(
                    f"model_source {source!r} is not a folder (looked in {path!r}); "
                    "train a student first (`raydspy train sft`) or give its checkpoint folder"
                )
            config = copy.deepcopy(dict(config))
            config["model_loading_config"] = {**loading, "model_source": path}
        out.append(config)
    return out


def _is_relative_path(source: str, cwd: str) -> bool:
    # Hub ids ("org/name") look like relative paths too: only one written as a path ("./x") or
    # naming a folder that exists here is taken as local.
    if "://" in source or os.path.isabs(source):
        return False
    return source.startswith(("./", "../")) or os.path.isdir(os.path.join(cwd, source))
