"""The Serve configs parse as Ray Serve and Ray LLM configs; the embedded model converts once.

Fast except `test_ensure_checkpoint_*` (about a minute: dequantising the GGUF). No model is served.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from raydspy.errors import ConfigError
from raydspy.teacher import embedded

CONFIGS = Path(__file__).resolve().parents[1] / "serve_configs"


def _load(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


def _llm_configs(name: str) -> list:
    from ray.serve.llm import LLMConfig
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(_load(name))
    (app,) = schema.applications
    return [LLMConfig.model_validate(c) for c in app.args["llm_configs"]]


@pytest.mark.parametrize("name", ["teacher-cpu.yaml", "teacher-gpu.yaml", "teacher-70b.yaml"])
def test_config_is_a_serve_deploy_config_of_valid_llm_configs(name):
    from ray.serve.llm import LLMServingArgs
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(_load(name))
    (app,) = schema.applications
    assert app.route_prefix == "/"
    LLMServingArgs.model_validate(app.args)  # Ray's own parsing of the builder's args
    assert len(_llm_configs(name)) == 1


def test_70b_config_is_tp2_pp2_with_prefix_caching_on_h100():
    (config,) = _llm_configs("teacher-70b.yaml")
    assert config.model_loading_config.model_source == "meta-llama/Llama-3.1-70B-Instruct"
    assert config.engine_kwargs["tensor_parallel_size"] == 2
    assert config.engine_kwargs["pipeline_parallel_size"] == 2
    assert config.engine_kwargs["enable_prefix_caching"] is True
    assert config.accelerator_type == "H100"
    assert config.deployment_config["autoscaling_config"]["max_replicas"] > 1
    engine = config.get_engine_config()
    assert engine.num_devices == 4
    assert all(b.get("GPU") == 1 for b in engine.placement_bundles)
    assert _load("teacher-70b.yaml")["applications"][0]["import_path"] == ("ray.serve.llm:build_openai_app")


def test_cpu_config_serves_the_embedded_model_on_cpu():
    (config,) = _llm_configs("teacher-cpu.yaml")
    assert config.model_loading_config.model_source == embedded.EMBEDDED_URI
    assert config.model_id == embedded.EMBEDDED_MODEL_ID
    assert config.accelerator_type is None
    assert config.accelerator_config.kind == "cpu"  # inferred from the CPU-only bundles
    engine = config.get_engine_config()
    assert engine.placement_bundles == [{"CPU": 1.0}]
    assert engine.get_initialization_kwargs()["distributed_executor_backend"] == "mp"
    assert config.runtime_env["env_vars"]["VLLM_CPU_KVCACHE_SPACE"]
    app = _load("teacher-cpu.yaml")["applications"][0]
    assert app["import_path"] == "raydspy.teacher.app:build_openai_app"
    assert app["args"]["ingress_deployment_config"]["ray_actor_options"]["num_cpus"] == 0


@pytest.mark.parametrize("name", ["teacher-cpu.yaml", "teacher-gpu.yaml", "teacher-70b.yaml"])
def test_teachers_cache_the_prefix_their_prompts_share(name):
    (config,) = _llm_configs(name)
    assert config.engine_kwargs["enable_prefix_caching"] is True


def test_gpu_teacher_serves_the_embedded_model_on_one_gpu_under_the_cpu_teachers_name():
    (gpu,), (cpu,) = _llm_configs("teacher-gpu.yaml"), _llm_configs("teacher-cpu.yaml")
    assert (gpu.model_id, gpu.model_loading_config.model_source) == (
        cpu.model_id,
        cpu.model_loading_config.model_source,
    )
    assert gpu.accelerator_config.kind != "cpu"
    assert all(b.get("GPU") == 1 for b in gpu.get_engine_config().placement_bundles)
    assert _load("teacher-gpu.yaml")["http_options"] == _load("teacher-cpu.yaml")["http_options"]


@pytest.mark.parametrize("name", ["teacher-cpu.yaml", "teacher-gpu.yaml", "teacher-70b.yaml", "student-cpu.yaml"])
def test_structured_teachers_answer_in_compact_json(name):
    from vllm.config import StructuredOutputsConfig

    configs = [c for c in _llm_configs(name) if "structured_outputs_config" in c.engine_kwargs]
    assert configs, f"{name}: no engine with structured_outputs_config"
    for config in configs:
        # vLLM builds its config from the same dict (VllmConfig validates it into this class).
        parsed = StructuredOutputsConfig(**config.engine_kwargs["structured_outputs_config"])
        assert parsed.backend == "xgrammar" and parsed.disable_any_whitespace


@pytest.mark.parametrize("name", ["teacher-cpu.yaml", "student-cpu.yaml"])
def test_cpu_engines_prefill_whole_prompts_so_seeded_requests_are_safe(name):
    # vLLM 0.32's CPU runner dies on a seeded request prefilled in chunks (it rewinds a CPU
    # torch.Generator's offset); tests/test_e2e_teacher.py sends seeded requests to the teacher.
    for config in _llm_configs(name):
        assert config.engine_kwargs["enable_chunked_prefill"] is False


def test_resolve_model_source_leaves_other_sources_untouched(tmp_path):
    for source in ["meta-llama/Llama-3.1-70B-Instruct", "/models/student", "s3://b/ckpt"]:
        assert embedded.resolve_model_source(source, tmp_path) == source
    assert not any(tmp_path.iterdir())  # nothing converted
    with pytest.raises(ConfigError, match="Unknown embedded model"):
        embedded.resolve_model_source("raydspy://other", tmp_path)


def test_resolve_llm_configs_replaces_only_the_embedded_uri(tmp_path, monkeypatch):
    from raydspy.teacher import app as teacher_app

    monkeypatch.setattr(teacher_app, "ensure_checkpoint", lambda cache_dir: cache_dir / "ckpt")
    cpu = _load("teacher-cpu.yaml")["applications"][0]["args"]["llm_configs"][0]
    gpu = _load("teacher-70b.yaml")["applications"][0]["args"]["llm_configs"][0]
    out = teacher_app.resolve_llm_configs([cpu, gpu], tmp_path)
    assert out[0]["model_loading_config"]["model_source"] == str(tmp_path / "ckpt")
    assert cpu["model_loading_config"]["model_source"] == embedded.EMBEDDED_URI  # not mutated
    assert out[1] is gpu


def test_default_cache_dir_reads_only_the_given_environment(tmp_path):
    assert embedded.default_cache_dir({"RAYDSPY_CACHE": str(tmp_path)}) == tmp_path
    assert embedded.default_cache_dir({}) == Path.home() / ".cache" / "raydspy"
    assert embedded.checkpoint_dir(tmp_path) == tmp_path / "models" / embedded.EMBEDDED_MODEL_ID


def test_gguf_path_names_the_fix_when_the_package_is_missing(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="scripts/setup.sh"):
        embedded.gguf_path()


@pytest.mark.slow  # converts the GGUF and loads the model
def test_ensure_checkpoint_converts_once_into_a_loadable_chat_model(tmp_path):
    pytest.importorskip("gguf")
    from transformers import AutoConfig, AutoTokenizer

    path = embedded.ensure_checkpoint(tmp_path)
    assert path == embedded.checkpoint_dir(tmp_path)
    assert (path / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(path).model_type == "llama"
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    leftovers = [p.name for p in path.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []

    mtime = (path / "model.safetensors").stat().st_mtime_ns
    start = time.monotonic()
    assert embedded.ensure_checkpoint(tmp_path) == path
    assert time.monotonic() - start < 1.0  # reused, not reconverted
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "flags, dtype",
    [
        (["fpu", "avx2", "avx512f"], "float32"),  # AVX2/AVX-512 without bf16: vLLM emulates it
        (["avx2", "avx512f", "avx512_bf16"], "bfloat16"),  # e.g. AMD EPYC Zen 4
        (["avx512_bf16", "amx_bf16", "amx_tile"], "bfloat16"),  # e.g. Intel Sapphire Rapids
        ([], "float32"),
    ],
)
def test_cpu_native_dtype_is_bf16_only_where_the_cpu_computes_it(flags, dtype):
    from raydspy.teacher.app import cpu_native_dtype

    assert cpu_native_dtype(flags) == dtype


def test_cpu_configs_resolve_cpu_native_to_a_vllm_dtype(tmp_path, monkeypatch):
    from raydspy.teacher import app as teacher_app

    monkeypatch.setattr(teacher_app, "ensure_checkpoint", lambda cache_dir: cache_dir / "ckpt")
    for name in ["teacher-cpu.yaml", "student-cpu.yaml"]:
        configs = _load(name)["applications"][0]["args"]["llm_configs"]
        assert all(c["engine_kwargs"]["dtype"] == teacher_app.CPU_NATIVE_DTYPE for c in configs)
        out = teacher_app.resolve_llm_configs(configs, tmp_path, dtype="bfloat16")
        assert [c["engine_kwargs"]["dtype"] for c in out] == ["bfloat16"] * len(configs)
        assert configs[0]["engine_kwargs"]["dtype"] == teacher_app.CPU_NATIVE_DTYPE  # not mutated
    # An LLMConfig object (as Ray's own builder accepts) is resolved the same way.
    from ray.serve.llm import LLMConfig

    (config,) = _llm_configs("teacher-cpu.yaml")
    (out,) = teacher_app.resolve_llm_configs([config], tmp_path, dtype="float32")
    assert out.engine_kwargs["dtype"] == "float32" and isinstance(out, LLMConfig)
    assert out.model_loading_config.model_source == str(tmp_path / "ckpt")


def test_the_default_serve_configs_are_the_checkouts():
    """`raydspy teacher up` and the benchmarks deploy `SERVE_CONFIGS / "teacher-cpu.yaml"` when
    given no --serve-config: it must be the file this repository ships."""
    from raydspy.teacher.deploy import SERVE_CONFIGS

    assert SERVE_CONFIGS == CONFIGS and (SERVE_CONFIGS / "teacher-cpu.yaml").is_file()
