r"""Did a change make the pipeline slower? examples/pipeline.sh of two revisions, same data, same machine.

    python benchmarks/before_after.py --data runs/data/ml-100k --work runs/before-after --before 3ed4c3a \
        --name ml-100k --gen-epochs 2 --sasrec-epochs 10

Each revision is checked out with `git worktree` under WORK and runs its own examples/pipeline.sh with its
own package (`python -m mscg` from that tree), with the same knobs (seed, epochs, beam). Epochs are capped
on both sides so that the times compare the same amount of work (early stopping could otherwise stop the
two at different epochs). The runs alternate (before, after, before, after, ...) so that drift in the
machine's load hits both alike; the table gives each stage's median wall time and the ratio after/before.

Writes benchmarks/results/before-after-NAME.json and the BENCHMARKS.md section `before-after-NAME`. A run
whose metrics exist in WORK is reused, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import stamp, write_section  # noqa: E402


def checkout(revision: str, work: Path) -> tuple[str, Path]:
    sha = subprocess.run(["git", "rev-parse", "--short", revision], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    tree = work / f"tree-{sha}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT, check=True,
                       capture_output=True)
    return sha, tree


def run_pipeline(tree: Path, data: Path, out: Path, knobs: dict[str, str]) -> dict[str, float]:
    env = {**os.environ, **knobs, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tree), "MSCG": f"{sys.executable} -m mscg"}
    with open(out.parent / f"{out.name}.log", "w") as log:
        subprocess.run([str(tree / "examples" / "pipeline.sh"), str(data.resolve()), str(out.resolve())], cwd=tree,
                       env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
    return json.loads((out / "stage_seconds.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder with items.jsonl + interactions.jsonl")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--before", required=True, help="git revision to compare against")
    p.add_argument("--after", default="HEAD", help="git revision measured (default: HEAD)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each revision (alternating)")
    p.add_argument("--gen-epochs", type=int, default=2)
    p.add_argument("--sasrec-epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    knobs = {"SEED": str(args.seed), "DEVICE": args.device, "GEN_EPOCHS": str(args.gen_epochs),
             "SASREC_EPOCHS": str(args.sasrec_epochs)}
    trees = {side: checkout(rev, args.work) for side, rev in (("before", args.before), ("after", args.after))}
    times: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    metrics: dict[str, dict] = {}
    for r in range(args.repeats):
        for side, (sha, tree) in trees.items():
            out = args.work / f"{side}-{sha}-{r}"
            if (out / "metrics.json").exists():  # a finished run of an interrupted benchmark
                times[side].append(json.loads((out / "stage_seconds.json").read_text()))
            else:
                print(f"{side} ({sha}), run {r + 1}/{args.repeats}", flush=True)
                times[side].append(run_pipeline(tree, args.data, out, knobs))
            metrics[side] = json.loads((out / "metrics.json").read_text())

    stages = list(dict.fromkeys([*times["before"][0], *times["after"][0]]))
    median = {side: {s: statistics.median(t[s] for t in runs if s in t) for s in stages if any(s in t for t in runs)}
              for side, runs in times.items()}
    for stage_times in median.values():
        stage_times["total"] = sum(stage_times.values())
    lines = [f"### Before/after: {args.name}", "", stamp(args.device), "",
             (f"examples/pipeline.sh of each revision, `GEN_EPOCHS={args.gen_epochs} "
              f"SASREC_EPOCHS={args.sasrec_epochs} SEED={args.seed}`, {args.repeats} run(s) each, alternating; "
              "median wall seconds per stage."), "",
             f"| stage | before ({trees['before'][0]}) | after ({trees['after'][0]}) | after / before |",
             "|---|---|---|---|"]
    for s in [*stages, "total"]:
        b, a = median["before"].get(s), median["after"].get(s)
        ratio = f"{a / b:.2f}" if a and b else "—"
        lines.append(f"| {s} | {_cell(b)} | {_cell(a)} | {ratio} |")
    lines += ["", "Test N@10 of the capped runs (not a quality benchmark: epochs are capped): " + "; ".join(
        f"{side}: " + ", ".join(f"{model} {m['ndcg@10']:.4f}" for model, m in metrics[side].items())
        for side in ("before", "after")), ""]
    result = {"before": trees["before"][0], "after": trees["after"][0], "knobs": knobs, "runs": times,
              "median": median, "metrics": metrics}
    (ROOT / "benchmarks" / "results" / f"before-after-{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_section(f"before-after-{args.name}", "\n".join(lines))
    print("\n".join(lines))


def _cell(seconds: float | None) -> str:
    return f"{seconds:.1f}" if seconds is not None else "—"


if __name__ == "__main__":
    main()
