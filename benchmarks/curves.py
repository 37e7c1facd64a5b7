"""When each popularity third learns: the validation NDCG@10 per target-popularity third over training.

    python benchmarks/curves.py --work runs/ablations/scientific --name scientific --seeds 0 1 2 \
        --models sasrec mscgrec

Reads the training history that `mscg train` and `mscg collab` record in a model's meta.json (every validation
check: NDCG@10 overall and per third of the validation users by their target's training count) for the models
of an ablations.py work folder (WORK/seedS/MODEL). Nothing is trained or decoded. Two tables, means over the
seeds that have the model:

- at the check training kept (the best overall NDCG@10) and at the check where the rare third scored best;
- the rare third's NDCG@10 at a few epochs (the last check at or before each, over the runs that got there).

Writes benchmarks/results/curves-NAME.{json,md} and the BENCHMARKS.md section curves-NAME.
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
from report import publish, work_folder_arguments  # noqa: E402

METRICS = ("ndcg@10", "ndcg@10/popular", "ndcg@10/middle", "ndcg@10/rare")
EPOCHS = (5, 10, 20, 30, 50, 75, 100)


def validation_checks(model: Path) -> dict:
    """{"kept": epoch training kept, "checks": [[epoch, N@10, popular, middle, rare], ...]} from meta.json."""
    path = model / "meta.json"
    training = json.loads(path.read_text())["training"]
    checks = [[r["epoch"], *(round(r[m], 6) for m in METRICS)]
              for r in training["history"] if all(m in r for m in METRICS)]
    if not checks:
        raise SystemExit(f"{path}: its training history records no validation by popularity third; retrain it "
                         "with this mscg")
    return {"kept": training["best_epoch"], "checks": checks}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    work_folder_arguments(p, "curves", data=False)
    args = p.parse_args()

    runs: dict = {}
    for model in args.models:
        for seed in args.seeds:
            folder = args.work / f"seed{seed}" / model
            if (folder / "meta.json").exists():
                runs.setdefault(model, {})[str(seed)] = validation_checks(folder)
    if not runs:
        raise SystemExit(f"no model of {args.models} under {args.work}/seed{{{','.join(map(str, args.seeds))}}}")
    results = {"runs": runs, "date": datetime.date.today().isoformat(),
               "command": shlex.join([Path(sys.executable).name, *sys.argv])}
    publish(f"curves-{args.name}", f"When each popularity third learns: {args.name}", results, markdown(results))


def at_epoch(checks: list, epoch: int) -> list | None:
    """The last check at or before `epoch`; None if the run stopped before it."""
    if checks[-1][0] < epoch:
        return None
    return [c for c in checks if c[0] <= epoch][-1] if checks[0][0] <= epoch else None


def mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f}" if values else "—"


def markdown(results: dict) -> str:
    runs = results["runs"]
    lines = [f"Validation NDCG@10 from the models' training histories (meta.json), mean over the seeds of each model; "
             f"{results['date']}. Thirds: the validation users grouped by their target's count in training. kept: "
             "the check training kept (best overall N@10); rare best: the check where the rare third scored "
             "highest.", "",
             "| model | seeds | kept epoch | N@10 | popular | middle | rare | rare-best epoch | N@10 there | "
             "popular there | rare there |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, by_seed in runs.items():
        kept = [next(c for c in r["checks"] if c[0] == r["kept"]) for r in by_seed.values()]
        best = [max(r["checks"], key=lambda c: (c[4], -c[0])) for r in by_seed.values()]
        cells = [", ".join(str(r["kept"]) for r in by_seed.values()),
                 *(mean([c[i] for c in kept]) for i in (1, 2, 3, 4)),
                 ", ".join(str(c[0]) for c in best), *(mean([c[i] for c in best]) for i in (1, 2, 4))]
        lines.append(f"| {model} | {len(by_seed)} | " + " | ".join(cells) + " |")
    lines += ["", "The rare third's validation NDCG@10 by epoch (the last check at or before it; n: runs that got "
                  "that far):", "",
              "| model | " + " | ".join(f"epoch {e}" for e in EPOCHS) + " |", "|---|" + "---|" * len(EPOCHS)]
    for model, by_seed in runs.items():
        cells = []
        for epoch in EPOCHS:
            found = [c for c in (at_epoch(r["checks"], epoch) for r in by_seed.values()) if c is not None]
            cells.append(f"{mean([c[4] for c in found])} (n {len(found)})" if found else "—")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{results['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
