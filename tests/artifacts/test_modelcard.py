"""Model cards: every model folder's README.md, written from its config.json and meta.json (issue 33, item 5)."""

from __future__ import annotations

import copy
import json
import shlex
import shutil
from pathlib import Path

import pytest

import mscg
from mscg.artifacts.modelcard import CARD_FILE, model_card, write_model_card
from tests.helpers import build_tiny_pipeline, invoke, ok, one_thread  # noqa: F401 (one_thread: a fixture)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """A tiny generator and SASRec (through the CLI, so through save_model_dir), and the two fused."""
    pipe = build_tiny_pipeline(tmp_path_factory.mktemp("modelcard"))
    ok("fuse", pipe.generator, pipe.sasrec, "-d", pipe.data, "-o", pipe.fused, "--device", "cpu")
    write_model_card(pipe.fused)  # `mscg fuse` writes its folder itself
    return pipe


def read(folder: Path) -> tuple[dict, dict]:
    return json.loads((folder / "config.json").read_text()), json.loads((folder / "meta.json").read_text())


def best_metrics(meta: dict) -> dict:
    best = meta["training"]["best_epoch"]
    row = next(h for h in meta["training"]["history"] if h["epoch"] == best)
    return {k: v for k, v in row.items() if k not in ("epoch", "step", "loss", "lr")}


def section(card: str, title: str) -> str:
    """The text of the card's `## title` section."""
    assert f"\n## {title}\n" in card, card
    return card.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("name", ["sasrec", "generator"])
def test_save_model_dir_writes_the_card_from_the_folders_files(pipe, name):
    folder = pipe.work / name
    card = (folder / CARD_FILE).read_text(encoding="utf-8")
    assert card == model_card(*read(folder))
    assert 20 <= len(card.splitlines()) <= 70 and card.endswith("\n") and not card.endswith("\n\n")


def test_quantizers_get_no_card(pipe):
    assert not (pipe.q_text / CARD_FILE).exists() and not (pipe.codes / CARD_FILE).exists()


@pytest.mark.parametrize("name,title,what", [
    ("sasrec", "# SASRec baseline: `sasrec`", ["full softmax"]),
    ("generator", "# MSCGRec generator: `mscg-generator`", ["codes of text + collab", "next item's collab codes",
                                                           "beam size 10", "(`codes/`)"]),
])
def test_the_card_says_what_the_model_is_and_saw(pipe, name, title, what):
    config, meta = read(pipe.work / name)
    card = (pipe.work / name / CARD_FILE).read_text(encoding="utf-8")
    assert card.startswith(title + "\n")
    assert "a catalogue of 40 items (40 of them in training)" in " ".join(card.split())
    for phrase in what:
        assert phrase in " ".join(card.split()), phrase
    data = section(card, "Data")
    inputs = meta["provenance"]["inputs"]
    assert sorted(inputs) == (["codes"] if name == "generator" else []) + ["interactions", "items"]
    for record in inputs.values():
        assert f"`{record['path']}` | `{record['sha256']}`" in data
    validation = section(card, "Validation")
    assert f"Best epoch {meta['training']['best_epoch']} " in validation
    metrics = best_metrics(meta)
    assert "ndcg@10" in metrics and "recall@10/rare" in metrics
    for metric, value in metrics.items():
        assert f"| {metric} | {json.dumps(value)} |" in validation
    table = [line for line in validation.splitlines() if line.startswith("|")]
    assert len(table) == len(metrics) + 2  # the header, the rule and one row per metric
    assert f"Written by mscg {mscg.__version__}, seed 0" in card


def test_the_use_section_gives_commands_that_run(pipe, tmp_path):
    """The card's evaluate and recommend lines, with MODEL and DATA filled in, run as they stand."""
    card = (pipe.sasrec / CARD_FILE).read_text(encoding="utf-8")
    use = section(card, "Use")
    assert "mscg serve MODEL --port 8000" in use and 'model = mscg.load("MODEL")' in use
    lines = {line.split("#")[0].strip() for line in use.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()}
    evaluate = next(line for line in lines if line.startswith("mscg evaluate MODEL -d DATA"))
    argv = [{"MODEL": str(pipe.sasrec), "DATA": str(pipe.data)}.get(a, a) for a in shlex.split(evaluate)]
    argv = [str(tmp_path / a) if a.endswith(".json") else a for a in argv]
    ok(*argv[1:], "--device", "cpu")
    assert json.loads((tmp_path / "metrics.json").read_text())["users"] == 60
    echo, recommend = next(line for line in lines if "mscg recommend MODEL" in line).split(" | ")
    history = shlex.split(echo)[1]
    assert json.loads(history) == {"history": ["i0", "i1"]}
    result = invoke(*[str(pipe.sasrec) if a == "MODEL" else a for a in shlex.split(recommend)[1:]], "--device", "cpu",
                    input=history + "\n")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout.splitlines()[-1])["items"]) == 10
    python = use.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'model.recommend(["i0", "i1"], k=10)' in python


def test_the_fused_card_names_parts_weights_and_the_chosen_weights_metrics(pipe):
    config, meta = read(pipe.fused)
    card = (pipe.fused / CARD_FILE).read_text(encoding="utf-8")
    text = " ".join(card.split())
    assert card.startswith("# Fused ranking: `fused`\n") and "written by `mscg fuse`" in text
    weight = config["weight"]
    assert f"Weights: {json.dumps(weight)} on the generator, {json.dumps(round(1 - weight, 10))} on SASRec " \
           "(chosen on validation)." in text
    assert "`generator/`, `dense/`" in text
    for name in ("generator", "dense", "items", "interactions"):
        assert meta["provenance"]["inputs"][name]["sha256"] in section(card, "Data")
    row = next(r for r in meta["validation"] if r["weight"] == weight)
    validation = section(card, "Validation")
    assert f"on {meta['valid_users']} validation users" in validation
    for metric in ("recall@5", "ndcg@5", "recall@10", "ndcg@10"):
        assert f"| {metric} | {json.dumps(row[metric])} |" in validation
    assert (pipe.fused / "generator" / CARD_FILE).read_bytes() == (pipe.generator / CARD_FILE).read_bytes()


def test_same_meta_gives_the_same_bytes_wherever_the_folder_is(pipe, tmp_path):
    config, meta = read(pipe.generator)
    assert model_card(config, meta) == model_card(copy.deepcopy(config), copy.deepcopy(meta))
    moved = shutil.copytree(pipe.generator, tmp_path / "elsewhere" / "renamed")
    (moved / CARD_FILE).unlink()
    write_model_card(moved)
    assert (moved / CARD_FILE).read_bytes() == (pipe.generator / CARD_FILE).read_bytes()
    changed = copy.deepcopy(meta)
    best = meta["training"]["best_epoch"]
    next(h for h in changed["training"]["history"] if h["epoch"] == best)["ndcg@10"] = 0.123456
    assert "| ndcg@10 | 0.123456 |" in model_card(config, changed)
    assert "| ndcg@10 | 0.123456 |" not in model_card(config, meta)


def test_a_meta_without_validation_gives_a_card_without_that_section(pipe):
    config, meta = read(pipe.sasrec)
    card = model_card(config, {k: v for k, v in meta.items() if k != "training"})
    assert "## Validation" not in card and "## Data" in card and "## Use" in card
    config, meta = read(pipe.fused)
    card = model_card(config, {k: v for k, v in meta.items() if k != "validation"})
    assert "## Validation" not in card and "Weights: " in card
    given = dict(config, weight=0.35)  # weights given off the validation grid: no row of metrics is theirs
    assert "## Validation" not in model_card(given, dict(meta, weight_chosen_on="given"))


def test_absent_or_odd_fields_are_left_out_never_guessed():
    card = model_card({"model_type": "sasrec"}, {"kind": "model"})
    assert card.startswith("# SASRec baseline: `sasrec`\n")
    assert "catalogue of" not in card and "softmax" not in card and "Written by" not in card
    assert "## Data" not in card and "## Validation" not in card and "## Use" in card
    card = model_card({"model_type": "sasrec", "n_items": "many", "negatives": True},
                      {"item_ids": "x", "training": {"best_epoch": 2, "history": "none"}, "provenance": [1]})
    assert "## Validation" not in card and "negatives" not in card
    assert model_card({}, {}).startswith("# mscg model: `unknown`\n")


def test_the_recorded_command_and_version_close_the_card():
    command = ["mscg", "train", "-d", "my data", "--codes", "work/codes", "-o", "work/gen"]
    card = model_card({"model_type": "mscg-generator"}, {"provenance": {"mscg_version": "9.9", "seed": 3,
                                                                          "command": command}})
    assert card.endswith("Written by mscg 9.9, seed 3:\n\n```\nmscg train -d 'my data' --codes work/codes -o work/gen"
                         "\n```\n")


def test_item_ids_in_the_examples_are_quoted_for_the_shell():
    card = model_card({"model_type": "sasrec", "n_items": 2}, {"item_ids": ["it's", 'say "hi"']})
    echo = next(line for line in card.splitlines() if line.startswith("echo "))
    assert json.loads(shlex.split(echo.split(" | ")[0])[1]) == {"history": ["it's", 'say "hi"']}
    long = model_card({"model_type": "sasrec"}, {"item_ids": ["x" * 300]})
    assert "x" * 300 not in long and '["ITEM_ID"]' in long


def test_loading_and_serving_code_ignore_the_card(pipe):
    for folder in (pipe.sasrec, pipe.generator, pipe.fused):
        assert (folder / CARD_FILE).is_file()
        model = mscg.load(folder, device="cpu")
        assert len(model.recommend(["i0", "i1"], k=5)) == 5


def test_a_run_whose_budget_could_not_complete_its_schedule_says_so(pipe):
    config, meta = read(pipe.generator)  # the tiny run is short: warned (training/loop.schedule_warnings)
    assert meta["training"]["warnings"], meta["training"]
    validation = section(model_card(config, meta), "Validation")
    assert "Training warned: " + meta["training"]["warnings"][0] in validation
    quiet = dict(meta, training={k: v for k, v in meta["training"].items() if k != "warnings"})
    assert "warned" not in section(model_card(config, quiet), "Validation")
