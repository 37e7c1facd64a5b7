"""`mscg compare`: its result onto stdout for pipes (`-o -`, the table then on stderr), and --format."""

from __future__ import annotations

import csv
import io
import json

from tests.helpers import invoke

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
