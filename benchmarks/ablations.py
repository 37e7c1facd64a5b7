"""Baselines and ablations in one command: SASRec, TIGER-style, MSCGRec and its ablations, 3 seeds.

    python benchmarks/ablations.py --data data/ml-100k --work runs/ablations/ml-100k --name ml-100k

Per seed, with the same leave-one-out split everywhere: SASRec (`mscg collab`, also the collaborative
modality), text codes (rq-kmeans on all-MiniLM-L6-v2), image codes (RQ-DINO on the item images when
items.jsonl has images, and features+rq-kmeans: EfficientNet-Lite0 features, or the features given by
--image-features), then every generator variant below, each evaluated on the test split. Image codes
from RQ-DINO are learned once (seed 0) and shared by the seeds; everything else is re-run per seed.

Writes benchmarks/results/NAME.json (every run, its metrics and stage times), NAME.md (mean ± sd over
seeds) and NAME.png (bar chart). A step whose output exists is skipped, so an interrupted benchmark
continues where it stopped (delete WORK to start afresh).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402

METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")

# name -> (description, train flags, which image codes: "dino" | "features" | None); the collab codes come from
# the seed's SASRec, except for the variants in TEXT_STARTED_COLLAB
VARIANTS = {
    "mscgrec": ("MSCGRec: text+image+collab in, collab out, trie-constrained", [], "dino"),
    "tiger": ("TIGER-style: text codes in, text codes out, unconstrained",
              ["--modalities", "text", "--decode", "text", "--constraint", "off"], None),
    "constraint_off": ("MSCGRec without constrained training", ["--constraint", "off"], "dino"),
    "constraint_level": ("MSCGRec, softmax over the level's range", ["--constraint", "level"], "dino"),
    "no_collab": ("no collab modality (text+image in, text out)", ["--modalities", "text,image", "--decode", "text"],
                  "dino"),
    "no_image": ("no image modality (text+collab in, collab out)", ["--modalities", "text,collab"], None),
    "no_dual_positions": ("MSCGRec without dual position embeddings", ["--no-dual-positions"], "dino"),
    "decode_text": ("MSCGRec decoding text codes", ["--decode", "text"], "dino"),
    "image_only": ("image codes in and out (RQ-DINO)", ["--modalities", "image", "--decode", "image"], "dino"),
    "image_only_features": ("image codes in and out (features + rq-kmeans)",
                            ["--modalities", "image", "--decode", "image"], "features"),
    "mscgrec_image_features": ("MSCGRec with features + rq-kmeans image codes", [], "features"),
    "mscgrec_window": ("MSCGRec trained on whole windows (`train --samples window`, causal encoder)",
                       ["--samples", "window"], "dino"),
    "mscgrec_text_started_collab": ("MSCGRec, collab codes from a SASRec whose item table starts from the text "
                                    "embeddings (`collab --init-embeddings`)", [], "dino"),
    "mscgrec_label_smoothing": ("MSCGRec with label smoothing 0.1 over the permitted tokens (`train "
                                "--label-smoothing 0.1`)", ["--label-smoothing", "0.1"], "dino"),
    "mscgrec_dense": ("MSCGRec trained with a dense head over the text and image embeddings (`train "
                      "--dense-content`, LIGER-style); its beam alone", [], "dino"),
    "mscgrec_sampled_collab": ("MSCGRec, collab codes from a SASRec trained with the sampled softmax (`collab "
                               "--negatives 1024 --pack`)", [], "dino"),
}
# Variants that need image codes by their nature; every other one runs without them when the dataset has no images
# (MSCGRec is then text+collab in, collab out, and no_image is the same model: left out).
NEEDS_IMAGES = {"no_image", "image_only", "image_only_features", "mscgrec_image_features"}
# Variants whose collab codes come from `mscg collab --init-embeddings WORK/emb_text`; that SASRec is scored
# too, as sasrec_text_started.
TEXT_STARTED_COLLAB = {"mscgrec_text_started_collab"}
SAMPLED_COLLAB = {"mscgrec_sampled_collab"}  # collab codes from the sampled-softmax SASRec (scored as sasrec_sampled)
SAMPLED_FLAGS = ["--negatives", "1024", "--pack"]  # collab's sampled softmax (its default above 16,384 items)
DENSE_HEAD = {"mscgrec_dense"}  # variants trained with --dense-content WORK/emb_text [WORK/emb_image]
# fused model -> (its generator, its dense part: a SASRec model, or None for the generator's own dense head,
# extra `fuse` flags)
FUSED = {"fused": ("mscgrec", "sasrec", []), "fused_text_started": ("mscgrec", "sasrec_text_started", []),
         "fused_text_started_collab": ("mscgrec_text_started_collab", "sasrec_text_started", []),
         "fused_dense": ("mscgrec_dense", None, []),
         "fused_all_text_started": ("mscgrec_dense", "sasrec_text_started", ["--dense-head"])}
BASELINES = {"sasrec": "SASRec (`mscg collab` at its defaults), the collab stage",
             "sasrec_sampled": "SASRec with the sampled softmax (`collab --negatives 1024 --pack`)",
             "sasrec_text_started": "SASRec whose item table starts from the text embeddings (PCA to its width)"}


def run(cmd: list[str], log: Path) -> float:
    """Run one mscg command (subprocess), append its output to `log`, return its wall time."""
    cmd = [str(c) for c in cmd]
    started = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {shlex.join(cmd)}; see {log}")
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder with items.jsonl + interactions.jsonl")
    p.add_argument("--work", type=Path, required=True, help="folder for every artifact (reused when rerun)")
    p.add_argument("--name", required=True, help="results name: benchmarks/results/NAME.{json,md,png}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--image-features", type=Path, help="precomputed image features (instead of pixels)")
    p.add_argument("--image-ids", type=Path, help="item id per row of --image-features")
    p.add_argument("--image-dim", type=int, help="vector length when --image-features is raw float32")
    p.add_argument("--train-args", default="", help="extra flags for every `mscg train`, e.g. '--epochs 4'")
    p.add_argument("--collab-args", default="", help="extra flags for `mscg collab`")
    p.add_argument("--dino-args", default="", help="extra flags for `mscg quantize --method rq-dino`")
    p.add_argument("--device", default="auto")
    p.add_argument("--published", type=Path,
                   help="published rows to show beside ours: a JSON list of {name, recall@10, ndcg@10, source}")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: rebuild the tables and chart from the runs already in WORK")
    args = p.parse_args()

    mscg = [sys.executable, "-m", "mscg"]
    data, work = args.data, args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "benchmark.log"
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / f"{args.name}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": {}}
    dev = ["--device", args.device]
    times: dict[str, float] = results.setdefault("stage_seconds", {})

    def step(name: str, output: Path, cmd: list[str]) -> None:
        if output.exists() or args.report_only:
            return
        print(f"[{datetime.datetime.now():%H:%M:%S}] {name}", flush=True)
        times[name] = round(run(cmd, log), 1)
        save()

    def save() -> None:
        # Merge with what is on disk: two processes may fill one results file (e.g. one seed per core).
        if results_path.exists():
            on_disk = json.loads(results_path.read_text())
            for variant, seeds in on_disk.get("runs", {}).items():
                for seed, metrics in seeds.items():
                    results["runs"].setdefault(variant, {}).setdefault(seed, metrics)
            for name, seconds in on_disk.get("stage_seconds", {}).items():
                times.setdefault(name, seconds)
            for c in on_disk.get("commands", []):
                if c not in results.setdefault("commands", []):
                    results["commands"].append(c)
        if not args.report_only or "machine" not in results:  # a report keeps the machine the runs were made on
            results["machine"] = machine(args.device)
        if not args.report_only:  # every command that added runs, in order
            command = shlex.join([Path(sys.executable).name, *sys.argv])
            commands = results.setdefault("commands", [])
            for c in (results.pop("command", None), command):
                if c and c not in commands:
                    commands.append(c)
        if not args.report_only or "date" not in results:
            results["date"] = datetime.date.today().isoformat()
        results_path.write_text(json.dumps(results, indent=2) + "\n")

    has_pixels = '"image"' in (data / "items.jsonl").read_text()
    has_images = has_pixels or args.image_features is not None

    def image_kind(variant: str) -> str | None:
        """Which image codes a variant's generator reads: "dino", "features", or None (none, or no images)."""
        return VARIANTS[variant][2] if has_images else None

    def collab_source(variant: str) -> str:
        """Whose collab codes a variant reads: "" (the seed's SASRec), "text_started" or "sampled"."""
        return "text_started" if variant in TEXT_STARTED_COLLAB else "sampled" if variant in SAMPLED_COLLAB else ""
    variants = [v for v in args.variants if has_images or v not in NEEDS_IMAGES]
    if not has_pixels:  # without pixels there is no RQ-DINO: the image codes come from the features
        variants = [v for v in variants if v not in ("image_only_features", "mscgrec_image_features")]

    step("embed text", work / "emb_text", [*mscg, "embed", "--modality", "text", "-d", data, "-o", work / "emb_text",
                                           *dev])
    image_quantizers: dict[str, Path] = {}
    if has_images:
        if args.image_features is not None:
            features = work / "emb_image"
            cmd = [*mscg, "import-embeddings", "-d", data, "--modality", "image", "--vectors", args.image_features,
                   "--ids", args.image_ids, "-o", features]
            step("import image features", features, cmd + (["--dim", str(args.image_dim)] if args.image_dim else []))
        else:
            features = work / "emb_image"
            step("embed image", features, [*mscg, "embed", "--modality", "image", "-d", data, "-o", features,
                                           "--skip-bad-images", *dev])
        if has_pixels:
            image_quantizers["dino"] = work / "q_image_dino"
            step("quantize image rq-dino", work / "q_image_dino",
                 [*mscg, "quantize", "--modality", "image", "--method", "rq-dino", "-d", data, "-o",
                  work / "q_image_dino", "--skip-bad-images", "--seed", "0", *dev, *shlex.split(args.dino_args)])

    for seed in args.seeds:
        s = work / f"seed{seed}"
        s.mkdir(exist_ok=True)
        seed_flag = ["--seed", str(seed)]
        step(f"seed {seed}: collab", s / "sasrec",
             [*mscg, "collab", "-d", data, "-o", s / "emb_collab", "--model-out", s / "sasrec", *seed_flag, *dev,
              *shlex.split(args.collab_args)])
        step(f"seed {seed}: quantize text", s / "q_text",
             [*mscg, "quantize", "--modality", "text", "--embeddings", work / "emb_text", "-o", s / "q_text",
              *seed_flag])
        step(f"seed {seed}: quantize collab", s / "q_collab",
             [*mscg, "quantize", "--modality", "collab", "--embeddings", s / "emb_collab", "-o", s / "q_collab",
              *seed_flag])
        # the sampled-softmax and text-started SASRecs are baselines of every table (and the collab codes of
        # SAMPLED_COLLAB, TEXT_STARTED_COLLAB)
        step(f"seed {seed}: collab (sampled)", s / "sasrec_sampled",
             [*mscg, "collab", "-d", data, "-o", s / "emb_collab_sampled", "--model-out", s / "sasrec_sampled",
              *SAMPLED_FLAGS, *seed_flag, *dev, *shlex.split(args.collab_args)])
        step(f"seed {seed}: collab (text-started)", s / "sasrec_text_started",
             [*mscg, "collab", "-d", data, "-o", s / "emb_collab_text_started", "--model-out",
              s / "sasrec_text_started", "--init-embeddings", work / "emb_text", *seed_flag, *dev,
              *shlex.split(args.collab_args)])
        for source in {collab_source(v) for v in variants} - {""}:
            step(f"seed {seed}: quantize collab ({source.replace('_', '-')})", s / f"q_collab_{source}",
                 [*mscg, "quantize", "--modality", "collab", "--embeddings", s / f"emb_collab_{source}", "-o",
                  s / f"q_collab_{source}", *seed_flag])
        if has_images:
            step(f"seed {seed}: quantize image features", s / "q_image_features",
                 [*mscg, "quantize", "--modality", "image", "--embeddings", work / "emb_image", "-o",
                  s / "q_image_features", *seed_flag])
            image_quantizers["features"] = s / "q_image_features"
            if not has_pixels:
                image_quantizers["dino"] = image_quantizers["features"]  # the only image codes there are
        codes: dict[tuple[str | None, str], Path] = {}
        for kind, source in {(image_kind(v), collab_source(v)) for v in variants}:
            path = s / (f"codes_{kind or 'no_image'}" + (f"_{source}_collab" if source else ""))
            quantizers = ["-q", s / "q_text", "-q", s / ("q_collab" + (f"_{source}" if source else ""))]
            if kind is not None:
                quantizers += ["-q", image_quantizers[kind]]
            about = ", ".join([kind or "no image"] + ([f"{source.replace('_', '-')} collab"] if source else []))
            step(f"seed {seed}: assign-codes ({about})", path,
                 [*mscg, "assign-codes", "-d", data, *quantizers, "-o", path, "--skip-bad-images", *seed_flag, *dev])
            codes[kind, source] = path
        for baseline in BASELINES:
            evaluate_run(step, mscg, data, s / baseline, s / f"eval_{baseline}.json", dev,
                         f"seed {seed}: evaluate {baseline}")
            record(results, baseline, seed, s / f"eval_{baseline}.json", s / baseline)
        for v in variants:  # in the order given; each one's fused rankings right after it (beyond the paper)
            flags = VARIANTS[v][1]
            if v in DENSE_HEAD:
                flags = [*flags, "--dense-content", work / "emb_text"] + (
                    ["--dense-content", work / "emb_image"] if has_images else [])
            step(f"seed {seed}: train {v}", s / v,
                 [*mscg, "train", "-d", data, "--codes", codes[image_kind(v), collab_source(v)], "-o", s / v,
                  *flags, *seed_flag, *dev, "--resume", *shlex.split(args.train_args)])  # a stopped benchmark continues
            evaluate_run(step, mscg, data, s / v, s / f"eval_{v}.json", dev, f"seed {seed}: evaluate {v}")
            record(results, v, seed, s / f"eval_{v}.json", s / v)
            for fused, (generator, dense, fuse_flags) in FUSED.items():
                if generator == v and (dense is None or dense in BASELINES or dense in variants):
                    step(f"seed {seed}: fuse {generator} + {dense or 'its dense head'}", s / fused,
                         [*mscg, "fuse", s / generator, *([s / dense] if dense else []), "-d", data, "-o", s / fused,
                          *fuse_flags, *seed_flag, *dev])
                    evaluate_run(step, mscg, data, s / fused, s / f"eval_{fused}.json", dev,
                                 f"seed {seed}: evaluate {fused}")
                    record(results, fused, seed, s / f"eval_{fused}.json", s / fused)
        save()

    baselines = [b for b in BASELINES if b in results["runs"]]
    variants = [v for v in variants if v in results["runs"]] + [f for f in FUSED if f in results["runs"]]
    results["variants"] = {**{b: BASELINES[b] for b in baselines}, **{v: VARIANTS[v][0] for v in variants
                                                                       if v in VARIANTS},
                           **{f: f"`mscg fuse` of {g} and {d or 'its own dense head'}"
                                 + (" and its dense head" if "--dense-head" in flags else "")
                                 + " (beyond the paper; weights chosen on validation)"
                              for f, (g, d, flags) in FUSED.items() if f in variants}}
    if not has_images:  # no image modality: every variant's inputs are text and collab codes
        results["variants"] = {v: d.replace("text+image+collab in", "text+collab in").replace(
            "over the text and image embeddings", "over the text embeddings") for v, d in results["variants"].items()}
    elif not has_pixels:  # the image codes of every variant come from the features
        results["variants"] = {v: d.replace("(RQ-DINO)", "(imported features + rq-kmeans)")
                               for v, d in results["variants"].items()}
    results["image_codes"] = ("RQ-DINO on the item images (features + rq-kmeans where the variant says so)"
                              if has_pixels else "rq-kmeans on the imported image features" if has_images else "none")
    save()
    published = json.loads(args.published.read_text()) if args.published else []
    table = (markdown(results, [*baselines, *variants], published) + "\n"
             + codes_table(work / f"seed{args.seeds[0]}", results))
    (out_dir / f"{args.name}.md").write_text(table)
    chart(results, [*baselines, *variants], out_dir / f"{args.name}.png", args.name)
    write_section(f"ablations-{args.name}", f"### Baselines and ablations: {args.name}\n\n{table}\n"
                  f"![{args.name}](benchmarks/results/{args.name}.png)\n")
    print(table)


def evaluate_run(step, mscg, data, model, output, dev, name) -> None:
    step(name, output, [*mscg, "evaluate", model, "-d", data, "-o", output, "--by-popularity", *dev])


def record(results: dict, variant: str, seed: int, path: Path, model: Path) -> None:
    """Test metrics of one run, plus the validation NDCG@10 and epoch its training chose (from the model's meta)."""
    if not path.exists():  # --report-only, and this run was not made
        return
    metrics = json.loads(path.read_text())
    run = {k: metrics[k] for k in (*METRICS, "users", "eval_seconds") if k in metrics}
    for group in metrics.get("by_target_popularity", []):  # runs evaluated with --by-popularity
        run.update({f"{k}/{group['group']}": group[k] for k in ("recall@10", "ndcg@10")})
    meta = json.loads((model / "meta.json").read_text())
    training = meta.get("training", {})
    if meta.get("model_type") == "fused":  # the validation of the weight `mscg fuse` kept
        config = json.loads((model / "config.json").read_text())
        key = "weight" if "weight" in config else "weights"
        run["valid_ndcg@10"] = next(r["ndcg@10"] for r in meta["validation"] if r[key] == config[key])
        run["weight"] = config[key]
    if "best_valid_metric" in training:
        run["valid_ndcg@10"] = round(training["best_valid_metric"], 6)
        run["best_epoch"] = training["best_epoch"]
    results["runs"].setdefault(variant, {})[str(seed)] = run


def mean_sd(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample sd (0 for one value), count)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def summary(results: dict, variant: str) -> dict[str, tuple[float, float, int]]:
    runs = list(results["runs"].get(variant, {}).values())
    return {k: mean_sd([r[k] for r in runs]) for k in METRICS}


def markdown(results: dict, variants: list[str], published: list[dict] = ()) -> str:
    """The table: mean ± sd of every variant over its seeds, then the `published` rows as their papers give them."""
    lines = [f"Test split, mean ± sd over seeds; {results['machine']}; {results['date']}. "
             f"Image codes: {results.get('image_codes', 'none')}. Valid N@10: the validation NDCG@10 at the "
             "epoch training kept (chosen on it, so optimistic), over the seeds that recorded it; epochs: the kept "
             "epochs, by seed (fused: the weight chosen, w). N@10 by third: mean NDCG@10 of the users whose target is "
             "in the most popular / middle / least popular third of the items (by training count; `evaluate "
             "--by-popularity`).", "",
             "| variant | R@5 | R@10 | N@5 | N@10 | N@10 by third | seeds | valid N@10 | epochs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        s = summary(results, v)
        cells = [f"{m:.4f} ± {sd:.4f}" for m, sd, _ in (s[k] for k in ("recall@5", "recall@10", "ndcg@5", "ndcg@10"))]
        by_seed = sorted(results["runs"].get(v, {}).items(), key=lambda item: int(item[0]))
        runs = [r for _, r in by_seed if "valid_ndcg@10" in r]
        valid_cell = "{:.4f} ± {:.4f} ({})".format(*mean_sd([r["valid_ndcg@10"] for r in runs])) if runs else "—"
        epochs = ", ".join(str(r["best_epoch"]) if "best_epoch" in r else "w " + (
            "/".join(f"{x:g}" for x in r["weight"]) if isinstance(r["weight"], list) else f"{r['weight']:g}")
            for r in runs) or "—"
        thirds = [[r[f"ndcg@10/{g}"] for _, r in by_seed if f"ndcg@10/{g}" in r] for g in ("popular", "middle", "rare")]
        thirds_cell = " / ".join(f"{statistics.mean(t):.4f}" for t in thirds) if all(thirds) else "—"
        lines.append(f"| {v} | {' | '.join(cells)} | {thirds_cell} | {s['recall@10'][2]} | {valid_cell} | {epochs} |")
    for row in published:
        lines.append(f"| {row['name']} (published) | — | {row['recall@10']:.4f} | — | {row['ndcg@10']:.4f} | — | — | — "
                     f"| — |")
    lines += ["", "Variants: " + "; ".join(f"**{v}** = {results['variants'][v]}" for v in variants), ""]
    if published:
        lines += ["Published rows (cited, not rerun; same split and protocol: full ranking, leave-one-out, test): "
                  + "; ".join(f"**{row['name']}**: {row['source']}" for row in published), ""]
    lines += ["Commands: " + "; ".join(f"`{c}`" for c in results.get("commands") or [results.get("command", "")]), ""]
    return "\n".join(lines)


def codes_table(seed_dir: Path, results: dict) -> str:
    """Codebook usage and collision rate of every modality's codes (first seed), and stage wall times."""
    lines = ["Codes (first seed): per modality, items coded, codebook usage per level, items sharing their "
             "full code with another item.", "",
             "| codes | modality | items | codebook usage | collision rate |", "|---|---|---|---|---|"]
    for codes in sorted(seed_dir.glob("codes_*")):
        meta = json.loads((codes / "meta.json").read_text())
        for m in meta["modalities"]:
            s = m["stats"]
            usage = "/".join(f"{u:.0%}" for u in s.get("codebook_usage", []))
            lines.append(f"| {codes.name.removeprefix('codes_')} | {m['name']} | {m['items_with_modality']:,} | "
                         f"{usage} of {m['n_levels']} x {m['codebook_sizes'][0]} | {s.get('collision_rate', 0):.1%} |")
    lines += ["", "Wall time of each step (seconds, one process each; several ran side by side on one machine):", "",
              "| step | seconds |",
              "|---|---|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in results.get("stage_seconds", {}).items()]
    return "\n".join(lines) + "\n"


def chart(results: dict, variants: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(variants)), 4))
    width = 0.4
    for i, metric in enumerate(("recall@10", "ndcg@10")):
        stats = [summary(results, v)[metric] for v in variants]
        xs = [x + (i - 0.5) * width for x in range(len(variants))]
        ax.bar(xs, [m for m, _, _ in stats], width, yerr=[sd for _, sd, _ in stats], capsize=3,
               label=metric.replace("recall", "Recall").replace("ndcg", "NDCG"))
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels(variants, rotation=35, ha="right")
    ax.set_title(f"{title}: test split, mean ± sd over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
