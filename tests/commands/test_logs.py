"""What a run says when nobody watches: `mscg --quiet`, a log (stderr not a terminal), the final line, and
examples/pipeline.sh's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mscg import console
from mscg.training.loop import Event
from tests.conftest import synthetic_dataset
from tests.helpers import TINY_SASREC, invoke, ok, one_thread  # noqa: F401  (one_thread: a fixture)

REPO = Path(__file__).resolve().parents[2]


def test_quiet_leaves_only_warnings_and_errors(tmp_path):
    data = synthetic_dataset(tmp_path)
    result = invoke("--quiet", "collab", "-d", data, "-o", tmp_path / "emb", *TINY_SASREC, "--epochs", "2")
    assert result.exit_code == 0, result.output
    # a run this short is warned about (schedule_warnings), and that is all a quiet run says
    assert result.stderr.startswith("warning: collab (SASRec): the run has ") and result.stderr.count("\n") == 1
    assert (tmp_path / "emb" / "meta.json").is_file()
    refused = invoke("--quiet", "collab", "-d", data, "-o", tmp_path / "emb", *TINY_SASREC)  # exists: no --force
    assert refused.exit_code != 0 and refused.stderr.startswith("error: ")
    loud = invoke("collab", "-d", data, "-o", tmp_path / "emb", *TINY_SASREC, "--force")  # the next run talks again
    assert loud.exit_code == 0 and "wrote" in loud.stderr


def test_a_log_gets_the_final_line_with_two_metrics_and_only_better_validations(tmp_path):
    data = synthetic_dataset(tmp_path)
    result = invoke("collab", "-d", data, "-o", tmp_path / "emb", *TINY_SASREC, "--epochs", "6", "--patience", "6")
    assert result.exit_code == 0, result.output
    validations = [line for line in result.stderr.splitlines() if " valid ndcg@10 " in line]
    assert validations and all(line.endswith(" *") for line in validations), result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"wrote {tmp_path / 'emb'}: best epoch ")
    assert last.count("@") == 2 and "ndcg@10 " in last and "recall@10 " in last, last


def _epochs(metrics: list[float]):
    yield Event("start", total_steps=len(metrics))
    best = -1.0
    for epoch, metric in enumerate(metrics, 1):
        yield Event("step", epoch=epoch - 1, step=epoch, total_steps=len(metrics), loss=1.0)
        yield Event("epoch", epoch=epoch, metric=metric, is_best=metric > best)
        best = max(best, metric)
    return "done"


def test_render_in_a_log_prints_a_validation_when_better_or_once_a_minute(capsys, monkeypatch):
    metrics = [0.10, 0.05, 0.20, 0.15, 0.12]
    assert console.render(_epochs(metrics), "fit") == "done"
    lines = [line for line in capsys.readouterr().err.splitlines() if "valid" in line]
    assert lines == ["fit: epoch 1 valid ndcg@10 0.1000 *", "fit: epoch 3 valid ndcg@10 0.2000 *"]
    clock = iter(range(0, 10_000, 61))  # a minute passes between any two looks at the clock
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    console.render(_epochs(metrics), "fit")
    assert sum(" valid " in line for line in capsys.readouterr().err.splitlines()) == len(metrics)


STUB = '''
import json, os, sys
args = sys.argv[1:]
command = next(a for a in args if not a.startswith("-"))
with open(os.environ["STUB_LOG"], "a") as log:  # every command the script ran, a line each
    log.write(" ".join(args) + "\\n")
if command == "compare":  # the real one
    os.execv(sys.executable, [sys.executable, "-m", "mscg", *args])
if command == "evaluate":  # as `mscg evaluate -o FILE` talks: a table on stdout, "wrote" on stderr
    out = args[args.index("-o") + 1]
    model = os.path.basename(args[args.index("evaluate") + 1])
    valid = "--split" in args and args[args.index("--split") + 1] == "valid"
    ndcg = 0.3 if valid and model == "fused" else 0.25  # validation prefers the fused model
    open(out, "w").write(json.dumps({"users": 3, "recall@10": 0.5, "ndcg@10": ndcg}))
    print("TABLE OF ONE EVALUATION")
    print(f"wrote {out}", file=sys.stderr)
'''


def test_pipeline_sh_prints_one_table_and_one_wrote_metrics_line(tmp_path):
    """The script's own output, its stages stubbed (every stage but compare: tests/test_real_data.py runs them)."""
    data = synthetic_dataset(tmp_path)
    (tmp_path / "stub.py").write_text(STUB)
    env = {**os.environ, "MSCG": f"{sys.executable} {tmp_path / 'stub.py'}", "DEVICE": "cpu",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "STUB_LOG": str(tmp_path / "commands.log")}
    result = subprocess.run(["bash", str(REPO / "examples" / "pipeline.sh"), str(data), str(tmp_path / "work")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    quantize_collab = [c for c in (tmp_path / "commands.log").read_text().splitlines() if "--modality collab" in c]
    assert len(quantize_collab) == 1 and "/emb_collab_text_started " in quantize_collab[0]  # the default codes
    plain = subprocess.run(["bash", str(REPO / "examples" / "pipeline.sh"), str(data), str(tmp_path / "plain")],
                           env={**env, "COLLAB_CODES": "plain"}, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and f"--embeddings {tmp_path / 'work' / 'emb_collab'} " in \
        (tmp_path / "commands.log").read_text().replace(str(tmp_path / "plain"), str(tmp_path / "work"))
    bad = subprocess.run(["bash", str(REPO / "examples" / "pipeline.sh"), str(data), str(tmp_path / "bad")],
                         env={**env, "COLLAB_CODES": "sampled"}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr == "error: COLLAB_CODES=sampled must be text-started or plain\n"
    assert "TABLE OF ONE EVALUATION" not in result.stdout
    assert result.stdout.count("test split") == 1 and "mscgrec" in result.stdout and "fused" in result.stdout
    wrote = [line for line in result.stderr.splitlines() if line.startswith("wrote") and "metrics.json" in line]
    assert len(wrote) == 1, result.stderr
    models = {"sasrec", "sasrec_text_started", "mscgrec", "fused", "fused_text_started"}
    assert set(json.loads((tmp_path / "work" / "metrics.json").read_text())) == models
    preferred = json.loads((tmp_path / "work" / "preferred.json").read_text())
    assert preferred["recommender"] == "fused" and set(preferred["valid"]) == models
    assert preferred["test"] == {"recall@10": 0.5, "ndcg@10": 0.25}  # the test split reports, it does not choose
    assert ("validation prefers fused (valid NDCG@10 0.3000; sasrec 0.2500, sasrec_text_started 0.2500, mscgrec "
            "0.2500, fused_text_started 0.2500): test Recall@10 0.5000, NDCG@10 0.2500") in result.stderr
