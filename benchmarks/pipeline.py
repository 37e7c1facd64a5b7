"""The quickstart as a benchmark: examples/pipeline.sh on a dataset, its metrics and stage wall times.

    python benchmarks/pipeline.py --data runs/quickstart/data --work runs/bench-pipeline --name ml-100k

Runs the pipeline exactly as a user would (default settings), then writes the comparison table and
the wall time of each stage into BENCHMARKS.md (section pipeline-NAME).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import stamp, write_section  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--report-only", action="store_true", help="rewrite the section from an earlier run in --work")
    args = p.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DEVICE": args.device,
           "MSCG": f"{sys.executable} -m mscg"}
    started = time.perf_counter()
    if not args.report_only:
        subprocess.run([str(ROOT / "examples" / "pipeline.sh"), str(args.data), str(args.work)], check=True, env=env)
    total = time.perf_counter() - started
    metrics = json.loads((args.work / "metrics.json").read_text())
    seconds = json.loads((args.work / "stage_seconds.json").read_text())
    peaks_file = args.work / "stage_peak_mib.json"  # pipeline.sh writes it since the large-catalogue work
    peaks = json.loads(peaks_file.read_text()) if peaks_file.exists() else {}
    if args.report_only:
        total = sum(seconds.values())
    lines = [f"### Pipeline: {args.name} (examples/pipeline.sh, default settings)", "", stamp(args.device), "",
             "Test split, full ranking over all items:", "",
             "| model | R@5 | R@10 | N@5 | N@10 | users | eval s |", "|---|---|---|---|---|---|---|"]
    for name, m in metrics.items():
        lines.append(f"| {name} | {m['recall@5']:.4f} | {m['recall@10']:.4f} | {m['ndcg@5']:.4f} | "
                     f"{m['ndcg@10']:.4f} | {m['users']:,} | {m['eval_seconds']:.1f} |")
    preferred_file = args.work / "preferred.json"  # pipeline.sh writes it since the Amazon benchmark work
    if preferred_file.exists():
        preferred = json.loads(preferred_file.read_text())
        valid = ", ".join(f"{name} {v:.4f}" for name, v in preferred["valid"].items())
        lines += ["", f"Validation prefers **{preferred['recommender']}** (validation NDCG@10, all users: {valid})."]
    lines += ["", "Wall time (seconds, including process start-up) and peak resident memory of each stage:", "",
              "| stage | seconds | peak MiB |", "|---|---|---|"]
    lines += [f"| {stage} | {s:.1f} | {peaks[stage]:,} |" if stage in peaks else f"| {stage} | {s:.1f} | - |"
              for stage, s in seconds.items()]
    lines += [f"| **total** | **{total:.1f}** ({total / 60:.1f} min) | **{max(peaks.values(), default=0):,}** |", ""]
    throughput = []
    for stage, model in (("collab (SASRec)", "sasrec"), ("train (generator)", "mscgrec")):
        meta = args.work / model / "meta.json"
        if meta.exists():
            training = json.loads(meta.read_text()).get("training", {})
            throughput.append(f"| {stage} | {training.get('samples_per_second', 0):,.0f} | "
                              f"{training.get('epochs_run', '-')} | {training.get('best_epoch', '-')} |")
    if throughput:
        lines += ["Training throughput (training samples per second of wall time, per-epoch validation included):", "",
                  "| stage | samples/s | epochs run | best epoch |", "|---|---|---|---|", *throughput, ""]
    write_section(f"pipeline-{args.name}", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
