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
