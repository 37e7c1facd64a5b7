"""Training throughput of the generator: targets per second and time per epoch, per-prefix vs window samples.

    python benchmarks/throughput.py --data data/ml-100k --codes work/codes --name ml-100k --batch-sizes 256 1024

For each sample kind (`train --samples prefix|window`) and batch size: `mscg train`'s default generator on
the codes, the training samples as `mscg train` builds them, and --steps timed optimizer steps (forward,
backward, gradient clipping, AdamW) after --warmup untimed ones, batches drawn in the loop's shuffled order.
A "target" is one next-item prediction: a prefix sample holds one, a window up to --max-history; a batch
of N targets is N prefixes or as many windows as hold about N targets (as `mscg train` steps). Time per
epoch = the epoch's targets / targets per second (validation not included). Runs on the CPU, and on CUDA
too when a GPU is present (--devices).

Writes benchmarks/results/throughput-NAME.json and the BENCHMARKS.md section throughput-NAME.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, stamp, write_section  # noqa: E402

from benchmarks._common import sync  # noqa: E402


def build(data: Path, codes_path: Path, samples: str, device: torch.device, seed: int, stride: int | None = None):
    """(model, batch source, targets per epoch) as `mscg train --samples SAMPLES` builds them."""
    from mscg.artifacts.codes import load_codes
    from mscg.data.samples import GeneratorSamples, GeneratorWindows
    from mscg.data.split import load_dataset
    from mscg.recommenders.generator import generator_parts
    from mscg.models.generator import Generator, GeneratorConfig
    from mscg.training.generator import default_window_stride

    codes = load_codes(codes_path)
    ds = load_dataset(data)
    config = GeneratorConfig(vocabulary=codes.vocab.to_json(), modalities=list(codes.vocab.modalities),
                             samples=samples)
    torch.manual_seed(seed)
    model = Generator(config).to(device).train()
    history, target_codes, trie = generator_parts(codes, config)
    parts = dict(target_codes=target_codes, trie=trie, slot_modality=model.slot_modality.cpu(),
                 mask_tokens=torch.tensor([codes.vocab.mask_token(m) for m in config.modalities]),
                 mask_prob=config.modality_mask_prob)
    if samples == "window":
        stride = stride or default_window_stride(config.max_history)
        source = GeneratorWindows(ds.split, history, **parts, device=device, stride=stride)
        return model, source, source.n_targets
    source = GeneratorSamples(ds.split, history, **parts)
    return model, source, len(source)


def measure(model, source, n_targets: int, batch_size: int, device: torch.device, steps: int, warmup: int,
            seed: int) -> dict:
    from mscg.training.generator import GENERATOR_LOOP

    from mscg.training.generator import windows_per_step

    loop = replace(GENERATOR_LOOP, batch_size=batch_size)
    if len(source) != n_targets:  # windows: as many as hold about batch_size targets, as `mscg train` steps
        batch_size = windows_per_step(batch_size, len(source), n_targets)
    optimizer = torch.optim.AdamW(model.parameters(), lr=loop.lr, weight_decay=loop.weight_decay)
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))
    batches = order.split(batch_size)
    steps = min(steps, len(batches) - warmup) if len(batches) > warmup + 1 else len(batches)
    targets = 0
    for b in range(warmup + steps):
        if b == warmup:
            sync(device)
            started, targets = time.perf_counter(), 0
        batch = {k: v.to(device, non_blocking=True) for k, v in source.batch(batches[b % len(batches)]).items()}
        loss = model(**batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), loop.grad_clip)
        optimizer.step()
        targets += int(batch["valid"].sum()) if "valid" in batch else len(batches[b % len(batches)])
    sync(device)
    seconds = time.perf_counter() - started
    rate = targets / seconds
    return {"batch_size": loop.batch_size, "samples_per_step": batch_size, "steps": steps, "targets": targets,
            "seconds": round(seconds, 3), "targets_per_second": round(rate, 1),
            "epoch_seconds": round(n_targets / rate, 1), "epoch_targets": n_targets, "samples_per_epoch": len(source)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--codes", type=Path, required=True)
    p.add_argument("--name", required=True, help="results: benchmarks/results/throughput-NAME.json")
    p.add_argument("--samples", nargs="+", default=["prefix", "window"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when present")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--window-stride", type=int, default=None, help="as `train --window-stride` (default: its)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    for device_name in devices:
        device = torch.device(device_name)
        for samples in args.samples:
            model, source, n_targets = build(args.data, args.codes, samples, device, args.seed, args.window_stride)
            for batch_size in args.batch_sizes:
                row = {"device": device_name, "samples": samples,
                       **measure(model, source, n_targets, batch_size, device, args.steps, args.warmup, args.seed)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    out = ROOT / "benchmarks" / "results" / f"throughput-{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"stamp": stamp(devices[-1]), "rows": rows}, indent=2) + "\n")
    base = {(r["device"], r["batch_size"]): r["targets_per_second"] for r in rows if r["samples"] == "prefix"}
    lines = [f"### Generator training throughput: {args.name}", "", stamp(devices[-1]), "",
             "| device | samples | batch (targets) | samples/step | targets/s | vs prefix | epoch (s) | targets/epoch "
             "| samples/epoch |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ref = base.get((r["device"], r["batch_size"]))
        speedup = f"{r['targets_per_second'] / ref:.1f}x" if ref else "-"
        lines.append(f"| {r['device']} | {r['samples']} | {r['batch_size']} | {r['samples_per_step']} | "
                     f"{r['targets_per_second']:,.0f} | "
                     f"{speedup} | {r['epoch_seconds']:,.1f} | {r['epoch_targets']:,} | {r['samples_per_epoch']:,} |")
    write_section(f"throughput-{args.name}", "\n".join(lines))


if __name__ == "__main__":
    main()
