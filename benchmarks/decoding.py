r"""Decoding benchmark: mscg's vectorised trie-constrained beam search against HF `generate`.

The same trained generator is decoded by
  (a) mscg: `mscg.decoding.beam.beam_search` (per-level trie tables, users batched, beams as tensors,
      KV cache, encoder once per user), and
  (b) HF: `generate(num_beams=B, num_return_sequences=B, prefix_allowed_tokens_fn=<dict trie>)` of a
      transformers T5ForConditionalGeneration holding the very same T5 weights (mscg.models.t5 has its
      layout; `transformers_t5`) and the same encoder states,
for every beam size B and batch size, on the same users. Both timings include the encoder. Reported:
users/s of each, the speed-up, and top-K agreement (fraction of users whose top-K lists are identical,
as ordered lists and as sets, and mean overlap@K), plus the largest score difference. The work behind
the speed-up: floating-point operations per user of each (torch's FlopCounterMode: matmuls and
attention), the rate each achieves, and, for scale, the rate of a plain matmul of the decoder's
feed-forward shape on the same device.

HF beam search ranks by log_softmax over the *full* vocabulary; mscg normalises as the model was trained
(`config.constraint`). For an apples-to-apples comparison the model is decoded with constraint "off"
(full-vocabulary log-probabilities) by both; mscg is also timed with the model's own constraint.

Without --model, a generator of the default `mscg train` architecture is randomly initialised over a
synthetic codes catalogue (the agreement check does not need a trained model; the speed does not
depend on the weights). With --model/--data, histories are the test-split histories of the dataset.

Examples (from the repository root):

  python benchmarks/decoding.py --model work/generator --data data/ml-100k -o bench/decoding.json --md bench/decoding.md
  python benchmarks/decoding.py --beams 20 --batch-sizes 256 --users 256      # synthetic, quick
  python benchmarks/decoding.py --model work/generator --data data/ml-100k --eval-users 943 --beams 20 \
      --batch-sizes 256 --no-hf
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    agreement,
    hf_beam_search,
    machine,
    machine_line,
    prefix_table,
    publish,
    quiet_transformers,
    sync,
    timed,
)


def synthetic_model(n_items: int, seed: int, constraint: str):
    """(model, history tokenizer, trie, item count, histories) over random codes: 3 modalities x 3 x 256 + collision."""
    from mscg.artifacts.codes import Codes, Vocabulary, collision_level
    from mscg.recommenders.generator import generator_parts
    from mscg.models.generator import Generator, GeneratorConfig

    rng = np.random.default_rng(seed)
    sizes, columns = {}, []
    for modality in ("text", "image", "collab"):
        base = rng.integers(0, 256, (n_items, 3))
        suffix, c = collision_level(base)
        columns.append(np.concatenate([base, suffix[:, None]], axis=1))
        sizes[modality] = [256, 256, 256, c]
    vocab = Vocabulary.build(sizes)
    codes = Codes(item_ids=[str(i) for i in range(n_items)], codes=torch.from_numpy(np.concatenate(columns, 1)),
                  vocab=vocab)
    # `mscg train`'s default architecture (GeneratorConfig's defaults)
    config = GeneratorConfig(vocabulary=vocab.to_json(), modalities=list(sizes), constraint=constraint)
    torch.manual_seed(seed)
    model = Generator(config).eval()
    history_tokens, _, trie = generator_parts(codes, config)

    def histories(n: int) -> list[np.ndarray]:
        lengths = rng.integers(3, 51, n)
        return [rng.integers(0, n_items, k) for k in lengths]

    return model, history_tokens, trie, histories


def trained_model(model_dir: Path, data: Path, codes: Path | None, seed: int, device: torch.device):
    from mscg.data.split import load_dataset
    from mscg import recommenders

    rec = recommenders.load(model_dir, device, beam_size=20, codes_path=codes)
    ds = load_dataset(data)
    if rec.item_ids != ds.catalogue.item_ids:
        sys.exit(f"{model_dir} was trained on another catalogue than {data}")
    order = np.random.default_rng(seed).permutation(len(ds.split))

    def histories(n: int) -> list[np.ndarray]:
        return [ds.split.history(int(u), "test") for u in order[:n]]

    return rec, histories, ds


def flop_per_user(fn, batch: torch.Tensor) -> float:
    """Floating-point operations per user of one call, as torch's FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(batch)
    return counter.get_total_flops() / batch.shape[0]


FEED_FORWARD_ROWS = 256 * 20  # decoder rows of one step at batch 256 x beam 20


def matmul_rate(model, device: torch.device, repeat: int = 20) -> float:
    """GFLOP/s of a (FEED_FORWARD_ROWS, d_model) @ (d_model, d_ff) matmul, the decoder's feed-forward shape:
    what this device sustains on the decoder's largest dense operation."""
    a = torch.randn(FEED_FORWARD_ROWS, model.config.d_model, device=device)
    b = torch.randn(model.config.d_model, model.config.d_ff, device=device)
    _, seconds = timed(lambda: [a @ b for _ in range(repeat)], device, repeat=3)
    return round(repeat * 2 * a.shape[0] * a.shape[1] * b.shape[1] / seconds / 1e9, 1)


def run(args) -> dict:
    from mscg.decoding.beam import beam_search

    torch.set_num_threads(args.threads) if args.threads else None
    device = torch.device(args.device)
    quiet_transformers()
    if args.model is not None:
        if args.data is None:
            sys.exit("--model needs --data (the dataset whose test histories are decoded)")
        rec, histories, ds = trained_model(args.model, args.data, args.codes, args.seed, device)
        model, history_tokens, trie = rec.model, rec.history_tokens, rec.trie
        source = {"model": str(args.model), "data": str(args.data), "items": trie.n_items}
    else:
        model, history_tokens, trie, histories = synthetic_model(args.items, args.seed, "trie")
        ds = rec = None
        source = {"model": "random-init generator (default `mscg train` architecture) on synthetic codes",
                  "items": args.items}
    model = model.to(device).eval()
    trie = trie.to(device)
    native = model.config.constraint
    source.update({"constraint": native, "depth": trie.depth, "level_sizes": trie.sizes,
                   "history_encoding": model.config.history_encoding, "d_model": model.config.d_model,
                   "n_layers": model.config.n_layers, "n_decoder_layers": model.config.decoder_layers,
                   "parameters": sum(p.numel() for p in model.parameters())})
    prefixes = prefix_table(model, trie) if not args.no_hf else None
    k_eval = min(args.k, min(args.beams))
    rows = []
    for beam in args.beams:
        for batch_size in args.batch_sizes:
            n_users = args.users if batch_size > 1 else args.users_batch1
            users = histories(n_users)
            batches = [history_tokens(users[s:s + batch_size]).to(device) for s in range(0, n_users, batch_size)]
            row = {"beam": beam, "batch_size": batch_size, "users": n_users}

            def timed_batches(fn) -> tuple[list, float]:
                fn(batches[0])  # warm-up: first-call allocations and lazy initialisation stay out of the timing
                outs, best = None, float("inf")
                for _ in range(args.repeat):
                    sync(device)
                    start = time.perf_counter()
                    outs = [fn(b) for b in batches]
                    sync(device)
                    best = min(best, time.perf_counter() - start)
                return outs, best

            with torch.no_grad():
                _, enc_s = timed_batches(lambda b: model.encode(b))
                row["encoder_users_per_s"] = round(n_users / enc_s, 1)
                model.config.constraint = "off"
                mscg_out, mscg_s = timed_batches(lambda b: beam_search(model, b, trie, beam))
                row["mscg_off_users_per_s"] = round(n_users / mscg_s, 1)
                row["mscg_off_mflop_per_user"] = round(flop_per_user(lambda b: beam_search(model, b, trie, beam),
                                                                     batches[0]) / 1e6, 2)
                model.config.constraint = native
                if native != "off":
                    _, own_s = timed_batches(lambda b: beam_search(model, b, trie, beam))
                    row[f"mscg_{native}_users_per_s"] = round(n_users / own_s, 1)
                if not args.no_hf:
                    model.config.constraint = "off"
                    hf_out, hf_s = timed_batches(lambda b: hf_beam_search(model, b, trie, beam, prefixes))
                    row["hf_users_per_s"] = round(n_users / hf_s, 1)
                    row["hf_mflop_per_user"] = round(flop_per_user(
                        lambda b: hf_beam_search(model, b, trie, beam, prefixes), batches[0]) / 1e6, 2)
                    model.config.constraint = native
                    row["speedup"] = round(hf_s / mscg_s, 1)
                    ours = torch.cat([o[0].cpu() for o in mscg_out]), torch.cat([o[1].cpu() for o in mscg_out])
                    theirs = torch.cat([o[0].cpu() for o in hf_out]), torch.cat([o[1].cpu() for o in hf_out])
                    for k in sorted({k_eval, beam}):
                        row[f"agreement@{k}"] = {m: round(v, 4) for m, v in agreement(ours[0], theirs[0], k).items()}
                    finite = torch.isfinite(ours[1]) & torch.isfinite(theirs[1]) & (theirs[0] >= 0)
                    row["max_score_diff"] = float((ours[1] - theirs[1]).abs()[finite].max()) if finite.any() else 0.0
                    row["hf_invalid_items"] = int((theirs[0] < 0).sum())
            rows.append(row)
            print(f"beam {beam:3d} batch {batch_size:4d}: " + ", ".join(f"{k} {v}" for k, v in row.items()
                                                                       if k not in ("beam", "batch_size")),
                  file=sys.stderr, flush=True)
    result = {"benchmark": "decoding", "machine": machine(device), "source": source, "k": k_eval, "rows": rows,
              "matmul_gflop_per_s": matmul_rate(model, device)}
    if args.eval_users:
        result["evaluation"] = evaluation_throughput(rec, ds, histories, history_tokens, model, trie, args, device)
    return result


def evaluation_throughput(rec, ds, histories, history_tokens, model, trie, args, device) -> dict:
    """Users/s of the evaluation path at beam 20 and batch 256, and the projected time for 22,000 users.

    With a trained model this is `mscg evaluate`'s own path (`rec.rank`, the GeneratorRecommender loaded on the
    device: tokenise, beam search under bf16 autocast on CUDA, rank the target) on the test histories; asking for
    more users than the dataset has cycles through its users, so 22,000 users can be timed on a smaller dataset."""
    from mscg.decoding.beam import beam_search
    from mscg.metrics import ranks_from_lists

    n = args.eval_users
    if ds is not None:
        order = np.resize(np.random.default_rng(args.seed).permutation(len(ds.split)), n)
        users = [ds.split.history(int(u), "test") for u in order]
        targets = torch.tensor([ds.split.target(int(u), "test") for u in order])
        rank = rec.rank
    else:
        users, targets = histories(n), torch.zeros(n, dtype=torch.long)

        def rank(batch, batch_targets):
            items, _ = beam_search(model, history_tokens(batch).to(device), trie, 20)
            return ranks_from_lists(items.cpu(), batch_targets)
    with torch.no_grad():
        rank(users[:256], targets[:256])  # warm-up: first-call allocations and lazy initialisation
        sync(device)
        start = time.perf_counter()
        for s in range(0, n, 256):
            rank(users[s:s + 256], targets[s:s + 256])
        sync(device)
    seconds = time.perf_counter() - start
    per_s = n / seconds
    return {"users": n, "distinct_users": len(ds.split) if ds is not None else n, "beam": 20, "batch_size": 256,
            "constraint": model.config.constraint, "seconds": round(seconds, 2), "users_per_s": round(per_s, 1),
            "projected_seconds_22000_users": round(22000 / per_s, 1)}


def _share(x: float) -> str:
    """A fraction as a percentage that never rounds a near miss up to 100%."""
    return "100%" if x == 1 else f"{min(x * 100, 99.9):.1f}%"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Decoding: mscg vs HF generate — {result['source']['model']} "
             f"({result['source']['items']:,} items, decode depth {result['source']['depth']}, "
             f"model constraint {result['source']['constraint']})", "",
             f"Machine: {machine_line(m)}", f"Command: `{m['command']}`", ""]
    native = result["source"]["constraint"]
    k = result["k"]
    head = ["beam", "batch", "users", "mscg users/s (off)"]
    if native != "off":
        head.append(f"mscg users/s ({native})")
    has_hf = any("hf_users_per_s" in r for r in result["rows"])
    if has_hf:
        head += ["HF users/s", "speed-up", f"identical top-{k}", f"overlap@{k}", "identical top-B", "max Δscore"]
    if any("hf_mflop_per_user" in r for r in result["rows"]):  # results written before the FLOP count lack it
        head += ["MFLOP/user mscg / HF", "GFLOP/s mscg / HF"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [r["beam"], r["batch_size"], r["users"], r["mscg_off_users_per_s"]]
        if native != "off":
            cells.append(r[f"mscg_{native}_users_per_s"])
        if "hf_users_per_s" in r:
            a, b = r[f"agreement@{k}"], r[f"agreement@{r['beam']}"]
            cells += [r["hf_users_per_s"], f"{r['speedup']}x", _share(a["identical_lists"]), f"{a['overlap']:.3f}",
                      _share(b["identical_lists"]), f"{r['max_score_diff']:.1e}"]
            if "hf_mflop_per_user" in r:
                mscg_rate = r["mscg_off_mflop_per_user"] * r["mscg_off_users_per_s"] / 1e3
                hf_rate = r["hf_mflop_per_user"] * r["hf_users_per_s"] / 1e3
                cells += [f"{r['mscg_off_mflop_per_user']:.1f} / {r['hf_mflop_per_user']:.1f}",
                          f"{mscg_rate:.1f} / {hf_rate:.1f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if "matmul_gflop_per_s" in result:
        lines += ["", f"For scale: a ({FEED_FORWARD_ROWS}, d_model) @ (d_model, d_ff) matmul, the decoder's "
                      f"feed-forward at batch 256 x beam 20, runs at {result['matmul_gflop_per_s']} GFLOP/s on this "
                      "device and thread count."]
    if "evaluation" in result:
        e = result["evaluation"]
        distinct = e.get("distinct_users", e["users"])
        cycled = f" (its {distinct:,} test users, cycled)" if distinct < e["users"] else ""
        projected = e["projected_seconds_22000_users"]
        projected = f"{projected:.0f} s" if projected < 60 else f"{projected / 60:.1f} min"
        lines += ["", f"Evaluation path (beam {e['beam']}, batch {e['batch_size']}, constraint {e['constraint']}): "
                      f"{e['users']:,} users{cycled} in {e['seconds']} s = {e['users_per_s']} users/s -> "
                      f"22,000 users in ~{projected}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="trained generator directory (from `mscg train`); default: a "
                                              "random-init generator on synthetic codes")
    p.add_argument("--data", type=Path, help="dataset directory the model was trained on (test histories)")
    p.add_argument("--codes", type=Path, help="codes directory (default: the model's own)")
    p.add_argument("--items", type=int, default=5000, help="synthetic catalogue size (without --model)")
    p.add_argument("--beams", type=lambda s: [int(x) for x in s.split(",")], default=[10, 20, 50])
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 256])
    p.add_argument("--users", type=int, default=256, help="users decoded per setting with batch > 1")
    p.add_argument("--users-batch1", type=int, default=32, help="users decoded per setting with batch 1")
    p.add_argument("-k", type=int, default=10, help="K of the top-K agreement (besides K = beam)")
    p.add_argument("--repeat", type=int, default=1, help="time each setting this many times, keep the best")
    p.add_argument("--eval-users", type=int, default=0,
                   help="also time the evaluation path on this many users (beam 20, batch 256; cycles through the "
                        "dataset's users when it has fewer) and project 22,000 users")
    p.add_argument("--no-hf", action="store_true", help="skip the HF generate reference (mscg speed only)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, help="write the JSON here (default: stdout)")
    p.add_argument("--md", type=Path, help="write the Markdown table here (default: stderr)")
    p.add_argument("--section", help="also write the table into BENCHMARKS.md under this section name "
                                     "(e.g. decoding-cpu)")
    args = p.parse_args(argv)
    result = run(args)
    publish(result, markdown(result), json_path=args.output, md_path=args.md, section=args.section)


if __name__ == "__main__":
    main()
