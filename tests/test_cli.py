"""The `mscg` command itself: help texts people can read, flags that take no value, shell completion."""

from __future__ import annotations

import re

import pytest

from tests.helpers import invoke

STAGES = ["prepare", "embed", "import-embeddings", "collab", "quantize", "assign-codes", "train", "evaluate",
          "recommend", "compare"]


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
