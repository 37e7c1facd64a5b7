"""Is the stopping rule the gap? Test metrics along training, next to the validation that chooses the epoch.

    python benchmarks/stopping.py --data data/scientific --work runs/ablations/scientific --name scientific \
        --seeds 0 1 2 --modes full held

Trains MSCGRec at `mscg train`'s defaults on the codes of an ablations.py work folder (WORK/seedS/codes_dino)
and records, at every validation check, the TEST NDCG@10/Recall@10 of the same users next to the validation
metrics (in the model's meta.json history, keys "test_..."). Test never chooses anything: training keeps the
epoch validation chooses, as `mscg train` does. This is a diagnostic, and the only place mscg looks at test
during training. Two modes:

- full: the standard split. The best test check over the run bounds what any stopping rule could get.
- held: every user's last training item is held out of training (never a target nor an input), so that the
  newest item of the validation history is as unseen as test's newest item is. Its kept epoch is what a budget
  chosen on such a validation would pick; the full run's test at that epoch is what refitting on the whole
  training split with that budget (the same schedule, stopped there) would score.

Models go to WORK/seedS/stopping_MODE (an existing one is reused, so that two processes can split the runs and a
third, with --report-only, publishes the table). Writes benchmarks/results/stopping-NAME.{json,md} and the
BENCHMARKS.md section stopping-NAME; SASRec's test NDCG@10 comes from WORK/seedS/eval_sasrec.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, publish  # noqa: E402

import mscg.data.split as split_module  # noqa: E402
import mscg.training.generator as generator_training  # noqa: E402
from mscg.evaluation import validation_users  # noqa: E402
from mscg.metrics import add_sums, metric_sums  # noqa: E402
from mscg.training.defaults import GENERATOR_LOOP  # noqa: E402
from mscg.training.validation import popularity_thirds  # noqa: E402

MODES = ("full", "held")


class HeldOutSplit(split_module.Split):
    """The leave-one-out split with each user's last training item out of training (validation and test as
    before: their histories still hold it)."""

    def train_sequence(self, u: int) -> np.ndarray:
        return self.sequences[u][:-3]

    def train_items(self) -> np.ndarray:
        return np.unique(np.concatenate([s[:-3] for s in self.sequences]))


def train_recording_test(mode: str, data: Path, codes: Path, output: Path, seed: int, device: str) -> None:
    """`mscg train` at its defaults, its validation sums extended by the test metrics of the same users."""
    from mscg.commands.train import train

    standard_split, standard_sums, standard_fit = (split_module.leave_one_out, generator_training.validation_sums,
                                                   generator_training.fit_generator)
    by_test_target: dict[int, str] = {}

    def split_rule(interactions):
        s = standard_split(interactions)
        return HeldOutSplit(s.user_ids, s.sequences, s.dropped_users) if mode == "held" else s

    def fit(config, loop, codes_, ds, **kw):
        users = validation_users(len(ds.split), kw["valid_users"], loop.seed)
        # by the test target's count in the standard training split (as `evaluate --by-popularity` groups them)
        standard = split_module.Split(ds.split.user_ids, ds.split.sequences, ds.split.dropped_users)
        by_test_target.update(popularity_thirds(standard, users, len(ds.catalogue), target="test"))
        return (yield from standard_fit(config, loop, codes_, ds, **kw))

    def sums(recommender, split, users, batch_size=512, thirds=None):
        total = standard_sums(recommender, split, users, batch_size, thirds)
        users = list(users)
        for start in range(0, len(users), batch_size):
            chunk = users[start:start + batch_size]
            ranks = recommender.rank([split.history(u, "test") for u in chunk],
                                     torch.tensor([split.target(u, "test") for u in chunk]))
            part = metric_sums(ranks)
            add_sums(total, {"test_ndcg@10": part["ndcg@10"], "test_recall@10": part["recall@10"]})
            members = [i for i, u in enumerate(chunk) if by_test_target[int(u)] == "rare"]
            if members:
                rare = metric_sums(ranks[members])
                add_sums(total, {"test_ndcg@10/test_rare": rare["ndcg@10"], "count/test_rare": rare["count"]})
        return total

    split_module.leave_one_out, generator_training.validation_sums = split_rule, sums
    generator_training.fit_generator = fit
    try:
        train(data, codes, output, loop=replace(GENERATOR_LOOP, seed=seed), device=device, resume=True)
    finally:
        split_module.leave_one_out, generator_training.validation_sums = standard_split, standard_sums
        generator_training.fit_generator = standard_fit


def checks(model: Path) -> dict:
    training = json.loads((model / "meta.json").read_text())["training"]
    keys = ("ndcg@10", "ndcg@10/rare", "test_ndcg@10", "test_recall@10", "test_ndcg@10/test_rare")
    return {"kept": training["best_epoch"],
            "checks": [[r["epoch"], *(r[k] for k in keys)] for r in training["history"] if "test_ndcg@10" in r]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder with items.jsonl + interactions.jsonl")
    p.add_argument("--work", type=Path, required=True, help="an ablations.py work folder (WORK/seedS/codes_dino)")
    p.add_argument("--name", required=True, help="results name: benchmarks/results/stopping-NAME.{json,md}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--report-only", action="store_true", help="train nothing: publish the runs already in WORK")
    args = p.parse_args()

    for seed in args.seeds:
        for mode in args.modes:
            out = args.work / f"seed{seed}" / f"stopping_{mode}"
            if not out.exists() and not args.report_only:
                print(f"[{datetime.datetime.now():%H:%M:%S}] seed {seed}: train ({mode})", flush=True)
                train_recording_test(mode, args.data, args.work / f"seed{seed}" / "codes_dino", out, seed, args.device)
    runs: dict = {}
    for seed in args.seeds:
        s = args.work / f"seed{seed}"
        needed = [s / f"stopping_{m}" / "meta.json" for m in MODES] + [s / "eval_sasrec.json"]
        if not all(path.exists() for path in needed):
            continue
        sasrec = json.loads((s / "eval_sasrec.json").read_text())
        rare = next(g for g in sasrec["by_target_popularity"] if g["group"] == "rare")
        runs[str(seed)] = {**{m: checks(s / f"stopping_{m}") for m in MODES},
                           "sasrec": [sasrec["ndcg@10"], sasrec["recall@10"], rare["ndcg@10"]]}
    if not runs:
        raise SystemExit(f"no seed of {args.seeds} under {args.work} has both runs and eval_sasrec.json")
    previous = Path(__file__).resolve().parent / "results" / f"stopping-{args.name}.json"
    commands = json.loads(previous.read_text()).get("commands", []) if previous.exists() else []
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    results = {"runs": runs, "date": datetime.date.today().isoformat(), "machine": machine(args.device),
               "commands": commands + ([command] if command not in commands and not args.report_only else [])}
    publish(f"stopping-{args.name}", f"Test along training (is the stopping rule the gap?): {args.name}", results,
            markdown(results))


def mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f}" if values else "—"


def markdown(results: dict) -> str:
    rows = []
    for seed, r in results["runs"].items():
        full, held = r["full"], r["held"]
        at = {c[0]: c for c in full["checks"]}
        kept = at[full["kept"]]
        best = max(full["checks"], key=lambda c: (c[3], -c[0]))
        held_kept = next(c for c in held["checks"] if c[0] == held["kept"])
        refit_epoch = held["kept"] if held["kept"] in at else max(e for e in at if e <= held["kept"])
        rows.append({"seed": seed, "kept": full["kept"], "valid": kept[1], "test": kept[3], "recall": kept[4],
                     "rare": kept[5], "best_epoch": best[0], "best": best[3], "best_recall": best[4],
                     "held_kept": held["kept"], "held_valid": held_kept[1],
                     "refit": at[refit_epoch][3], "sasrec": r["sasrec"][0], "sasrec_recall": r["sasrec"][1],
                     "sasrec_rare": r["sasrec"][2]})
    lines = [f"MSCGRec at `mscg train`'s defaults; test metrics recorded at every validation check (never used to "
             f"choose); {results['machine']}; {results['date']}. kept: the check validation chose; best test: the "
             "check with the highest test NDCG@10 (what an oracle stopping rule would get); held: a run with every "
             "user's last training item held out of training, its kept epoch, and the full run's test NDCG@10 at "
             "that epoch (a budget chosen on that validation). Rare: test users whose target is in the least "
             "popular third.", "",
             "| seed | kept epoch | valid N@10 | test N@10 | test R@10 | test rare | best-test epoch | best test "
             "N@10 | its R@10 | held: kept epoch | held: valid N@10 | full run's test there | SASRec test N@10 | "
             "SASRec R@10 | SASRec rare |", "|---|" + "---|" * 14]
    keys = ("kept", "valid", "test", "recall", "rare", "best_epoch", "best", "best_recall", "held_kept", "held_valid",
            "refit", "sasrec", "sasrec_recall", "sasrec_rare")
    for row in rows:
        lines.append(f"| {row['seed']} | " + " | ".join(str(row[k]) if isinstance(row[k], int) else f"{row[k]:.4f}"
                                                       for k in keys) + " |")
    if len(rows) > 1:
        lines.append("| mean | " + " | ".join("" if isinstance(rows[0][k], int) else mean([r[k] for r in rows])
                                              for k in keys) + " |")
    lines += ["", "Checks of the full run (validation N@10 / test N@10, mean over the seeds that reached the epoch):",
              ""]
    epochs = sorted({c[0] for r in results["runs"].values() for c in r["full"]["checks"]})
    lines += ["| epoch | " + " | ".join(str(e) for e in epochs) + " |", "|---|" + "---|" * len(epochs)]
    for label, i in (("valid N@10", 1), ("test N@10", 3)):
        cells = [mean([c[i] for r in results["runs"].values() for c in r["full"]["checks"] if c[0] == e])
                 for e in epochs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Commands: " + "; ".join(f"`{c}`" for c in results["commands"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
