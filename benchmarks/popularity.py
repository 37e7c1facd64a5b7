"""Where the models win and lose: metrics by target popularity, on the validation and test splits.

    python benchmarks/popularity.py --data data/scientific --work runs/ablations/scientific --name scientific \
        --seeds 0 1 2 --models sasrec mscgrec

Reads the trained models of an ablations.py work folder (WORK/seedS/MODEL) and runs
`mscg evaluate --by-popularity` on the validation and the test split of each. Users fall into three
equal groups by how often their target occurs in training (popular, middle, rare). Reported per model
and split, as the mean over seeds: NDCG@10 overall and per group, the mean training popularity of the
targets and of the recommended top-10 items, and the share of the top-10 already in the user's history.
A second table groups the same users by how often their history's most recent item occurs in training.

With --exclude-history the rankings leave out the items of the user's history (pick another NAME).

Writes benchmarks/results/popularity-NAME.{json,md} and the BENCHMARKS.md section popularity-NAME. An
evaluation whose output exists in WORK is reused.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablations import run  # noqa: E402
from report import machine, publish, work_folder_arguments  # noqa: E402

GROUPS = ("popular", "middle", "rare")
COLUMNS = ("N@10", "N@10 popular", "N@10 middle", "N@10 rare", "target pop.", "top-10 pop.", "top-10 in history",
           "top-10 filled", "N@10 last popular", "N@10 last middle", "N@10 last rare")


def row(metrics: dict) -> list[float]:
    """One evaluation -> the values of COLUMNS."""
    groups = {g["group"]: g["ndcg@10"] for g in metrics["by_target_popularity"]}
    last = {g["group"]: g["ndcg@10"] for g in metrics["by_last_item_popularity"]}
    return [metrics["ndcg@10"], *(groups[g] for g in GROUPS), metrics["target_train_count_mean"],
            metrics["recommended_train_count@10"], metrics["history_share@10"], metrics.get("list_fill@10", 1.0),
            *(last[g] for g in GROUPS)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    work_folder_arguments(p, "popularity")
    p.add_argument("--exclude-history", action="store_true",
                   help="rank only items outside the user's history (`mscg evaluate --exclude-history`)")
    p.add_argument("--beam-size", type=int, help="beam of the generators (default: as trained)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    mscg = [sys.executable, "-m", "mscg"]
    runs: dict = {}
    for seed in args.seeds:
        for model in args.models:
            for split in ("valid", "test"):
                suffix = "_unseen" if args.exclude_history else ""
                suffix += f"_b{args.beam_size}" if args.beam_size else ""
                out = args.work / f"seed{seed}" / f"popularity_{model}_{split}{suffix}.json"
                if not out.exists():
                    print(f"[{datetime.datetime.now():%H:%M:%S}] seed {seed}: {model} {split}", flush=True)
                    run([*mscg, "evaluate", args.work / f"seed{seed}" / model, "-d", args.data, "--split", split,
                         "--by-popularity", "-o", out, "--device", args.device,
                         *(["--exclude-history"] if args.exclude_history else []),
                         *(["--beam-size", str(args.beam_size)] if args.beam_size else [])],
                        args.work / "popularity.log")
                runs.setdefault(model, {}).setdefault(split, {})[str(seed)] = row(json.loads(out.read_text()))
    results = {"columns": COLUMNS, "runs": runs, "exclude_history": args.exclude_history,
               "machine": machine(args.device), "date": datetime.date.today().isoformat(),
               "command": shlex.join([Path(sys.executable).name, *sys.argv])}
    publish(f"popularity-{args.name}", f"Metrics by target popularity: {args.name}", results, markdown(results))


def markdown(results: dict) -> str:
    seeds = sorted({s for splits in results["runs"].values() for by_seed in splits.values() for s in by_seed})
    columns = results["columns"]
    by_target, by_last_item = columns[:8], columns[8:]  # results made before the last-item columns have none
    lines = [f"Mean over seeds {', '.join(seeds)}; {results['machine']}; {results['date']}. Users in three equal "
             "groups by their target's occurrences in training; pop. = mean occurrences in training (of the "
             "targets, and of the recommended top-10 items)."
             + (" History items excluded from the rankings." if results.get("exclude_history") else ""), "",
             "| model | split | " + " | ".join(by_target) + " |", "|---|---|" + "---|" * len(by_target)]
    means = {(model, split): [statistics.mean(v) for v in zip(*splits[split].values())]  # per column, over seeds
             for model, splits in results["runs"].items() for split in ("valid", "test")}
    for (model, split), cells in means.items():
        text = [f"{c:.4f}" for c in cells[:4]] + [f"{cells[4]:.1f}", f"{cells[5]:.1f}", f"{cells[6]:.1%}",
                                                  f"{cells[7]:.1%}"]
        lines.append(f"| {model} | {split} | " + " | ".join(text) + " |")
    if by_last_item:
        lines += ["", ("The same users in three equal groups by how often their history's most recent item occurs "
                       "in training (on the test split that item is the validation target):"), "",
                  "| model | split | " + " | ".join(by_last_item) + " |", "|---|---|" + "---|" * len(by_last_item)]
        for (model, split), cells in means.items():
            lines.append(f"| {model} | {split} | " + " | ".join(f"{c:.4f}" for c in cells[8:]) + " |")
    lines += ["", f"Command: `{results['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
