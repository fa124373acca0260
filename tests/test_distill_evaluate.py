"""Evaluation report, student Serve configs, training configs; and (e2e) the evaluation of the
real teacher and base student through the banking77 program."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import yaml

from raydspy.cli.evaluate import student_serve_config
from raydspy.core.storage import resolve
from raydspy.distill.config import TrainConfig
from raydspy.distill.evaluate import Candidate, EvalResult, evaluate
from raydspy.distill.report import markdown_table, write_report
from raydspy.distill.serve import absolute_sources
from raydspy.errors import ConfigError
from raydspy.pipeline.summary import read_rollouts

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

    (config,) = [
        LLMConfig.model_validate(c) for c in _load("student-gpu.yaml")["applications"][0]["args"]["llm_configs"]
    ]
    assert config.engine_kwargs["dtype"] == "bfloat16"
    assert config.get_engine_config().num_devices == 1
    assert config.model_loading_config.model_source.bucket_uri.startswith("s3://")


def test_student_config_points_at_given_checkpoints(tmp_path):
    config = student_serve_config(_load("student-cpu.yaml"), {"student": str(tmp_path / "a"), "student-grpo": "b"})
    sources = {
        c["model_loading_config"]["model_id"]: c["model_loading_config"]["model_source"]
        for c in config["applications"][0]["args"]["llm_configs"]
    }
    assert sources == {
        "student": str(tmp_path / "a"),
        "student-grpo": str(Path("b").resolve()),
        "smollm2-135m-instruct": "raydspy://smollm2-135m-instruct",
    }


def test_relative_model_sources_become_absolute_and_missing_ones_fail(tmp_path):
    (tmp_path / "runs" / "m").mkdir(parents=True)
    configs = [
        {"model_loading_config": {"model_id": "s", "model_source": "./runs/m"}},
        {"model_loading_config": {"model_id": "h", "model_source": "meta-llama/Llama-3.2-1B-Instruct"}},
    ]
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


BANKING77, BANKING77_REWARDS = "raydspy.programs.banking77:program", "raydspy.programs.banking77:rewards"
ORDERS, ORDERS_REWARDS = "raydspy.programs.orders:program", "raydspy.programs.orders:rewards"


def _result(name, model, decoding, exact, fmt, errors=0):
    return EvalResult(
        name,
        model,
        decoding,
        200,
        (exact + fmt) / 2,
        {"exact_match": exact, "format": fmt},
        fmt,
        {"predict": fmt},
        errors,
        {"AdapterParseError": errors} if errors else {},
        1000,
        100,
        60.0,
    )


def test_report_writes_table_chart_and_json(tmp_path):
    results = [
        _result("teacher", "smollm2-135m-instruct", "structured", 0.22, 1.0),
        _result("SFT student", "student", "plain", 0.255, 0.97, errors=6),
    ]
    paths = write_report(results, tmp_path, title="banking77")
    table = paths["markdown"].read_text()
    assert table.splitlines()[0] == (
        "| model | decoding | demos | reward | exact_match | format | format | "
        "format `predict` | errors | tokens (prompt / completion) | time | examples |"
    )
    assert "| SFT student (`student`) | plain | 0 | 61.3 % | 25.5 % | 97.0 % | 97.0 % | 97.0 % | 6 |" in table
    assert table == markdown_table(results)
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(paths["json"].read_text())
    assert saved[1]["format_compliance"] == 0.97 and saved[1]["errors_by_type"] == {"AdapterParseError": 6}


def test_candidates_from_the_command_line():
    parse = Candidate.parse
    assert parse("teacher=llama-70b@http://teacher:8000/v1:structured", max_text_chars=400) == Candidate(
        "teacher", "llama-70b", "structured", "http://teacher:8000/v1", 400
    )
    assert parse("sft=student") == Candidate("sft", "student", "plain")
    assert parse("local=llama3:8b@http://127.0.0.1:11434/v1:chat").model == "llama3:8b"
    with pytest.raises(ConfigError, match="NAME=MODEL"):
        parse("no-model=")


def test_the_evaluation_plan_serves_students_beside_the_default_candidates(tmp_path):
    from raydspy.cli.evaluate import evaluation_plan
    from raydspy.cli.main import build_parser

    def plan(*argv):
        return evaluation_plan(build_parser().parse_args(["evaluate", *argv]))

    task, candidates, served, output = plan(
        "--task", "orders", "--student", "runs/orders/sft-model", "--serve", "grpo2=runs/orders/grpo-2"
    )
    assert [(c.name, c.model, c.decoding) for c in candidates] == [
        ("teacher", "smollm2-135m-instruct", "structured"),
        ("base student", "smollm2-135m-instruct", "plain"),
        ("grpo2", "grpo2", "plain"),
        ("SFT student", "student", "plain"),
    ]
    assert served == {"grpo2": "runs/orders/grpo-2", "student": "runs/orders/sft-model"}
    assert task.held_out.endswith("test.jsonl") and output == Path("runs/orders/sft-model").resolve().parent / "eval"
    task, candidates, served, output = plan(
        "--program", ORDERS, "--input", "held.jsonl", "--candidate", "mine=m@http://x:1/v1"
    )
    assert (task.held_out, [c.name for c in candidates], served, output) == (
        "held.jsonl",
        ["mine"],
        {},
        Path("runs/task/eval"),
    )
    with pytest.raises(ConfigError, match="held_out"):
        plan("--program", ORDERS)
    with pytest.raises(ConfigError, match="named"):
        plan("--task", "orders", "--candidate", "a=x", "--candidate", "a=y")


def _unparsed(message: str) -> bool:
    """Whether the fake student answers this order's extraction with text that is not JSON: a third
    of the messages, chosen by their text so that the outcome never depends on call order."""
    return zlib.crc32(message.strip().encode()) % 3 == 0


def _order_assistant(request, k):
    """A fake student of the orders program: extracts with a regex (a third of the answers are not
    JSON, see ``_unparsed``) and confirms with the order's fields."""
    import re

    system, user = request["messages"][0]["content"], request["messages"][-1]["content"]
    if "`reply`" in system:
        fields = dict(re.findall(r"\[\[ ## (\w+) ## \]\]\n(.*)", user))
        return json.dumps({"reply": f"Your {fields['quantity']} {fields['item']} will reach {fields['city']}."})
    message = user.split("[[ ## message ## ]]")[-1].split("Respond with")[0]
    if _unparsed(message):
        return "an order, I think"
    quantity = re.search(r"\b(\d+)\b", message)
    city = re.search(r"(?:to|in|for) ([A-Z][a-z]+)", message)
    return json.dumps(
        {
            "city": city.group(1) if city else "Oslo",
            "quantity": int(quantity.group(1)) if quantity else 1,
            "item": "blue mugs",
        }
    )


def test_any_program_with_its_own_rewards_per_predictor(tmp_path):
    from fake_openai import FakeOpenAI

    from raydspy.pipeline.inputs import load_examples
    from raydspy.task import load_task

    examples = load_examples(load_task("orders").held_out, limit=12)
    with FakeOpenAI(reply=_order_assistant) as server:
        (result,) = evaluate(
            ORDERS,
            [Candidate("student", "fake-model", "plain", server.url)],
            examples,
            tmp_path / "eval",
            rewards=ORDERS_REWARDS,
            threads=4,
        )
    assert result.examples == 12 and set(result.rewards) == {
        "city_match",
        "quantity_match",
        "item_match",
        "reply_mentions",
    }
    # Some extractions do not parse: those rollouts fail (0 on every reward) and never reach the
    # second predictor, whose every call parses.
    unparsed = sum(_unparsed(e["message"]) for e in examples)
    assert 0 < unparsed < 12
    assert result.format_by_predictor["confirm"] == 1.0
    assert result.format_by_predictor["extract"] == pytest.approx(1 - unparsed / 12)
    assert result.format_compliance == result.format_by_predictor["extract"]
    assert result.errors == result.errors_by_type["AdapterParseError"] == round(12 * (1 - result.format_compliance))
    assert 0.0 < result.rewards["city_match"] <= result.format_compliance
    assert result.rewards["item_match"] <= result.rewards["city_match"]
    assert result.prompt_tokens > 0 and result.reward is not None
    rows = read_rollouts(resolve(str(tmp_path / "eval" / "rollouts" / "student"))).to_pylist()
    assert len(rows) == 12 and all(len(r["trace"]) == 2 for r in rows if r["error"] is None)


def _keyword_classifier(request, k):
    """A fake student that labels a query ``card_arrival`` when it mentions a card, else
    ``cancel_transfer``, in the JSON the plain adapter parses; every third answer is not JSON."""
    if k % 3 == 2:
        return "I think it is about a card."
    query = request["messages"][-1]["content"].split("[[ ## text ## ]]")[-1].split("Respond with")[0]
    label = "card_arrival" if "card" in query.lower() else "cancel_transfer"
    return json.dumps({"reasoning": f"call {k}", "label": label})


def test_prompt_optimisation_uses_the_tasks_rewards_as_its_metric(tmp_path):
    from fake_openai import FakeOpenAI

    from raydspy.pipeline.inputs import load_examples
    from raydspy.task import load_task

    task = load_task("banking77")
    queries = load_examples(task.held_out, limit=6)
    trainset = [
        r for r in load_examples(task.input, limit=400) if r["category"] in ("card_arrival", "cancel_transfer")
    ][:6]
    assert not {q["text"] for q in queries} & {t["text"] for t in trainset}
    with FakeOpenAI(reply=_keyword_classifier) as server:
        results = evaluate(
            BANKING77,
            [Candidate("student", "fake-model", "plain", server.url)],
            queries,
            tmp_path / "eval",
            rewards=BANKING77_REWARDS,
            threads=4,
            optimizer="bootstrap",
            trainset=trainset,
            max_demos=2,
        )
        demo_prompts = [r for r in server.requests if "call " in json.dumps(r["messages"][:-1])]
    plain, optimised = results
    assert (plain.name, plain.demos) == ("student", 0)
    assert optimised.name == "student + BootstrapFewShot" and 1 <= optimised.demos <= 2
    # Unparseable answers (a third) are misses while bootstrapping and format failures when scored.
    assert 0.4 < plain.format_compliance < 1.0 and 0.4 < optimised.format_compliance < 1.0
    # The demos are answers the model got right on training queries, sent with every test query.
    assert len(demo_prompts) == len(queries)
    rows = read_rollouts(resolve(str(tmp_path / "eval" / "rollouts" / "student+BootstrapFewShot"))).to_pylist()
    assert len(rows) == 6
    assert all(json.loads(r["outputs"])["label"] in ("card_arrival", "cancel_transfer") for r in rows if r["outputs"])


def test_prompt_optimisation_needs_training_examples_and_rewards(tmp_path):
    candidate = [Candidate("student", "m", "plain", "http://127.0.0.1:9/v1")]
    with pytest.raises(ConfigError, match="trainset"):
        evaluate(BANKING77, candidate, [], tmp_path, rewards=BANKING77_REWARDS, optimizer="bootstrap")
    with pytest.raises(ConfigError, match="rewards"):
        evaluate(BANKING77, candidate, [], tmp_path, optimizer="bootstrap", trainset=[{"text": "x"}])


@pytest.mark.e2e
def test_evaluate_teacher_and_base_student_through_the_program(teacher, tmp_path):
    from raydspy.pipeline.inputs import load_examples
    from raydspy.task import load_task

    queries = load_examples(load_task("banking77").held_out, limit=12)
    results = evaluate(
        BANKING77,
        [
            Candidate("teacher", teacher.model, "structured", teacher.base_url, max_text_chars=120),
            Candidate("base student", teacher.model, "plain", teacher.base_url),
        ],
        queries,
        tmp_path / "eval",
        rewards=BANKING77_REWARDS,
        threads=12,
    )
    by_name = {r.name: r for r in results}
    # Structured outputs with bounded free text: the greedy teacher cannot loop in `reasoning`
    # past 120 characters, so the JSON always closes within max_tokens and every completion parses;
    # the base model alone rarely writes the JSON.
    assert by_name["teacher"].format_compliance == 1.0
    assert by_name["base student"].format_compliance < by_name["teacher"].format_compliance
    assert all(r.examples == 12 and 0.0 <= r.rewards["exact_match"] <= 1.0 for r in results)
    rows = read_rollouts(resolve(str(tmp_path / "eval" / "rollouts" / "teacher"))).to_pylist()
    assert all(len(json.loads(r["outputs"])["reasoning"]) <= 120 for r in rows)


def test_train_command_line_overrides_the_config_file():
    from raydspy.cli.distill import train_config
    from raydspy.cli.main import build_parser

    config_path = str(REPO / "jobs" / "configs" / "grpo-cpu.yaml")
    args = build_parser().parse_args(
        [
            "train",
            "grpo",
            "--config",
            config_path,
            "--model",
            "runs/m",
            "--seed",
            "1",
            "--max-steps",
            "3",
            "--name",
            "second-pass",
        ]
    )
    config = train_config(args)
    assert (config.model, config.seed, config.max_steps, config.name) == ("runs/m", 1, 3, "second-pass")
    unchanged = train_config(build_parser().parse_args(["train", "grpo", "--config", config_path]))
    assert unchanged == TrainConfig.from_yaml(config_path)


def test_train_grpo_takes_the_task_from_the_command_line_and_checks_its_weights(tmp_path):
    from raydspy.cli.distill import train_config
    from raydspy.cli.main import build_parser
    from raydspy.distill.train import resolve_grpo, run_training

    config_path = str(REPO / "jobs" / "configs" / "grpo-cpu.yaml")
    args = build_parser().parse_args(["train", "grpo", "--config", config_path, "--task", "orders"])
    config = train_config(args)
    assert (config.grpo.task, config.grpo.reward_weights, config.grpo.num_generations) == ("orders", {}, 4)
    grpo = resolve_grpo(config)
    assert (grpo.program, grpo.rewards) == ("raydspy.programs.orders:program", "raydspy.programs.orders:rewards")
    banking = TrainConfig.from_yaml(config_path)
    assert resolve_grpo(banking).program == "raydspy.programs.banking77:program"
    # Weights naming no reward of the task fail before any worker starts.
    bad = config.model_copy(update={"grpo": config.grpo.model_copy(update={"reward_weights": {"exact_match": 1.0}})})
    with pytest.raises(ConfigError, match="exact_match"):
        run_training("grpo", bad.model_copy(update={"dataset": str(tmp_path)}))
    with pytest.raises(ConfigError, match="grpo"):
        run_training("grpo", TrainConfig(dataset=str(tmp_path)))
