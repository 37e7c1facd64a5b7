"""How much a model gains from the newest item of a history: validation and test against "test from the training
sequence".

    python benchmarks/newest_item.py --data data/scientific --work runs/ablations/scientific --name scientific \
        --seeds 0 1 2 --models sasrec mscgrec

Reads the trained models of an ablations.py work folder (WORK/seedS/MODEL). Per model, NDCG@10 of every user on
three tasks:

- valid: the validation target from the training sequence (the input is exactly a sequence training read);
- test: the test target from the training sequence plus the validation item (the paper's protocol);
- skip: the test target from the training sequence alone (the validation item left out of the history).

test - skip is what the newest item adds: an item the model never met in that user's context. A model that reads
the transition from the most recent item gains much; one that leans on having seen the user's sequence itself
gains little, and its validation score (on inputs it trained on) overstates its test score. Reported as the mean
over seeds; writes benchmarks/results/newest-item-NAME.{json,md} and the BENCHMARKS.md section newest-item-NAME.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, publish, work_folder_arguments  # noqa: E402

from mscg.data.split import load_dataset  # noqa: E402
from mscg.metrics import means, metric_sums, ranks_from_lists  # noqa: E402
from mscg import recommenders  # noqa: E402

TASKS = ("valid", "test", "skip")


def task_pairs(split, task: str) -> tuple[list, torch.Tensor]:
    """(histories, targets (U,)) of every user for one of TASKS."""
    users = range(len(split))
    history_split = "test" if task == "test" else "valid"
    target_split = "valid" if task == "valid" else "test"
    return ([split.history(u, history_split) for u in users],
            torch.tensor([split.target(u, target_split) for u in users]))


def ndcg10(recommender, histories: list, targets: torch.Tensor, batch: int = 256) -> float:
    ranks = torch.cat([ranks_from_lists(recommender.top_k(histories[s:s + batch], 10)[0], targets[s:s + batch])
                       for s in range(0, len(histories), batch)])
    return means(metric_sums(ranks, ks=(10,)))["ndcg@10"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    work_folder_arguments(p, "newest-item")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    split = load_dataset(args.data).split
    pairs = {task: task_pairs(split, task) for task in TASKS}
    runs: dict = {}
    for seed in args.seeds:
        for model in args.models:
            print(f"[{datetime.datetime.now():%H:%M:%S}] seed {seed}: {model}", flush=True)
            recommender = recommenders.load(args.work / f"seed{seed}" / model, torch.device(args.device))
            runs.setdefault(model, {})[str(seed)] = {task: round(ndcg10(recommender, *pairs[task]), 6)
                                                     for task in TASKS}
    results = {"runs": runs, "users": len(split), "machine": machine(args.device),
               "date": datetime.date.today().isoformat(), "command": shlex.join([Path(sys.executable).name, *sys.argv])}
    publish(f"newest-item-{args.name}", f"What the newest history item adds: {args.name}", results, markdown(results))


def markdown(results: dict) -> str:
    seeds = sorted({s for by_seed in results["runs"].values() for s in by_seed}, key=int)
    lines = [f"NDCG@10 of all {results['users']:,} users, mean ± sd over seeds {', '.join(seeds)}; "
             f"{results['machine']}; {results['date']}. valid: the validation target from the training sequence; "
             "test: the test target from the training sequence + the validation item; skip: the test target from "
             "the training sequence alone; test − skip: what the newest item adds.", "",
             "| model | valid | test | skip | test − skip | valid − test |", "|---|---|---|---|---|---|"]
    for model, by_seed in results["runs"].items():
        columns = {task: [r[task] for r in by_seed.values()] for task in TASKS}
        columns["gain"] = [r["test"] - r["skip"] for r in by_seed.values()]
        columns["gap"] = [r["valid"] - r["test"] for r in by_seed.values()]
        cells = [f"{statistics.mean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0:.4f}" for v in columns.values()]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{results['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
