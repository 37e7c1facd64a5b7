"""Seconds per training step of `mscg collab` (SASRec): full vs sampled softmax, padded vs packed windows.

Every variant has its own model (the default architecture, same seed) and AdamW; the variants take turns on
the same shuffled batches, one step each in turn, so that a slow moment of the machine hits them all alike.
A step is what the training loop does: the batch (negatives drawn, windows packed), forward, backward,
gradient clipping, the optimizer. Reported: the median seconds per step after --warmup steps, the speed-up
over today's full softmax on padded windows, and the share of the transformer's positions that are padding.
With several --threads the whole comparison runs once per thread count (CPU); on a GPU, --device cuda.

    python benchmarks/collab_steps.py --data ../shared/data/amazon-toys --name amazon-toys --threads 2 1
    python benchmarks/collab_steps.py --data ../shared/data/amazon-toys --name amazon-toys-gpu --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import publish, stamp  # noqa: E402

from mscg.data.samples import SASRecWindows  # noqa: E402
from mscg.data.split import load_dataset  # noqa: E402
from mscg.models.sasrec import SASRec, SASRecConfig  # noqa: E402
from mscg.devices import resolve_device  # noqa: E402
from mscg.training.sasrec import NegativeSamples  # noqa: E402

BASELINE = "full softmax, padded"


def variants(ds, max_history: int, negatives: list[int], device: torch.device) -> dict:
    """{name: batch source} of the compared ways to train (the default marked)."""
    n_items = len(ds.catalogue)
    default = SASRecConfig(n_items=0).resolved(n_items)  # collab's choice for this catalogue

    def mark(n: int, pack: bool) -> str:
        return " (default)" if (default.negatives, default.pack) == (n, pack) else ""

    padded = SASRecWindows(ds.split, max_history, device=device)
    packed = SASRecWindows(ds.split, max_history, device=device, pack=True)
    out = {BASELINE: padded, f"full softmax, packed{mark(0, True)}": packed}  # the baseline: collab before packing
    for n in negatives:
        out[f"sampled {n:,}, packed{mark(n, True)}"] = NegativeSamples(packed, n_items, n)
    out[f"sampled {negatives[0]:,}, padded"] = NegativeSamples(padded, n_items, negatives[0])
    return out


def time_steps(ds, sources: dict, *, steps: int, warmup: int, batch_size: int, device: torch.device) -> list[dict]:
    n_items = len(ds.catalogue)
    models, optimizers = {}, {}
    for name in sources:
        torch.manual_seed(0)
        models[name] = SASRec(SASRecConfig(n_items=n_items)).to(device).train()
        optimizers[name] = torch.optim.AdamW(models[name].parameters(), lr=1e-3)
    padded = sources[BASELINE]
    batches = torch.randperm(len(padded), generator=torch.Generator().manual_seed(0)).split(batch_size)
    if len(batches) < warmup + steps:
        raise SystemExit(f"{len(batches)} batches an epoch: fewer than --warmup + --steps")
    seconds = {name: [] for name in sources}
    positions = dict.fromkeys(sources, 0)
    for k in range(warmup + steps):
        for name, source in sources.items():
            model, optimizer = models[name], optimizers[name]
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            batch = source.batch(batches[k])
            loss = model(**batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if k >= warmup:
                seconds[name].append(time.perf_counter() - start)
                positions[name] += batch["history"].numel()
    real = sum(int(padded.lengths[b.numpy()].sum()) for b in batches[warmup:warmup + steps])
    base = statistics.median(seconds[BASELINE])
    return [{"variant": name, "seconds_per_step": round(statistics.median(s), 4), "min": round(min(s), 4),
             "speedup": round(base / statistics.median(s), 2), "padding": round(1 - real / positions[name], 3),
             "steps_per_epoch": len(batches)} for name, s in seconds.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder with items.jsonl + interactions.jsonl")
    p.add_argument("--name", required=True, help="results: benchmarks/results/collab-steps-NAME.{json,md}")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-history", type=int, default=50)
    p.add_argument("--negatives", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--threads", type=int, nargs="+", default=[0], help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--note", default="", help="a reading of the numbers, added to the section")
    args = p.parse_args()
    device = resolve_device(args.device)
    ds = load_dataset(args.data)
    sources = variants(ds, args.max_history, args.negatives, device)
    runs = []
    for threads in args.threads:
        if threads:
            torch.set_num_threads(threads)
        rows = time_steps(ds, sources, steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
                          device=device)
        runs.append({"threads": torch.get_num_threads(), "rows": rows})
        print(f"threads {torch.get_num_threads()}: " + ", ".join(f"{r['variant']} {r['seconds_per_step']}"
                                                               for r in rows), file=sys.stderr, flush=True)
    results = {"data": str(args.data), "items": len(ds.catalogue), "users": len(ds.split),
               "windows": len(sources[BASELINE]), "steps": args.steps, "warmup": args.warmup,
               "batch_size": args.batch_size, "device": str(device), "runs": runs, "stamp": stamp(args.device),
               "note": args.note}
    publish(f"collab-steps-{args.name}", f"`collab` training steps: {args.name}", results, markdown(results))


def markdown(results: dict) -> str:
    lines = [results["stamp"], "",
             f"{results['items']:,} items, {results['users']:,} users, {results['windows']:,} training windows; "
             f"batch {results['batch_size']} ({results['runs'][0]['rows'][0]['steps_per_epoch']} steps an epoch), "
             f"default model; median of {results['steps']} steps after {results['warmup']} of warm-up, the "
             f"variants taking turns on the same batches; device {results['device']}.", "",
             "| torch threads | variant | s / step | speed-up | padding |", "|---:|---|---:|---:|---:|"]
    for run in results["runs"]:
        for r in run["rows"]:
            lines.append(f"| {run['threads']} | {r['variant']} | {r['seconds_per_step']:.3f} | {r['speedup']:.1f}x | "
                         f"{r['padding']:.1%} |")
    if results.get("note"):
        lines += ["", results["note"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
