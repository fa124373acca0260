"""Token-level distillation (`raydspy train kd`): the loss against its formula, the batch's
alignment of the teacher's alternatives with the tokens they predict, the embedded model
distilling from its own top-k (the loss is then exactly its missing mass), and two steps on Ray
Train from a KD export.

The test on Ray Train is heavy (a local Ray, a training worker): run under the shared lock."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raydspy.distill.config import KDSettings, TrainConfig
from raydspy.distill.exports import KD_SCHEMA
from raydspy.distill.kd import KDCollator, KDTrainer, check_vocabulary, kd_loss
from raydspy.errors import ConfigError

K = 4


def test_kd_loss_is_the_forward_kl_on_the_teachers_top_k_plus_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, 3, 4, -100, -100], [-100, -100, 7, 1, 2]])
    top_ids = torch.randint(0, 11, (2, 5, 3))
    top_logprobs = -torch.rand(2, 5, 3) * 3
    settings = KDSettings(alpha=0.25, temperature=2.0)
    loss, kd, ce = kd_loss(logits, labels, top_ids, top_logprobs, settings)
    kls, nlls = [], []
    for b in range(2):
        for t in range(5):
            if labels[b, t] == -100:
                continue
            weights = [math.exp(lp / 2.0) for lp in top_logprobs[b, t].tolist()]
            p = [w / sum(weights) for w in weights]
            q = torch.log_softmax(logits[b, t] / 2.0, dim=-1)
            kls.append(sum(pk * (math.log(pk) - q[i].item()) for pk, i in zip(p, top_ids[b, t].tolist())))
            nlls.append(-torch.log_softmax(logits[b, t], dim=-1)[labels[b, t]].item())
    assert kd.item() == pytest.approx(4.0 * sum(kls) / len(kls), rel=1e-5)  # scaled by T²
    assert ce.item() == pytest.approx(sum(nlls) / len(nlls), rel=1e-5)
    assert loss.item() == pytest.approx(0.25 * kd.item() + 0.75 * ce.item(), rel=1e-6)


def test_the_batch_puts_each_alternative_where_its_token_is_predicted():
    rows = [
        {"prompt_token_ids": [5, 6, 7], "completion_token_ids": [8, 9], "top_token_ids": [[8, 1], [9, 2]],
         "top_logprobs": [[-0.1, -3.0], [-0.2, -2.0]]},
        {"prompt_token_ids": [5, 6], "completion_token_ids": [4, 3, 2], "top_token_ids": [[4, 1], [3, 1], [2, 1]],
         "top_logprobs": [[-0.5, -1.0], [-0.5, -1.0], [-0.5, -1.0]]},
    ]  # fmt: skip
    batch = KDCollator(pad_token_id=0, max_length=4)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [5, 6, 4, 3]]  # cut at max_length
    assert batch["labels"].tolist() == [[-100, -100, 8, -100], [-100, 4, 3, -100]]  # position t predicts t + 1
    assert batch["top_ids"][0, 2].tolist() == [8, 1] and batch["top_ids"][1, 2].tolist() == [3, 1]
    assert batch["top_logprobs"][0, 2].tolist() == pytest.approx([-0.1, -3.0])
    with pytest.raises(ConfigError, match="teacher's tokenizer"):
        check_vocabulary(pa.Table.from_pylist(rows, schema=KD_SCHEMA), vocab_size=9, model="tiny")


@pytest.fixture(scope="module")
def student():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raydspy.teacher.embedded import ensure_checkpoint

    path = ensure_checkpoint()
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _self_distillation_rows(tokenizer, model, count: int = 2) -> list[dict]:
    """KD rows whose teacher is ``model`` itself: its greedy answer and its top-K at each token."""
    rows = []
    for question in ["What is the capital of France?", "Name a primary colour."][:count]:
        messages = [{"role": "user", "content": question}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)
            completion = out[0, len(prompt) :].tolist()
            logprobs = torch.log_softmax(model(out).logits[0, len(prompt) - 1 : -1].float(), dim=-1)
        top = logprobs.topk(K, dim=-1)
        rows.append(
            {
                "messages": [*messages, {"role": "assistant", "content": tokenizer.decode(completion)}],
                "prompt_token_ids": prompt,
                "completion_token_ids": completion,
                "completion_logprobs": logprobs.gather(-1, torch.tensor(completion)[:, None])[:, 0].tolist(),
                "top_token_ids": top.indices.tolist(),
                "top_logprobs": top.values.tolist(),
            }
        )
    return rows


def _trainer(tokenizer, model, rows, output_dir, **args) -> KDTrainer:
    from transformers import TrainingArguments

    collator = KDCollator(tokenizer.pad_token_id or 0, 512)
    arguments = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=len(rows), remove_unused_columns=False, use_cpu=True,
        report_to="none", logging_steps=1, save_strategy="no", **args,
    )  # fmt: skip
    return KDTrainer(model=model, args=arguments, train_dataset=rows, data_collator=collator, kd=KDSettings(alpha=1.0))


def _loss(trainer, rows) -> float:
    trainer.model.eval()
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, trainer.data_collator(rows)).item()


def test_a_student_equal_to_its_teacher_scores_exactly_the_teachers_missing_mass(student, tmp_path):
    tokenizer, model = student
    rows = _self_distillation_rows(tokenizer, model)
    missing = [-math.log(sum(math.exp(lp) for lp in top)) for row in rows for top in row["top_logprobs"]]
    # p = q on the teacher's top K (renormalised): KL(p || q) = -log Z, Z the top K's mass.
    assert _loss(_trainer(tokenizer, model, rows, tmp_path, max_steps=1), rows) == pytest.approx(
        sum(missing) / len(missing), abs=2e-4
    )


@pytest.mark.slow
def test_a_kd_step_moves_the_student_towards_the_teachers_top_k(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raydspy.teacher.embedded import ensure_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(ensure_checkpoint())
    model = AutoModelForCausalLM.from_pretrained(ensure_checkpoint(), dtype=torch.float32)  # its own copy: trained
    rows = _self_distillation_rows(tokenizer, model)
    # One plain gradient step, small enough to be first-order: the loss must go down.
    trainer = _trainer(tokenizer, model, rows, tmp_path, max_steps=1, optim="sgd", learning_rate=1e-3)
    before = _loss(trainer, rows)
    trainer.train()
    assert _loss(trainer, rows) < before
    (logged,) = [entry for entry in trainer.state.log_history if "kd_loss" in entry]
    # alpha 1: the loss is the KD term; the CE term is logged beside it
    assert logged["kd_loss"] == pytest.approx(logged["loss"], rel=1e-3) and logged["ce_loss"] > 0


@pytest.mark.slow
def test_two_kd_steps_on_ray_train_from_a_kd_export(ray_local, student, tmp_path):
    from raydspy.distill.train import run_training

    tokenizer, model = student
    folder = tmp_path / "kd"
    folder.mkdir()
    rows = _self_distillation_rows(tokenizer, model)
    pq.write_table(
        pa.Table.from_pylist([{**r, "rollout_id": "r", "example_id": "e"} for r in rows], schema=KD_SCHEMA),
        folder / "part-0.parquet",
    )
    config = TrainConfig(
        dataset=str(folder), storage_path=str(tmp_path / "runs"), name="kd-test", max_steps=2,
        per_device_train_batch_size=2, learning_rate=1e-4, logging_steps=1, kd=KDSettings(alpha=0.5),
    )  # fmt: skip
    result = run_training("kd", config)
    assert result.metrics["global_step"] == 2 and result.metrics["kd_loss"] > 0 and result.metrics["ce_loss"] > 0
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(result.model_path).num_parameters() > 100_000_000


@pytest.mark.slow
def test_a_kd_step_with_lora_trains_only_the_adapters_and_merges_them(student, tmp_path):
    """``raydspy train kd`` with ``lora``: the KD loss reaches the adapters only (the base weights
    stay as loaded), and the merged model is the base plus what the adapters learnt."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from raydspy.distill.config import LoraSettings
    from raydspy.distill.kd import KD_INPUTS, build_kd_trainer
    from raydspy.teacher.embedded import ensure_checkpoint

    tokenizer, teacher = student
    rows = _self_distillation_rows(tokenizer, teacher)
    model = AutoModelForCausalLM.from_pretrained(ensure_checkpoint(), dtype=torch.float32)  # its own copy: wrapped
    base = {name: weight.clone() for name, weight in model.state_dict().items()}
    lora = LoraSettings(r=4, alpha=8)
    config = TrainConfig(dataset="exports/kd", lora=lora, max_length=512, kd=KDSettings(alpha=1.0))
    peft = LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules, task_type="CAUSAL_LM")
    common = dict(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, optim="sgd", learning_rate=1e-2,
        use_cpu=True, report_to="none", logging_steps=1, save_strategy="no",
    )  # fmt: skip
    dataset = Dataset.from_list([{k: r[k] for k in KD_INPUTS} for r in rows])
    trainer = build_kd_trainer(config, model, tokenizer, common, dataset, peft)
    trained = [name for name, weight in trainer.model.named_parameters() if weight.requires_grad]
    assert trained and all("lora_" in name for name in trained)
    before = _loss(trainer, rows)
    trainer.train()  # one plain gradient step: first-order, the loss must go down
    assert _loss(trainer, rows) < before
    merged = trainer.model.merge_and_unload()
    changed = {name for name, weight in merged.state_dict().items() if not torch.equal(weight, base[name])}
    assert changed and all(name.endswith(".weight") and "proj" in name for name in changed)
