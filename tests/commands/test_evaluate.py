"""`mscg evaluate`: its result onto stdout for pipes (`-o -`, the tables then on stderr), and --format (a table
format without -o prints the table on stdout)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.helpers import Pipeline, build_tiny_pipeline, invoke, one_thread  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Pipeline:
    return build_tiny_pipeline(tmp_path_factory.mktemp("evaluate"), generator=False)


def test_dash_writes_the_metrics_to_stdout_only(pipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("evaluate", pipe.sasrec, "-d", pipe.data, "-o", "-", "--by-popularity")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)  # stdout holds the JSON and nothing else
    assert metrics["users"] > 0 and "recall@10" in metrics and "provenance" in metrics
    assert "R@10" in result.stderr and "by target popularity" in result.stderr
    assert "most recent item" in result.stderr
    last = metrics["by_last_item_popularity"]
    assert [g["group"] for g in last] == ["popular", "middle", "rare"]
    assert sum(g["users"] for g in last) == metrics["users"]
    assert last[0]["last_item_train_count"][0] >= last[-1]["last_item_train_count"][1]
    assert not (tmp_path / "-").exists()


def test_csv_to_stdout_and_md_to_a_file(pipe, tmp_path):
    result = invoke("evaluate", pipe.sasrec, "-d", pipe.data, "-o", "-", "--format", "csv", "--ks", "5,10")
    assert result.exit_code == 0, result.output
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert row["model"] == "sasrec" and 0 <= float(row["ndcg@10"]) <= 1 and int(row["users"]) > 0
    out = tmp_path / "eval.md"
    result = invoke("evaluate", pipe.sasrec, "-d", pipe.data, "-o", out, "--format", "md")
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("| model | R@5 | R@10 | N@5 | N@10 |") and lines[2].startswith("| sasrec | ")


@pytest.mark.parametrize("fmt", ["md", "csv"])
def test_a_table_format_without_o_prints_the_table(pipe, tmp_path, monkeypatch, fmt):
    """`evaluate --format md` (or csv) alone prints the table on stdout, as `-o -` does; no file is written."""
    monkeypatch.chdir(tmp_path)
    result = invoke("evaluate", pipe.sasrec, "-d", pipe.data, "--format", fmt, "--device", "cpu")
    assert result.exit_code == 0, result.output
    if fmt == "md":
        lines = result.stdout.splitlines()
        assert lines[0].startswith("| model | R@5 | R@10 |") and lines[2].startswith("| sasrec | ")
    else:
        (row,) = csv.DictReader(io.StringIO(result.stdout))
        assert row["model"] == "sasrec" and int(row["users"]) > 0
    assert "R@10" in result.stderr and list(tmp_path.iterdir()) == []
