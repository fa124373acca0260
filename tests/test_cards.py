"""Dataset cards (`raydspy.core.cards`, the run's and the export's): what they say, and that the
Hugging Face format's metadata is what `datasets` reads. Pure: no Ray (the exports' and the
pipeline's cards are tested where those run: test_distill_exports, test_resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from raydspy.core.cards import DatasetCard, input_license, schema_table, size_category, write_card
from raydspy.core.rollout_card import rollouts_card
from raydspy.core.rollouts import ROLLOUT_SCHEMA
from raydspy.core.stats import ACCEPT_REWARD, RolloutStats
from raydspy.core.storage import resolve
from raydspy.distill.cards import export_card
from raydspy.distill.exports import SFT_SCHEMA
from raydspy.programs import orders

FIXTURE = Path(__file__).resolve().parent / "data" / "banking77-rollouts.parquet"


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("\n---\n", 1)[0][4:])


def test_a_card_is_yaml_metadata_then_markdown_with_its_data_files_as_the_default_config(tmp_path):
    card = DatasetCard(title="T", data_files="part-*.parquet", metadata={"license": "mit"}, sections=[("A", "body")])
    path = write_card(resolve(str(tmp_path)), card)
    text = Path(path).read_text()
    meta = _front_matter(text)
    assert meta["license"] == "mit"
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "part-*.parquet"}]}]
    assert "\n# T\n" in text and "\n## A\n\nbody\n" in text and Path(path).name == "README.md"


def test_size_categories_are_the_hubs():
    assert [size_category(n) for n in (0, 999, 1_000, 54_321, 1_000_000, 2 * 10**9)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "1M<n<10M",
        "n>1B",
    ]


def test_the_inputs_license_is_what_their_own_card_declares_and_nothing_is_guessed(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"q": "x"}\n')
    assert input_license(resolve(str(folder / "train.jsonl"))) is None  # no card
    (folder / "README.md").write_text("# Data\n\nLicense: MIT\n")
    assert input_license(resolve(str(folder))) is None  # a card, but no metadata
    (folder / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# Data\n")
    assert input_license(resolve(str(folder / "train.jsonl"))) == input_license(resolve(str(folder))) == "cc-by-4.0"


def test_the_shipped_datasets_cards_declare_their_licenses():
    from raydspy.datasets import banking77_path, orders_path

    assert input_license(resolve(str(orders_path("train.jsonl")))) == "cc0-1.0"
    assert input_license(resolve(str(banking77_path("train.csv")))) == "cc-by-4.0"


def test_accepted_rollouts_are_counted_at_the_sft_exports_threshold_and_old_counts_read_as_zero():
    table = pq.read_table(FIXTURE)
    stats = RolloutStats.of(table)
    rewards = [r for r in table.column("reward").to_pylist() if r is not None]
    assert stats.reward_accepted == sum(r >= ACCEPT_REWARD for r in rewards) > 0
    assert (stats + stats).reward_accepted == 2 * stats.reward_accepted
    assert RolloutStats.from_json(stats.to_json()) == stats
    older = json.loads(stats.to_json())
    del older["reward_accepted"]  # a manifest written before the count existed
    assert RolloutStats.from_json(json.dumps(older)).reward_accepted == 0


def _card(stats: RolloutStats, **overrides):
    args = {
        "program": orders.program(),
        "program_name": "raydspy.programs.orders:program",
        "program_hash": "0123456789abcdef",
        "teacher_model": "big-teacher",
        "sampling": {"temperature": 0.7, "max_tokens": 99, "seed": None},
        "n": 4,
        "input_uri": "s3://bucket/orders.jsonl",
        "input_license": "cc0-1.0",
        "data_files": "part-*.parquet",
        **overrides,
    }
    return rollouts_card(stats, **args)


def test_a_rollouts_card_names_the_program_teacher_rewards_schema_and_license():
    stats = RolloutStats.of(pq.read_table(FIXTURE))
    program = orders.program()
    text = _card(stats, program=program).render()
    meta = _front_matter(text)
    assert meta["license"] == "cc0-1.0" and meta["size_categories"] == [size_category(stats.rows)]
    assert f"{stats.rows} rollouts of the DSPy program `raydspy.programs.orders:program`, 4 per example," in text
    for name, predictor in program.named_predictors():
        assert f"| `{name}` | `{predictor.signature.signature}` |" in text
    assert "Model `big-teacher`; sampling: temperature 0.7, max_tokens 99." in text
    for name, mean in stats.reward_means.items():
        assert f"| `{name}` | {mean:.3f} |" in text
    assert f"{stats.reward_accepted} of {stats.rows} rollouts" in text
    assert all(f"| `{f.name}` |" in text for f in ROLLOUT_SCHEMA)
    assert "huggingface/datasets#5612" in text
    # `datasets` is told the features, less the map it cannot read, so it reads the rest.
    (config,) = meta["configs"]
    assert config["columns"] == [n for n in ROLLOUT_SCHEMA.names if n not in ("rewards", "trace_tokens")]
    assert [f["name"] for f in meta["dataset_info"]["features"]] == config["columns"]


def test_a_dry_run_card_says_no_lm_was_called_and_the_license_is_unknown():
    text = _card(RolloutStats(), teacher_model=None, input_license=None).render()
    assert "license" not in _front_matter(text)
    assert "No LM was called" in text and "their license is not known" in text


def test_an_export_card_says_what_its_rows_are_for_and_how_trl_reads_them():
    text = export_card(
        "sft",
        rows=12,
        rollouts=30,
        rollouts_uri="out/run",
        options={"min_reward": 1.0, "reward": None},
        schema=SFT_SCHEMA,
        license_="cc-by-4.0",
    ).render()
    meta = _front_matter(text)
    assert meta["license"] == "cc-by-4.0" and "sft" in meta["tags"]
    assert "12 rows for trl.SFTTrainer" in text and "`min_reward=1.0`" in text and "from 30 rollouts" in text
    assert "raydspy train sft --config CONFIG.yaml --dataset OUTPUT" in text
    assert schema_table(SFT_SCHEMA).splitlines()[2].startswith("| `messages` |")


def test_datasets_loads_the_rollouts_a_card_names_and_nothing_else(tmp_path):
    import shutil

    import datasets

    out = tmp_path / "out"
    (out / "_runs").mkdir(parents=True)
    shutil.copy(FIXTURE, out / "part-0000000000000001.parquet")
    shutil.copy(FIXTURE, out / "_runs" / "not-rollouts.parquet")
    table = pq.read_table(FIXTURE)
    write_card(resolve(str(out)), _card(RolloutStats.of(table)))
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.num_rows == table.num_rows
    assert loaded["rollout_id"] == table.column("rollout_id").to_pylist()
    assert loaded[0]["trace"][0]["messages"] == table.column("trace")[0].as_py()[0]["messages"]


def test_collect_rewrites_its_outputs_card_over_every_file_it_wrote(tmp_path):
    import datasets

    import raydspy

    collect = raydspy.Collect(orders.program(), str(tmp_path / "out"), num_threads=2)
    collect.collect([{"message": "3 lamps to Lyon"}], n=2, dry_run=True)
    collect.collect([{"message": "1 rug to Oslo"}, {"message": "2 fans to Perth"}], n=1, dry_run=True)
    text = (tmp_path / "out" / "README.md").read_text()
    assert "4 rollouts of the DSPy program `OrderAssistant` from the teacher none (dry run)" in text
    loaded = datasets.load_dataset(str(tmp_path / "out"), split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.num_rows == 4 and all(loaded["dry_run"])
