"""`mscg compare`: its result onto stdout for pipes (`-o -`, the table then on stderr), --format (a table format
alone prints the table), and what it reads: bare paths named after their files, and its own output."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.helpers import assert_refused, invoke

A = {"users": 3, "recall@5": 0.25, "recall@10": 0.5, "ndcg@10": 0.3, "eval_seconds": 1.5, "bytes_per_item": 6}
B = {"users": 3, "recall@5": 0.125, "recall@10": 0.75, "ndcg@10": float("nan"), "eval_seconds": 2.0,
     "bytes_per_item": 256}


def entries(tmp_path) -> list[str]:
    (tmp_path / "a.json").write_text(json.dumps(A))
    (tmp_path / "b.json").write_text(json.dumps(B))
    return [f"gen={tmp_path / 'a.json'}", f"sasrec={tmp_path / 'b.json'}"]


def test_dash_writes_json_to_stdout_and_the_table_to_stderr(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("compare", *entries(tmp_path), "-o", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"gen": A, "sasrec": {**B, "ndcg@10": None}}  # stdout: only the data
    assert "R@10" in result.stderr and "gen" in result.stderr
    assert not (tmp_path / "-").exists()


def test_csv_to_stdout(tmp_path):
    result = invoke("compare", *entries(tmp_path), "-o", "-", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["model"] for r in rows] == ["gen", "sasrec"]
    assert list(rows[0]) == ["model", "recall@5", "recall@10", "ndcg@10", "users", "eval_seconds", "bytes_per_item"]
    assert float(rows[0]["recall@10"]) == 0.5 and rows[1]["ndcg@10"] == "" and rows[1]["users"] == "3"


def test_md_to_a_file(tmp_path):
    out = tmp_path / "table.md"
    result = invoke("compare", *entries(tmp_path), "-o", out, "--format", "md")
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "| model | R@5 | R@10 | N@10 | users | eval s | bytes/item |"
    assert lines[1].startswith("|---|---:|")
    assert lines[2] == "| gen | 0.2500 | 0.5000 | 0.3000 | 3 | 1.5 | 6 |"
    assert lines[3].split(" | ")[3] == "-"  # NaN
    assert "R@10" in result.stdout  # a file output: the table for people stays on stdout


def test_force_replaces_a_regular_file(tmp_path):
    out = tmp_path / "all.json"
    out.write_text("old")
    result = invoke("compare", *entries(tmp_path), "-o", out, "--force")
    assert result.exit_code == 0, result.output
    assert set(json.loads(out.read_text())) == {"gen", "sasrec"}


# ---- what compare reads: bare paths, its own output (one reader with `mscg plot`) --------------------------

def test_bare_paths_are_named_after_their_files(tmp_path):
    """`compare work/eval_a.json work/eval_b.json`: runs named eval_a, eval_b; a name taken twice (the same
    stem in two folders) gets -2, and NAME=PATH still names a run."""
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "eval_gen.json").write_text(json.dumps(A))
    (tmp_path / "eval_sasrec.json").write_text(json.dumps(B))
    result = invoke("compare", tmp_path / "x" / "eval_gen.json", tmp_path / "y" / "eval_gen.json",
                    tmp_path / "eval_sasrec.json", f"mine={tmp_path / 'eval_sasrec.json'}", "-o", "-")
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)) == ["eval_gen", "eval_gen-2", "eval_sasrec", "mine"]


def test_its_own_output_is_read_back(tmp_path):
    """A comparison given again: bare, its runs keep their names (merged with the others); NAME=PATH prefixes
    them (NAME/RUN). `mscg plot` reads the same files with the same names."""
    first = tmp_path / "metrics.json"
    result = invoke("compare", *entries(tmp_path), "-o", first)
    assert result.exit_code == 0, result.output
    (tmp_path / "eval_fused.json").write_text(json.dumps(A))
    result = invoke("compare", first, tmp_path / "eval_fused.json", "-o", "-")
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)) == ["gen", "sasrec", "eval_fused"]
    result = invoke("compare", f"all={first}", "-o", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"all/gen": A, "all/sasrec": {**B, "ndcg@10": None}}
    result = invoke("plot", first, tmp_path / "eval_fused.json", "-o", tmp_path / "all.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "all.png").read_bytes()[:4] == b"\x89PNG"


def test_two_runs_named_alike_on_purpose_are_refused(tmp_path):
    paths = entries(tmp_path)
    result = invoke("compare", paths[0], paths[0], "-o", tmp_path / "all.json")
    assert_refused(result, 2, "two runs are named 'gen'", output=tmp_path / "all.json")


@pytest.mark.parametrize("fmt", ["md", "csv"])
def test_a_table_format_without_o_prints_the_table(tmp_path, monkeypatch, fmt):
    """`--format md` (or csv) alone: the table is the data, on stdout; nothing is written to a file."""
    monkeypatch.chdir(tmp_path)
    result = invoke("compare", *entries(tmp_path), "--format", fmt)
    assert result.exit_code == 0, result.output
    if fmt == "md":
        assert result.stdout.splitlines()[0] == "| model | R@5 | R@10 | N@10 | users | eval s | bytes/item |"
    else:
        assert [r["model"] for r in csv.DictReader(io.StringIO(result.stdout))] == ["gen", "sasrec"]
    assert "R@10" in result.stderr  # the table for people, as with -o -
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
