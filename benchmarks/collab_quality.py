"""`mscg collab` end to end, sampled softmax against the full softmax, windows padded or packed: seconds per
epoch, epochs to the early stop, validation and test metrics, over seeds.

    python benchmarks/collab_quality.py --data ../shared/data/amazon-toys --name amazon-toys --work runs/cq

Each (variant, seed) runs `mscg collab` as a user would, with the variant's loss flags (sampled: 1,024 shared
negatives, packed windows; full: the full softmax on padded windows, collab before large-catalogue support;
full-packed: the full softmax on packed windows), then `mscg evaluate` on the test split. The table marks the
variant that collab's defaults choose for the catalogue. Runs already in --work are kept (resumable: rerun the
same command). Writes benchmarks/results/collab-quality-NAME.{json,md} and the BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import publish, stamp  # noqa: E402

VARIANTS = {"sampled": ["--negatives", "1024", "--pack"], "full": ["--negatives", "0", "--no-pack"],
            "full-packed": ["--negatives", "0", "--pack"]}


def run(data: Path, out: Path, seed: int, extra: list[str], device: str) -> dict:
    """One collab run and its test evaluation (skipped when `out` holds a finished one)."""
    mscg = [sys.executable, "-m", "mscg"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if not (out / "eval.json").exists():
        subprocess.run([*mscg, "--quiet", "collab", "-d", data, "-o", out / "emb", "--model-out", out / "model",
                        "--seed", str(seed), "--device", device, "--force", *extra], check=True, env=env)
        subprocess.run([*mscg, "--quiet", "evaluate", out / "model", "-d", data, "-o", out / "eval.json", "--force",
                        "--device", device], check=True, env=env, stdout=subprocess.DEVNULL)
    training = json.loads((out / "model" / "meta.json").read_text())["training"]
    config = json.loads((out / "model" / "config.json").read_text())
    test = json.loads((out / "eval.json").read_text())
    return {"seed": seed, "seconds": training["seconds"], "epochs_run": training["epochs_run"],
            "best_epoch": training["best_epoch"], "seconds_per_epoch": training["seconds"] / training["epochs_run"],
            "valid_ndcg@10": training["best_valid_metric"], "negatives": config.get("negatives"),
            "pack": config.get("pack"), **{f"test_{k}": test[k] for k in ("recall@10", "ndcg@10")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder with items.jsonl + interactions.jsonl")
    p.add_argument("--name", required=True, help="results: benchmarks/results/collab-quality-NAME.{json,md}")
    p.add_argument("--work", type=Path, required=True, help="the runs: WORK/VARIANT-SEED/")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds-for", nargs="*", default=[], metavar="VARIANT=S,S",
                   help="other seeds for a variant, e.g. full-packed=0 (a slow variant at fewer seeds)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--note", default="", help="a reading of the numbers, added to the section")
    args = p.parse_args()
    seeds_for = {v: [int(s) for s in seeds.split(",")] for v, seeds in (a.split("=") for a in args.seeds_for)}
    rows = {}
    for variant in args.variants:
        rows[variant] = []
        for seed in seeds_for.get(variant, args.seeds):
            rows[variant].append(run(args.data, args.work / f"{variant}-{seed}", seed, VARIANTS[variant],
                                     args.device))
            print(f"{variant} seed {seed}: {rows[variant][-1]}", file=sys.stderr, flush=True)
    from mscg.data.items import load_catalogue
    from mscg.data.split import dataset_files
    from mscg.models.sasrec_config import SASRecConfig

    n_items = len(load_catalogue(dataset_files(args.data)[0]))
    default = SASRecConfig(n_items=0).resolved(n_items)
    results = {"data": str(args.data), "items": n_items, "seeds": args.seeds, "runs": rows,
               "default": {"negatives": default.negatives, "pack": default.pack}, "stamp": stamp(args.device),
               "note": args.note}
    publish(f"collab-quality-{args.name}", f"`collab` end to end, default loss vs full softmax: {args.name}",
            results, markdown(results))


def mean_sd(values: list[float], digits: int = 4) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def markdown(results: dict) -> str:
    runs = results["runs"]
    base = statistics.mean(r["seconds_per_epoch"] for r in runs["full"]) if "full" in runs else None
    lines = [results["stamp"], "",
             "`mscg collab` with each variant's loss flags, early stopping on validation NDCG@10 (a seeded sample "
             "of 10,000 users), then `mscg evaluate` (test split, full ranking). Means ± sd over the seeds; seconds "
             "of training per epoch as meta.json records them (validation included, start-up not); the speed-up is "
             "against the full softmax on padded windows.", "",
             "| variant | loss | seeds | s / epoch | epoch speed-up | epochs run | best epoch | valid N@10 | "
             "test R@10 | test N@10 |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for variant, rs in runs.items():
        loss = (f"{rs[0]['negatives']:,} sampled" if rs[0]["negatives"] else "full softmax") + \
            (", packed" if rs[0]["pack"] else ", padded")
        if {"negatives": rs[0]["negatives"], "pack": rs[0]["pack"]} == results["default"]:
            loss += f" (collab's default at {results['items']:,} items)"
        per_epoch = statistics.mean(r["seconds_per_epoch"] for r in rs)
        speedup = f"{base / per_epoch:.1f}x" if base else "-"
        lines.append(f"| {variant} | {loss} | {len(rs)} | {per_epoch:.1f} | {speedup} | "
                     f"{statistics.mean(r['epochs_run'] for r in rs):.0f} | "
                     f"{statistics.mean(r['best_epoch'] for r in rs):.0f} | "
                     f"{mean_sd([r['valid_ndcg@10'] for r in rs])} | "
                     f"{mean_sd([r['test_recall@10'] for r in rs])} | {mean_sd([r['test_ndcg@10'] for r in rs])} |")
    if results.get("note"):
        lines += ["", results["note"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
