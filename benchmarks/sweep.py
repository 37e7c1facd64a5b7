"""Generator settings compared on one dataset: chosen on the validation split, reported on test.

    python benchmarks/sweep.py --data data/scientific --codes work/codes --work runs/sweep --name sweep-scientific \
        --config "defaults=" --config "mask 0.3=--mask-prob 0.3" --config "d_model 64=--d-model 64 --d-ff 256"

Each --config is `LABEL=FLAGS`: `mscg train` runs with FLAGS (on top of the defaults and --train-args) on the
same codes and seed; every model is then evaluated on the validation split and on the test split. The table
marks the setting with the best validation NDCG@10: that is the one to adopt. Test columns are there to
read, not to choose by (choosing on them would make the reported test figure optimistic).

Writes benchmarks/results/NAME.json and NAME.md and the BENCHMARKS.md section NAME. A model whose
directory exists in WORK is reused, so an interrupted sweep continues where it stopped, and several sweeps
of one NAME may run side by side (e.g. one per core).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablations import run  # noqa: E402
from report import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_config(text: str) -> tuple[str, list[str]]:
    label, sep, flags = text.partition("=")
    if not sep or not label.strip():
        raise argparse.ArgumentTypeError(f"--config {text!r}: write LABEL=FLAGS, e.g. 'mask 0.3=--mask-prob 0.3'")
    return label.strip(), shlex.split(flags)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder with items.jsonl + interactions.jsonl")
    p.add_argument("--codes", type=Path, required=True, help="codes directory from `mscg assign-codes`")
    p.add_argument("--work", type=Path, required=True, help="folder for the trained models (reused when rerun)")
    p.add_argument("--name", required=True, help="results name: benchmarks/results/NAME.{json,md}")
    p.add_argument("--config", type=parse_config, action="append", required=True, help="LABEL=FLAGS (repeat)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-args", default="", help="flags for every `mscg train`, e.g. '--epochs 10'")
    p.add_argument("--device", default="auto")
    p.add_argument("--title", default="Generator settings", help="heading of the BENCHMARKS.md section")
    args = p.parse_args()

    mscg = [sys.executable, "-m", "mscg"]
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "sweep.log"
    results_path = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    results: dict = {"runs": {}}
    for label, flags in args.config:
        model = args.work / label.replace(" ", "_").replace("/", "_")
        flags = [*shlex.split(args.train_args), *flags]
        entry: dict = {"flags": shlex.join(flags), "seed": args.seed}
        if not model.exists():
            print(f"[{datetime.datetime.now():%H:%M:%S}] train {label}", flush=True)
            run([*mscg, "train", "-d", args.data, "--codes", args.codes, "-o", model, "--seed", str(args.seed),
                 "--device", args.device, *flags], log)
        training = json.loads((model / "meta.json").read_text()).get("training", {})
        entry.update(best_epoch=training.get("best_epoch"), epochs_run=training.get("epochs_run"),
                     train_seconds=training.get("seconds"), codes=describe_codes(model / "codes"))
        for split in ("valid", "test"):
            out = args.work / f"eval_{model.name}_{split}.json"
            if not out.exists():
                run([*mscg, "evaluate", model, "-d", args.data, "--split", split, "-o", out, "--by-popularity",
                     "--device", args.device], log)
            metrics = json.loads(out.read_text())
            entry[split] = {k: metrics[k] for k in ("recall@10", "ndcg@10")}
            rare = [g for g in metrics.get("by_target_popularity", []) if g["group"] == "rare"]
            if rare:
                entry[split]["rare_ndcg@10"] = rare[0]["ndcg@10"]
        # Re-read before writing: another sweep of the same NAME may have added runs meanwhile.
        results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": {}}
        results["runs"][label] = entry
        if command not in results.setdefault("commands", []):
            results["commands"].append(command)
        results["machine"], results["date"] = machine(args.device), datetime.date.today().isoformat()
        results_path.write_text(json.dumps(results, indent=2) + "\n")

    table = markdown(results)
    results_path.with_suffix(".md").write_text(table)
    write_section(args.name, f"### {args.title}: {args.name}\n\n{table}")
    print(table)


def describe_codes(codes: Path) -> str:
    """Each modality's levels x codewords and its collision rate (items sharing their full code), e.g.
    `text 3x256 40%, image 3x64 52%, collab 3x64 5%`: read from the codes the model trained on."""
    described = []
    for m in json.loads((codes / "meta.json").read_text())["modalities"]:
        sizes = m["codebook_sizes"]
        shape = f"{len(sizes)}x{sizes[0]}" if len(set(sizes)) == 1 else "x".join(map(str, sizes))
        described.append(f"{m['name']} {shape} {m['stats']['collision_rate']:.0%}")
    return ", ".join(described)


def rare(split: dict) -> str:
    """The rare third's NDCG@10 (users whose target is in the least-trained third), or — for older runs."""
    return f"{split['rare_ndcg@10']:.4f}" if "rare_ndcg@10" in split else "—"


def markdown(results: dict) -> str:
    runs = results["runs"]
    chosen = max(runs, key=lambda label: runs[label]["valid"]["ndcg@10"])
    with_codes = any("codes" in r for r in runs.values())  # runs written before the column have none
    lines = [(f"One seed per setting; {results['machine']}; {results['date']}. Chosen on validation NDCG@10 "
              "(**bold**); the test columns are for reading, not for choosing."
              + (" Codes: per modality, levels x codewords and the share of items whose full code another item "
                 "shares." if with_codes else "")), "",
             "| setting | flags |" + (" codes |" if with_codes else "") + " valid R@10 | valid N@10 | valid rare N@10 "
             "| test R@10 | test N@10 | test rare N@10 | best epoch / run | train s |",
             "|---|---|" + ("---|" if with_codes else "") + "---|---|---|---|---|---|---|---|"]
    for label, r in runs.items():
        name = f"**{label}**" if label == chosen else label
        seconds = f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "—"
        valid, test = r["valid"], r["test"]
        codes = f" {r.get('codes', '—')} |" if with_codes else ""
        lines.append(f"| {name} | `{r['flags'] or '(defaults)'}` |{codes} {valid['recall@10']:.4f} | "
                     f"{valid['ndcg@10']:.4f} | {rare(valid)} | {test['recall@10']:.4f} | {test['ndcg@10']:.4f} | "
                     f"{rare(test)} | {r['best_epoch']} / {r['epochs_run']} | {seconds} |")
    lines += ["", "Commands: " + "; ".join(f"`{c}`" for c in results["commands"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
