"""The `mscg` command itself: help texts people can read, flags that take no value, shell completion."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import build_tiny_pipeline, invoke

STAGES = ["prepare", "embed", "import-embeddings", "collab", "predict-collab", "quantize", "assign-codes", "train",
          "fuse", "evaluate", "recommend", "serve", "compare", "plot"]
LIGHT = [None, *STAGES]  # every help without torch


def help_text(*command: str) -> str:
    result = invoke(*command, "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize("stage", [None, *STAGES])
def test_flags_show_no_bool_metavar(stage):
    assert "<bool>" not in help_text(*([stage] if stage else []))


def test_recommend_help_keeps_the_brackets():
    assert '"history": [item_id, ...]}' in help_text("recommend")


def test_quantize_help_names_the_defaults():
    text = help_text("quantize")
    assert "32 (rq-dino)" in text and "1e-3 (rq-vae), 5e-4 (rq-dino)" in text
    assert re.search(r"default: chosen from the\s+catalogue size", text)
    assert "default: image for rq-dino" in text


def test_shell_completion_is_offered():
    text = help_text()
    assert "--install-completion" in text and "--show-completion" in text


def test_a_flag_given_a_value_is_refused():
    result = invoke("evaluate", "model", "-d", "data", "--force", "true")
    assert result.exit_code == 2
    assert "unexpected extra argument" in result.stderr and "(true)" in result.stderr


@pytest.mark.parametrize("stage", LIGHT)
def test_help_does_not_import_torch(stage):
    """`mscg --help` imports no command module, and a stage's help imports its own only: no torch, no
    transformers (they cost seconds), so help is quick."""
    code = ("import contextlib, io, runpy, sys\n"
            f"sys.argv = ['mscg', *{[stage] if stage else []!r}, '--help']\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n"
            "        runpy.run_module('mscg', run_name='__main__')\n"
            "    except SystemExit as e:\n"
            "        assert not e.code, e.code\n"
            "assert 'Usage' in out.getvalue()\n"
            "print(sorted(m for m in ('torch', 'transformers', 'safetensors') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_recommending_with_a_generator_does_not_import_transformers(tmp_path):
    """The generator's T5 is mscg's own (mscg/models/t5.py): loading a trained generator and recommending,
    from Python or with `mscg recommend`, never imports transformers (it costs seconds)."""
    pipe = build_tiny_pipeline(tmp_path, sasrec=False)
    code = ("import sys, mscg\n"
            f"m = mscg.load({str(pipe.generator)!r})\n"
            "recs = m.recommend(m.item_ids[:2], k=5)\n"
            "assert len(recs) == 5, recs\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['torch']"
    items = [json.loads(line)["item_id"] for line in (pipe.data / "items.jsonl").read_text().splitlines()[:2]]
    cli = subprocess.run([sys.executable, "-X", "importtime", "-m", "mscg", "recommend", str(pipe.generator),
                          "-k", "3"], input=json.dumps({"user_id": "u", "history": items}) + "\n",
                         capture_output=True, text=True, check=False)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert len(json.loads(cli.stdout)["items"]) == 3
    imported = [line.split("|")[-1].strip() for line in cli.stderr.splitlines() if line.startswith("import time:")]
    assert "torch" in imported and not [name for name in imported if name.split(".")[0] == "transformers"]


def test_the_help_lists_every_stage_in_pipeline_order():
    text = help_text()
    positions = [text.find(f" {stage} ") for stage in STAGES]
    assert -1 not in positions and positions == sorted(positions)


# ---- options whose values come from a fixed set: help lists them, completion offers them, click refuses others --

CHOICES = [  # (command, option, the allowed values as help shows them)
    ("evaluate", "--format", "json|csv|md"), ("evaluate", "--split", "valid|test"),
    ("compare", "--format", "json|csv|md"),
    ("recommend", "--on-error", "fail|skip"), ("recommend", "--fallback", "none|popular"),
    ("collab", "--negative-sampler", "uniform|popularity"), ("collab", "--precision", "bf16|fp32"),
    ("train", "--precision", "bf16|fp32"), ("train", "--constraint", "trie|level|off"),
    ("train", "--history-encoding", "items|tokens"), ("train", "--samples", "prefix|window"),
    ("train", "--train-trie", "all|trained"), ("train", "--decode", "text|image|collab"),
    ("quantize", "--method", "rq-kmeans|rq-vae|rq-dino"), ("quantize", "--modality", "text|image|collab"),
    ("embed", "--modality", "text|image"), ("import-embeddings", "--modality", "text|image|collab"),
]


@pytest.mark.parametrize("command, option, values", CHOICES, ids=[f"{c} {o}" for c, o, _ in CHOICES])
def test_a_choice_lists_its_values_in_help_and_completion(command, option, values):
    assert re.search(rf"{option} <{re.escape(values)}>", help_text(command))
    words = f"mscg {command} {option} "
    result = invoke(env={"_MSCG_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": "3"})
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == values.split("|")


@pytest.mark.parametrize("command", ["train", "collab", "evaluate", "recommend", "embed", "quantize"])
def test_device_help_names_its_values(command):
    text = " ".join(help_text(command).split("--device")[1].split())
    assert text.startswith("<device>") and "auto (GPU when present), cpu, cuda or cuda:N" in text


def test_a_value_outside_the_choice_is_one_error_line_naming_the_choices():
    result = invoke("train", "-d", "data", "--codes", "codes", "-o", "out", "--samples", "windows")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: Invalid value for '--samples': 'windows' is not one of 'prefix', 'window'. "
                     "(see `mscg train --help`)"]


# ---- train --help tells the truth about its defaults, and reads cleanly ----------------------------------------

def test_warmup_and_log_every_show_their_defaults():
    text = help_text("train")
    assert "--warmup-steps <N|auto>" in text
    assert "or auto (5% of the run's steps, at most 400 steps). [default: auto]" in text
    assert "when unset" not in text
    assert re.search(r"--log-every <int> Optimizer steps between training records.*?\[default: 50\]", text)
    assert "or auto (2% of the run's steps). [default: auto]" in help_text("collab")


@pytest.mark.parametrize("stage", STAGES)
def test_no_range_in_the_metavar(stage):
    text = help_text(stage)
    assert "int range" not in text and "<=x<=" not in text and "<str>" not in text.split("--device")[-1][:30]


def test_warmup_steps_auto_and_a_bad_value(tmp_path):
    from tests.conftest import synthetic_dataset
    from tests.helpers import TINY_SASREC

    data = synthetic_dataset(tmp_path)
    bad = invoke("collab", "-d", data, "-o", tmp_path / "e", *TINY_SASREC, "--warmup-steps", "soon")
    assert bad.exit_code == 2 and "--warmup-steps 'soon' must be a number of steps (0: none) or auto" in bad.stderr
    for value in ("auto", "0"):
        result = invoke("collab", "-d", data, "-o", tmp_path / value, *TINY_SASREC, "--warmup-steps", value)
        assert result.exit_code == 0, result.output
