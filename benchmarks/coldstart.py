"""New and rare items: a cold-start split, collab codes predicted from content, and the fused ranking.

    python benchmarks/coldstart.py --data data/scientific --work runs/cold/scientific --name amazon-scientific \
        --emb-text runs/ablations/scientific/emb_text --seeds 0 1 2

Per seed: `mscg prepare DATA --withhold-items SHARE --seed S` (the withheld items' interactions are removed but
where one is a user's last, the test target; the items stay in the catalogue), then SASRec and a text-started
SASRec (`collab`, `collab --init-embeddings`), `predict-collab` (collab embeddings of the untrained items from
their text and image embeddings), text/image/collab codes, MSCGRec (`train` on those codes), TIGER-style (text
codes in and out, unconstrained), and `fuse` of MSCGRec with each SASRec. Every model is evaluated on the test
split with `--by-popularity`: overall, the users whose target was withheld ("cold"), the others ("warm"), and the
rarest third of targets. Popularity (most trained-on items first) is scored alongside.

Text and image embeddings depend on the items only, so --emb-text / --emb-image of the full dataset are reused
(they are made with `mscg embed` / `import-embeddings` when not given). A step whose output exists is skipped.
Writes benchmarks/results/coldstart-NAME.{json,md} and the BENCHMARKS.md section coldstart-NAME.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablations import run  # noqa: E402
from report import stamp, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "popularity": "most trained-on items first",
    "sasrec": "SASRec (`collab --model-out`)",
    "sasrec_text_started": "SASRec whose item table starts from the text embeddings",
    "mscgrec": "MSCGRec; collab codes of untrained items predicted from content (`predict-collab`)",
    "mscgrec_trained_trie": "MSCGRec trained with `--train-trie trained` (unseen items are no negatives)",
    "mscgrec_untrained_collab": "MSCGRec on the raw SASRec table (untrained rows for the withheld items)",
    "tiger": "TIGER-style: text codes in and out, unconstrained",
    "fused": "`fuse` of mscgrec and sasrec (weight chosen on validation)",
    "fused_text_started": "`fuse` of mscgrec and sasrec_text_started",
    "fused_trained_trie": "`fuse` of mscgrec_trained_trie and sasrec_text_started",
    "mscgrec_dense": "MSCGRec trained with a dense head over the text and image embeddings (`train --dense-content`, "
                     "LIGER-style); its beam alone",
    "dense_head": "the dense head of mscgrec_dense alone (`fuse --weight 0`)",
    "fused_dense": "`fuse` of mscgrec_dense with its own dense head (weight chosen on validation)",
    "fused_all": "`fuse` of mscgrec_dense, sasrec and the dense head (`--dense-head`; weights generator/SASRec/head "
                 "chosen on validation)",
    "fused_all_text_started": "`fuse` of mscgrec_dense, sasrec_text_started and the dense head",
}
# name -> (generator, dense model dir or None for the generator's own head, extra `fuse` flags)
FUSED = {"fused": ("mscgrec", "sasrec", []), "fused_text_started": ("mscgrec", "sasrec_text_started", []),
         "fused_trained_trie": ("mscgrec_trained_trie", "sasrec_text_started", []),
         "dense_head": ("mscgrec_dense", None, ["--weight", "0"]), "fused_dense": ("mscgrec_dense", None, []),
         "fused_all": ("mscgrec_dense", "sasrec", ["--dense-head"]),
         "fused_all_text_started": ("mscgrec_dense", "sasrec_text_started", ["--dense-head"])}
COLUMNS = (("ndcg@10", "N@10"), ("recall@10", "R@10"), ("cold/recall@10", "cold R@10"),
           ("cold/ndcg@10", "cold N@10"), ("warm/ndcg@10", "warm N@10"), ("rare/ndcg@10", "rare N@10"))


def flat(metrics: dict) -> dict[str, float]:
    """An evaluation's metrics as COLUMNS keys."""
    out = {k: metrics[k] for k in ("ndcg@10", "recall@10")}
    for group, prefix in (("cold_start", "cold"), ("warm", "warm")):
        for k in ("recall@10", "ndcg@10"):
            if k in metrics.get(group, {}):
                out[f"{prefix}/{k}"] = metrics[group][k]
    for g in metrics.get("by_target_popularity", []):
        if g["group"] == "rare":
            out["rare/ndcg@10"] = g["ndcg@10"]
    if "weight" in metrics:
        out["weight"] = metrics["weight"]
    return out


def popularity_metrics(data: Path) -> dict[str, float]:
    """Popularity scored as `evaluate --by-popularity` scores a model: every user gets the items most often in
    training (`mscg.popularity.most_popular`), the target's rank in that list gives Recall/NDCG@10."""
    import numpy as np
    import torch

    from mscg.data.coldstart import read_withheld
    from mscg.data.split import load_dataset
    from mscg.metrics import means, metric_sums, ranks_from_lists
    from mscg.popularity import PopularityBreakdown, most_popular, train_counts

    ds = load_dataset(data)
    counts = train_counts(ds.split, len(ds.catalogue))
    users = range(len(ds.split))
    targets = torch.tensor([ds.split.target(u, "test") for u in users])
    top = torch.from_numpy(most_popular(counts, 10)).expand(len(targets), -1)
    ranks = ranks_from_lists(top, targets)
    breakdown = PopularityBreakdown(counts, 10)
    breakdown.add(ranks, targets, top, [ds.split.history(u, "test") for u in users])
    cold = torch.from_numpy(np.isin(targets.numpy(), read_withheld(data, ds.catalogue.index)))
    out = {}
    for mask, prefix in ((None, ""), (cold, "cold/"), (~cold, "warm/")):
        sums = metric_sums(ranks if mask is None else ranks[mask])
        out.update({f"{prefix}{k}": round(v, 6) for k, v in means(sums).items() if k in ("ndcg@10", "recall@10")})
    groups = breakdown.summary((10,))["by_target_popularity"]
    out["rare/ndcg@10"] = next(g["ndcg@10"] for g in groups if g["group"] == "rare")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="an mscg dataset folder (items.jsonl + interactions)")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--share", type=float, default=0.1, help="share of the items withheld (prepare --withhold-items)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--emb-text", type=Path, help="text embeddings of DATA's items (made when not given)")
    p.add_argument("--emb-image", type=Path, help="image embeddings of DATA's items (none when not given)")
    p.add_argument("--train-args", default="", help="extra flags for every `mscg train`")
    p.add_argument("--collab-args", default="", help="extra flags for `mscg collab`")
    p.add_argument("--device", default="auto")
    p.add_argument("--report-only", action="store_true", help="run nothing: the tables from the runs in WORK")
    args = p.parse_args()

    mscg = [sys.executable, "-m", "mscg"]
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "benchmark.log"
    dev = ["--device", args.device]
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / f"coldstart-{args.name}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": {}}

    def step(output: Path, cmd: list) -> None:
        if not output.exists() and not args.report_only:
            print(f"{output}", flush=True)
            run(cmd, log)

    emb_text = args.emb_text or work / "emb_text"
    step(emb_text, [*mscg, "embed", "--modality", "text", "-d", args.data, "-o", emb_text, *dev])
    content = ["--content", emb_text] + (["--content", args.emb_image] if args.emb_image else [])
    for seed in args.seeds:
        s, sf = work / f"seed{seed}", ["--seed", str(seed)]
        data = s / "data"
        s.mkdir(exist_ok=True)
        step(data, [*mscg, "prepare", args.data, "-o", data, "--withhold-items", str(args.share), *sf])
        collab_flags = shlex.split(args.collab_args)
        step(s / "sasrec", [*mscg, "collab", "-d", data, "-o", s / "emb_collab", "--model-out", s / "sasrec", *sf,
                            *dev, *collab_flags])
        step(s / "sasrec_text_started", [*mscg, "collab", "-d", data, "-o", s / "emb_collab_ts", "--model-out",
                                         s / "sasrec_text_started", "--init-embeddings", emb_text, *sf, *dev,
                                         *collab_flags])
        step(s / "emb_full", [*mscg, "predict-collab", "-d", data, "--collab", s / "emb_collab", *content, "-o",
                              s / "emb_full", *sf])
        quantizers = {"text": emb_text, "collab": s / "emb_full", "collab_untrained": s / "emb_collab"}
        if args.emb_image:
            quantizers["image"] = args.emb_image
        for name, emb in quantizers.items():
            step(s / f"q_{name}", [*mscg, "quantize", "--modality", name.split("_")[0], "--embeddings", emb, "-o",
                                   s / f"q_{name}", *sf])
        image = ["-q", s / "q_image"] if args.emb_image else []
        for codes, collab in (("codes", "q_collab"), ("codes_untrained", "q_collab_untrained")):
            step(s / codes, [*mscg, "assign-codes", "-d", data, "-q", s / "q_text", *image, "-q", s / collab, "-o",
                             s / codes, *sf, *dev])
        train_flags = shlex.split(args.train_args)
        dense_content = ["--dense-content", emb_text] + (["--dense-content", args.emb_image] if args.emb_image else [])
        trained = {"mscgrec": ("codes", []), "mscgrec_trained_trie": ("codes", ["--train-trie", "trained"]),
                   "mscgrec_dense": ("codes", dense_content),
                   "mscgrec_untrained_collab": ("codes_untrained", []),
                   "tiger": ("codes", ["--modalities", "text", "--decode", "text", "--constraint", "off"])}
        for name, (codes, flags) in trained.items():
            if name in args.models:
                step(s / name, [*mscg, "train", "-d", data, "--codes", s / codes, "-o", s / name, *flags, *sf, *dev,
                                *train_flags])
        for name, (generator, dense, flags) in FUSED.items():
            if name in args.models:
                step(s / name, [*mscg, "fuse", s / generator, *([s / dense] if dense else []), "-d", data, "-o",
                                s / name, *flags, *sf, *dev])
        for name in args.models:
            runs = results["runs"].setdefault(name, {})
            if name == "popularity" and data.exists():
                runs[str(seed)] = popularity_metrics(data)
                continue
            out = s / f"eval_{name}.json"
            step(out, [*mscg, "evaluate", s / name, "-d", data, "-o", out, "--by-popularity", *dev])
            if not out.exists():  # --report-only, and this run was not made
                continue
            runs[str(seed)] = flat(json.loads(out.read_text()))
            if name.startswith("fused"):
                config = json.loads((s / name / "config.json").read_text())
                runs[str(seed)]["weight"] = config.get("weight", config.get("weights"))
        meta = json.loads((s / "emb_full" / "meta.json").read_text())["source"]
        results.setdefault("content_map", {})[str(seed)] = meta["map"]
        results.setdefault("cold_users", {})[str(seed)] = json.loads(
            (s / "eval_sasrec.json").read_text())["cold_start"]["users"] if "sasrec" in args.models else None
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    if not args.report_only or "stamp" not in results:  # a report keeps the stamp of the runs
        results["stamp"] = stamp(args.device)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results, [m for m in MODELS if results["runs"].get(m)], args)
    (out_dir / f"coldstart-{args.name}.md").write_text(table)
    write_section(f"coldstart-{args.name}", f"### New and rare items: {args.name}\n\n{table}")
    print(table)


def cell(values: list[float]) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def markdown(results: dict, models: list[str], args) -> str:
    maps = list(results.get("content_map", {}).values())
    cold_users = [c for c in results.get("cold_users", {}).values() if c is not None]
    lines = [results["stamp"], "",
             f"Test split, mean ± sd over the seeds (last column); {args.share:.0%} of the items withheld from "
             f"training (cold users per seed: {', '.join(map(str, cold_users)) or '—'}). cold: users whose test "
             "target is a withheld item; warm: the others; rare: the least popular third of targets by training "
             "count (withheld targets count 0, so most fall there).", "",
             "| model | " + " | ".join(label for _, label in COLUMNS) + " | seeds |",
             "|---|" + "---|" * (len(COLUMNS) + 1)]
    for m in models:
        runs = list(results["runs"][m].values())
        cells = [cell([r[k] for r in runs if k in r]) for k, _ in COLUMNS]
        weights = ["/".join(f"{x:g}" for x in w) if isinstance(w, list) else f"{w:g}" for r in runs
                   if (w := r.get("weight")) is not None]
        name = m + (f" (weight{'s' if '/' in ''.join(weights) else ''} {', '.join(weights)})" if weights else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(runs)} |")
    if maps:
        lines += ["", "Content map (ridge) on held-out trained items, mean over seeds: "
                  f"R² {statistics.mean(m['holdout_r2'] for m in maps):.3f}, cosine "
                  f"{statistics.mean(m['holdout_cosine'] for m in maps):.3f}, nearest held-out collab embedding is "
                  f"the item's own {statistics.mean(m['holdout_nearest_is_self'] for m in maps):.1%} "
                  f"(chance {1 / maps[0]['holdout_items']:.1%})."]
    lines += ["", "Models: " + "; ".join(f"**{m}** = {MODELS[m]}" for m in models), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
