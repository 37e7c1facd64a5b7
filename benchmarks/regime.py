"""`mscg train`'s warm-up rule on datasets of every size: the fixed 400-step warm-up (the regime before) against
a warm-up in proportion to the run (the default now: 5% of the run's steps, at most 400), validation first.

    python benchmarks/regime.py --codes ml-100k=WORK/codes ... --data ml-100k=DATA ... --work W --name NAME

Each (dataset, rule, seed) runs `mscg train` as a user would (on the dataset's codes, made once by the
pipeline's stages), with the rule's flags and `--epochs` from --epochs (train's default unless given), then
`mscg evaluate` (test split). The table gives the rule's warm-up in steps and as a share of the run, the steps of
the run, the validation NDCG@10 at the kept epoch (what the rule is chosen on) and test Recall/NDCG@10. Runs in
--work are kept (resumable: rerun the same command). Writes benchmarks/results/regime-NAME.{json,md} and the
BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import publish, stamp  # noqa: E402

RULES = {"fixed-400": ["--warmup-steps", "400"], "proportional": []}  # proportional: train's default now
DESCRIPTIONS = {"fixed-400": "400 warm-up steps whatever the run's length (the default before)",
                "proportional": "5% of the run's steps, at most 400 (`train`'s default now)"}


def run(data: Path, codes: Path, out: Path, seed: int, flags: list[str], device: str) -> dict:
    """One train run and its test evaluation (skipped when `out` holds a finished one)."""
    mscg = [sys.executable, "-m", "mscg"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if not (out / "eval.json").exists():
        subprocess.run([*mscg, "--quiet", "train", "-d", data, "--codes", codes, "-o", out / "model", "--seed",
                        str(seed), "--device", device, "--resume", *flags], check=True, env=env)
        subprocess.run([*mscg, "--quiet", "evaluate", out / "model", "-d", data, "-o", out / "eval.json", "--force",
                        "--device", device], check=True, env=env, stdout=subprocess.DEVNULL)
    meta = json.loads((out / "model" / "meta.json").read_text())
    training = meta["training"]
    steps_per_epoch = training["history"][0]["step"]  # the step count at the end of the first epoch
    total = steps_per_epoch * tomllib.loads((out / "model" / "train.toml").read_text())["epochs"]
    test = json.loads((out / "eval.json").read_text())
    return {"seed": seed, "steps_per_epoch": steps_per_epoch, "run_steps": total, "best_epoch": training["best_epoch"],
            "epochs_run": training["epochs_run"], "valid_ndcg@10": training["best_valid_metric"],
            "warnings": training.get("warnings", []), **{f"test_{k}": test[k] for k in ("recall@10", "ndcg@10")}}


def warmup_of(rule: str, total: int) -> int:
    """The warm-up a rule gives a run of `total` steps (mscg's own rule for the default)."""
    from mscg.training.defaults import GENERATOR_LOOP
    from mscg.training.loop import warmup_steps

    return min(400, total) if rule == "fixed-400" else warmup_steps(total, GENERATOR_LOOP)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, metavar="NAME=DIR", help="each dataset's folder")
    p.add_argument("--codes", nargs="+", required=True, metavar="NAME=DIR", help="each dataset's codes")
    p.add_argument("--name", required=True, help="results: benchmarks/results/regime-NAME.{json,md}")
    p.add_argument("--work", type=Path, required=True, help="the runs: WORK/DATASET/RULE-SEED/")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seeds-for", nargs="*", default=[], metavar="NAME=S,S",
                   help="other seeds for a dataset, e.g. ml-100k=0 (a slow dataset at fewer seeds)")
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument("--epochs", type=int, help="train's --epochs (default: train's own)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--note", default="", help="a reading of the numbers, added to the section")
    args = p.parse_args()
    data = dict(a.split("=", 1) for a in args.data)
    codes = dict(a.split("=", 1) for a in args.codes)
    seeds_for = {name: [int(s) for s in seeds.split(",")] for name, seeds in (a.split("=") for a in args.seeds_for)}
    budget = ["--epochs", str(args.epochs)] if args.epochs else []
    rows: dict[str, dict[str, list[dict]]] = {name: {rule: [] for rule in args.rules} for name in data}
    for seed in sorted({s for name in data for s in seeds_for.get(name, args.seeds)}):  # a seed of every run first
        for name in [n for n in data if seed in seeds_for.get(n, args.seeds)]:
            for rule in args.rules:
                row = run(Path(data[name]), Path(codes[name]), args.work / name / f"{rule}-{seed}", seed,
                          [*RULES[rule], *budget], args.device)
                row["warmup"] = warmup_of(rule, row["run_steps"])
                rows[name][rule].append(row)
                print(f"{name} {rule} seed {seed}: {row}", file=sys.stderr, flush=True)
    results = {"runs": rows, "seeds": args.seeds, "epochs": args.epochs, "stamp": stamp(args.device),
               "note": args.note}
    publish(f"regime-{args.name}", f"`train`'s warm-up in proportion to the run: {args.name}", results,
            markdown(results))


def mean_sd(values: list[float], digits: int = 4) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def markdown(results: dict) -> str:
    budget = f"`--epochs {results['epochs']}`" if results["epochs"] else "train's default budget"
    lines = [results["stamp"], "",
             f"`mscg train` at its defaults but the warm-up ({budget}), then `mscg evaluate` (test split, full "
             "ranking). Means ± sd over the seeds. Valid N@10: the validation NDCG@10 of the kept epoch (the "
             "rule is chosen on it); warned: runs whose schedule warning fired.", "",
             "| dataset | warm-up rule | seeds | run steps | warm-up | kept epoch | valid N@10 | test R@10 | "
             "test N@10 | warned |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rules in results["runs"].items():
        for rule, rs in rules.items():
            total, warmup = rs[0]["run_steps"], rs[0]["warmup"]
            lines.append(f"| {name} | {rule} | {len(rs)} | {total:,} | {warmup:,} ({warmup / total:.0%}) | "
                         f"{statistics.mean(r['best_epoch'] for r in rs):.0f} | "
                         f"{mean_sd([r['valid_ndcg@10'] for r in rs])} | "
                         f"{mean_sd([r['test_recall@10'] for r in rs])} | "
                         f"{mean_sd([r['test_ndcg@10'] for r in rs])} | {sum(bool(r['warnings']) for r in rs)} |")
    lines += ["", "Rules: " + "; ".join(f"**{r}** = {DESCRIPTIONS[r]}" for r in DESCRIPTIONS)]
    if results.get("note"):
        lines += ["", results["note"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
