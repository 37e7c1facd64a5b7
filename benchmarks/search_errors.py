"""Why a generator misses a target: the beam search (search error) or the model's own scores (model error).

    python benchmarks/search_errors.py --data data/scientific --work runs/ablations/scientific --name scientific \
        --seeds 0 1 2 --models mscgrec tiger

Reads the trained generators of an ablations.py work folder (WORK/seedS/MODEL). For every user: the top 10 of the
model's trie-constrained beam search (its trained beam size), and the model's exact log-probability of the target
item (teacher-forced, normalised as the search normalises). A target outside the top 10 is a search error when it
scores above the 10th item the search returned (a wider search would have ranked it higher), else a model error
(the model itself ranks 10 items above it). SASRec models (exact rankings, so no search errors) give the same
columns from their softmax over the catalogue, for comparison. Per third of the users by their target's training
count, on the validation and the test split; means over seeds. Writes benchmarks/results/search-errors-NAME.
{json,md} and the BENCHMARKS.md section search-errors-NAME.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, publish, work_folder_arguments  # noqa: E402

from mscg.data.split import load_dataset  # noqa: E402
from mscg.popularity import GROUPS, popularity_groups, train_counts  # noqa: E402
from mscg import recommenders  # noqa: E402

SPLITS = ("valid", "test")


@torch.no_grad()
def target_log_probs(recommender, histories: list, targets: torch.Tensor) -> torch.Tensor:
    """(B,) the generator's log-probability of each target item's codes, normalised per level as in its search."""
    device = recommender.device
    codes = recommender.target_codes[targets].long().to(device)  # (B, D) local codes
    allowed = recommender.trie.allowed_along(targets.to(device))  # (B, D, W)
    return recommender.model.item_log_probs(recommender.history_tokens(histories).to(device), codes, allowed).cpu()


def split_errors(recommender, split, counts: np.ndarray, which: str, batch: int = 256) -> dict:
    """{third: {"top10", "search_error", "model_error", "target_logp", "tenth_logp"}} over every user."""
    users = range(len(split))
    targets = torch.tensor([split.target(u, which) for u in users])
    hit, target_logp, tenth_logp = [], [], []
    for start in range(0, len(users), batch):
        histories = [split.history(u, which) for u in users[start:start + batch]]
        chunk = targets[start:start + batch]
        if recommender.kind == "sasrec":  # an exact ranking over the catalogue: no search, so no search error
            logp = recommender.scores(histories).log_softmax(dim=1).cpu()  # (B, N)
            top = logp.topk(10, dim=1)
            items, scores = top.indices, top.values
            target_logp.append(logp.gather(1, chunk[:, None]).squeeze(1))
        else:
            items, scores = recommender.search(histories, max(recommender.beam_size, 10))
            target_logp.append(target_log_probs(recommender, histories, chunk))
        hit.append((items[:, :10] == chunk[:, None]).any(dim=1))
        tenth_logp.append(scores[:, 9])
    hit, target_logp, tenth_logp = torch.cat(hit), torch.cat(target_logp), torch.cat(tenth_logp)
    out = {}
    for third, members in popularity_groups(counts[targets.numpy()]):  # as `evaluate --by-popularity` groups them
        rows = torch.from_numpy(members)
        missed_better = ~hit[rows] & (target_logp[rows] > tenth_logp[rows])
        out[third] = {"top10": float(hit[rows].float().mean()), "search_error": float(missed_better.float().mean()),
                      "model_error": float((~hit[rows] & ~missed_better).float().mean()),
                      "target_logp": float(target_logp[rows].median()), "tenth_logp": float(tenth_logp[rows].median())}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    work_folder_arguments(p, "search-errors")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    dataset = load_dataset(args.data)
    counts = train_counts(dataset.split, len(dataset.catalogue))
    runs: dict = {}
    for seed in args.seeds:
        for model in args.models:
            folder = args.work / f"seed{seed}" / model
            if not folder.exists():
                print(f"seed {seed}: no {model} in {folder.parent}; skipped", flush=True)
                continue
            print(f"[{datetime.datetime.now():%H:%M:%S}] seed {seed}: {model}", flush=True)
            recommender = recommenders.load(folder, torch.device(args.device))
            if recommender.kind not in ("mscg-generator", "sasrec"):
                raise SystemExit(f"{folder} is a {recommender.kind} model; this script reads generators and SASRec")
            runs.setdefault(model, {})[str(seed)] = {which: split_errors(recommender, dataset.split, counts, which)
                                                     for which in SPLITS}
    runs = {model: runs[model] for model in args.models if model in runs}  # rows in the order asked
    results = {"runs": runs, "users": len(dataset.split), "machine": machine(args.device),
               "date": datetime.date.today().isoformat(), "command": shlex.join([Path(sys.executable).name, *sys.argv])}
    publish(f"search-errors-{args.name}", f"Why the generator misses a target: {args.name}", results,
            markdown(results))


def markdown(results: dict) -> str:
    lines = [f"All {results['users']:,} users, mean over the seeds of each model; {results['machine']}; "
             f"{results['date']}. Thirds: the users by their target's count in training. top 10: the target is in "
             "the beam search's top 10; search error: it is not, but the model scores it above the 10th item the "
             "search returned; model error: the model scores 10 items above it. log p: medians of the target's "
             "log-probability and of the 10th returned item's.", "",
             "| model | seeds | split | third | top 10 | search error | model error | target log p | 10th log p |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model, by_seed in results["runs"].items():
        for which in SPLITS:
            for third in GROUPS:
                rows = [r[which][third] for r in by_seed.values()]
                cells = [f"{statistics.mean(r[key] for r in rows):.1%}" for key in ("top10", "search_error",
                                                                                    "model_error")]
                cells += [f"{statistics.mean(r[key] for r in rows):.2f}" for key in ("target_logp", "tenth_logp")]
                lines.append(f"| {model} | {', '.join(by_seed)} | {which} | {third} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{results['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
