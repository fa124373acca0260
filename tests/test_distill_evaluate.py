"""Evaluation report, student Serve configs, training configs; and (e2e) the evaluation of the
real teacher and base student through the banking77 program."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from raydspy.distill.cli import student_serve_config
from raydspy.distill.config import TrainConfig
from raydspy.distill.evaluate import Candidate, EvalResult, evaluate, markdown_table, held_out_queries, write_report
from raydspy.distill.serve import absolute_sources
from raydspy.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / "serve_configs" / name).read_text())


@pytest.mark.parametrize("name", ["student-cpu.yaml", "student-gpu.yaml"])
def test_student_configs_are_serve_configs_of_valid_llm_configs(name):
    from ray.serve.llm import LLMConfig, LLMServingArgs
    from ray.serve.schema import ServeDeploySchema

    (app,) = ServeDeploySchema.model_validate(_load(name)).applications
    LLMServingArgs.model_validate(app.args)
    ids = [LLMConfig.model_validate(c).model_loading_config.model_id for c in app.args["llm_configs"]]
    assert "student" in ids


def test_gpu_student_is_bf16_on_one_gpu_per_replica_from_object_storage():
    from ray.serve.llm import LLMConfig

    (config,) = [LLMConfig.model_validate(c) for c in _load("student-gpu.yaml")["applications"][0]["args"]["llm_configs"]]
    assert config.engine_kwargs["dtype"] == "bfloat16"
    assert config.get_engine_config().num_devices == 1
    assert config.model_loading_config.model_source.bucket_uri.startswith("s3://")


def test_student_config_points_at_given_checkpoints(tmp_path):
    config = student_serve_config(_load("student-cpu.yaml"), {"student": str(tmp_path / "a"), "student-grpo": "b"})
    sources = {c["model_loading_config"]["model_id"]: c["model_loading_config"]["model_source"]
               for c in config["applications"][0]["args"]["llm_configs"]}
    assert sources == {"student": str(tmp_path / "a"), "student-grpo": str(Path("b").resolve()),
                       "smollm2-135m-instruct": "raydspy://smollm2-135m-instruct"}


def test_relative_model_sources_become_absolute_and_missing_ones_fail(tmp_path):
    (tmp_path / "runs" / "m").mkdir(parents=True)
    configs = [{"model_loading_config": {"model_id": "s", "model_source": "./runs/m"}},
               {"model_loading_config": {"model_id": "h", "model_source": "meta-llama/Llama-3.2-1B-Instruct"}}]
    out = absolute_sources(configs, str(tmp_path))
    assert out[0]["model_loading_config"]["model_source"] == str(tmp_path / "runs" / "m")
    assert out[1] == configs[1]  # a hub id is left alone
    with pytest.raises(ConfigError, match="not a folder"):
        absolute_sources([{"model_loading_config": {"model_id": "s", "model_source": "./runs/none"}}], str(tmp_path))


@pytest.mark.parametrize("name", ["sft-cpu", "sft-gpu", "grpo-cpu", "grpo-gpu"])
def test_training_configs_validate(name):
    config = TrainConfig.from_yaml(REPO / "jobs" / "configs" / f"{name}.yaml")
    if name.endswith("gpu"):
        assert config.use_gpu and config.bf16 and config.lora is not None and config.num_workers > 1
        assert config.model == "meta-llama/Llama-3.2-1B-Instruct"
    else:
        assert not config.use_gpu and config.num_workers == 1


def test_training_config_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: d\nnum_workers: 0\n")
    with pytest.raises(ConfigError, match="num_workers"):
        TrainConfig.from_yaml(bad)


def test_report_writes_table_chart_and_json(tmp_path):
    results = [EvalResult("teacher", "smollm2-135m-instruct", "structured", 200, 0.22, 1.0, 0, 60.0),
               EvalResult("SFT student", "student", "plain", 200, 0.255, 0.97, 6, 70.0)]
    paths = write_report(results, tmp_path)
    table = paths["markdown"].read_text()
    assert "| SFT student (`student`) | plain | 0 | 25.5 % | 97.0 % | 200 |" in table
    assert table == markdown_table(results)
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '"format_compliance": 0.97' in paths["json"].read_text()


def test_test_queries_come_from_the_test_split_among_the_top_labels(tmp_path):
    from raydspy.programs import banking77

    rows = held_out_queries(20, num_labels=25, cache_dir=tmp_path)
    assert len(rows) == 20 and all(r["category"] in banking77.top_labels(25) for r in rows)
    train_texts = {r["text"] for r in banking77._rows("train")}
    assert not any(r["text"] in train_texts for r in rows)


@pytest.mark.e2e
def test_evaluate_teacher_and_base_student_through_the_program(teacher, tmp_path):
    queries = held_out_queries(12, cache_dir=tmp_path)
    results = evaluate([Candidate("teacher", teacher.model, "structured", teacher.base_url, max_text_chars=120),
                        Candidate("base student", teacher.model, "plain", teacher.base_url)],
                       queries, tmp_path / "eval", threads=12)
    by_name = {r.name: r for r in results}
    # Structured outputs with bounded free text: the greedy teacher cannot loop in `reasoning`
    # past 120 characters, so the JSON always closes within max_tokens and every completion parses;
    # the base model alone rarely writes the JSON.
    assert by_name["teacher"].format_compliance == 1.0
    assert by_name["base student"].format_compliance < by_name["teacher"].format_compliance
    assert all(r.examples == 12 and 0.0 <= r.accuracy <= 1.0 for r in results)
    rows = pq.read_table(tmp_path / "eval" / "rollouts" / "teacher").to_pylist()
    assert all(len(json.loads(r["outputs"])["reasoning"]) <= 120 for r in rows)


def _keyword_classifier(request, k):
    """A fake student that labels a query ``card_arrival`` when it mentions a card, else
    ``cancel_transfer``, in the JSON the plain adapter parses; every third answer is not JSON."""
    if k % 3 == 2:
        return "I think it is about a card."
    query = request["messages"][-1]["content"].split("[[ ## text ## ]]")[-1].split("Respond with")[0]
    label = "card_arrival" if "card" in query.lower() else "cancel_transfer"
    return json.dumps({"reasoning": f"call {k}", "label": label})


def test_prompt_optimisation_adds_the_models_own_right_answers_as_demos(tmp_path):
    from fake_openai import FakeOpenAI

    from raydspy.distill.evaluate import train_queries

    queries = held_out_queries(6, cache_dir=tmp_path)
    trainset = train_queries(16, cache_dir=tmp_path)
    assert not {q["text"] for q in queries} & {t["text"] for t in trainset}
    with FakeOpenAI(reply=_keyword_classifier) as server:
        results = evaluate([Candidate("student", "fake-model", "plain", server.url)], queries, tmp_path / "eval",
                           threads=4, optimizer="bootstrap", trainset=trainset, max_demos=2)
        demo_prompts = [r for r in server.requests if "call " in json.dumps(r["messages"][:-1])]
    plain, optimised = results
    assert (plain.name, plain.demos) == ("student", 0)
    assert optimised.name == "student + BootstrapFewShot" and 1 <= optimised.demos <= 2
    # Unparseable answers (a third) are misses while bootstrapping and format failures when scored.
    assert 0.4 < plain.format_compliance < 1.0 and 0.4 < optimised.format_compliance < 1.0
    # The demos are answers the model got right on training queries, sent with every test query.
    assert len(demo_prompts) == len(queries)
    rows = pq.read_table(tmp_path / "eval" / "rollouts" / "student+BootstrapFewShot").to_pylist()
    assert len(rows) == 6
    assert all(json.loads(r["outputs"])["label"] in ("card_arrival", "cancel_transfer") for r in rows if r["outputs"])


def test_prompt_optimisation_needs_training_queries(tmp_path):
    with pytest.raises(ValueError, match="trainset"):
        evaluate([Candidate("student", "m", "plain", "http://127.0.0.1:9/v1")], [], tmp_path, optimizer="bootstrap")


def test_train_command_line_overrides_the_config_file():
    from raydspy.cli import build_parser
    from raydspy.distill.cli import train_config

    config_path = str(REPO / "jobs" / "configs" / "grpo-cpu.yaml")
    args = build_parser().parse_args(["train", "grpo", "--config", config_path, "--model", "runs/m",
                                      "--seed", "1", "--max-steps", "3", "--name", "second-pass"])
    config = train_config(args)
    assert (config.model, config.seed, config.max_steps, config.name) == ("runs/m", 1, 3, "second-pass")
    unchanged = train_config(build_parser().parse_args(["train", "grpo", "--config", config_path]))
    assert unchanged == TrainConfig.from_yaml(config_path)
