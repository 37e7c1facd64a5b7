"""Scale simulation: time and peak memory of the code pipeline as the catalogue grows.

For each catalogue size N (default 10k, 100k, 400k items; the paper's largest, PixelRec, has ~407k):

  generate      synthetic items.jsonl, clustered embeddings for text / image / collab (dim --dim), and
                a history file of --users (default 1,000,000) users, written as a stream
  quantize x3   `mscg quantize --method rq-kmeans --codebook-size 256` per modality (3 x 256)
  assign-codes  `mscg assign-codes` with the three quantizers (+ one collision level per modality)
  trie          load the codes and build the decode-modality trie (`CodeTrie`): time, bytes, layout
  model         a generator of the default `mscg train` architecture, randomly initialised (or, with
                --train-users, `mscg train --epochs 1` on that many users' histories), as a model dir
  decode        what `mscg recommend` does: load the model + codes + trie, then beam search (beam
                --beam, batch 256) for --decode-users users (default 10,000) taken by streaming the
                history file (every (users/decode-users)-th user; the file is never held in memory)

With --steps K (the stages of a whole pipeline, as the issue "Large catalogues" asks), the history file
also becomes data/interactions.jsonl, and three more steps run:

  read          what every stage does first: read items.jsonl + interactions.jsonl and split them
                (seconds, and the bytes each interaction holds in memory)
  collab        `mscg collab` at its defaults for this catalogue (sampled softmax above a few thousand
                items): K optimizer steps timed, so one epoch's cost is projected (steps per epoch x
                seconds per step); with --full-softmax-max N also the full softmax, up to N items
  train         `mscg train` at its defaults (window samples) on the codes: K steps, projected likewise

Every step runs in its own process; its wall time and peak RSS (from os.wait4's rusage) are recorded
and checked against --limit-mib (default 4096). Embeddings are synthetic: a hierarchy of clusters
(topic -> subtopic -> item) plus groups of exact duplicates (identical items: they share a full
quantizer code and widen the collision level; --max-group sets the largest).

Examples (from the repository root):

  python benchmarks/scale.py -o bench/scale.json --md bench/scale.md
  python benchmarks/scale.py --items 10000 --users 100000 --decode-users 1000     # a quick look
  python benchmarks/scale.py --items 100000,1000000 --users 69000,690000 --steps 20 --section scale-stages-cpu
                                                     # every stage at 1M and 10M interactions
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine, machine_line, publish, run_step_subprocess, write_json  # noqa: E402

MODALITIES = ("text", "image", "collab")


# ---- steps that run inside a child process ------------------------------------------------------------
def step_generate(work: Path, n_items: int, n_users: int, dim: int, max_group: int, seed: int) -> dict:
    import torch

    from mscg.artifacts.embeddings import Embeddings, save_embeddings

    rng = np.random.default_rng(seed)
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    item_ids = [f"i{k}" for k in range(n_items)]
    n_topics = max(8, n_items // 2000)
    topic = rng.integers(0, n_topics, n_items)
    with open(data / "items.jsonl", "w", encoding="utf-8") as f:
        for start in range(0, n_items, 50_000):
            f.write("".join(f'{{"item_id": "i{k}", "text": "item {k} of topic {topic[k]}"}}\n'
                            for k in range(start, min(n_items, start + 50_000))))
    (data / "interactions.jsonl").write_text("")  # not read by these steps (train writes its own)
    for m, modality in enumerate(MODALITIES):
        topic_centres = rng.normal(size=(n_topics, dim)).astype(np.float32)
        sub = rng.integers(0, 16, n_items)
        sub_centres = rng.normal(scale=0.5, size=(n_topics, 16, dim)).astype(np.float32)
        x = (topic_centres[topic] + sub_centres[topic, sub]
             + rng.normal(scale=0.3, size=(n_items, dim)).astype(np.float32))
        # groups of identical items (sizes ~ Zipf, the largest `max_group`) covering ~1% of the catalogue
        sizes = np.minimum(rng.zipf(2.0, size=max(1, n_items // 300)) + 1, max_group)
        sizes[0] = max_group
        members = rng.permutation(n_items)[: int(sizes.sum())]
        for group in np.split(members, np.cumsum(sizes)[:-1]):
            x[group] = x[group[0]]
        (work / f"emb_{modality}").mkdir()
        save_embeddings(work / f"emb_{modality}", Embeddings(modality, item_ids, torch.from_numpy(x)),
                        source={"encoder": "synthetic clusters", "seed": seed}, provenance={"seed": seed})
    # users: a topic each, popular items of it (Zipf ranks), 20% anything; 3..50 items, oldest first
    by_topic = np.argsort(topic, kind="stable")  # items grouped by topic
    topic_count = np.bincount(topic, minlength=n_topics)
    topic_start = np.concatenate([[0], np.cumsum(topic_count)[:-1]])
    with open(work / "histories.jsonl", "w", encoding="utf-8") as f:
        for start in range(0, n_users, 20_000):
            n = min(20_000, n_users - start)
            lengths = np.minimum(3 + rng.geometric(1 / 12, n), 50)
            ends = np.cumsum(lengths)
            t = np.repeat(rng.integers(0, n_topics, n), lengths)  # (picks,) the user's topic
            rank = np.minimum(rng.zipf(1.3, len(t)) - 1, topic_count[t] - 1)
            pick = by_topic[topic_start[t] + rank]
            anywhere = rng.random(len(t)) < 0.2
            pick[anywhere] = rng.integers(0, n_items, int(anywhere.sum()))
            f.write("".join(f'{{"user_id": "u{start + u}", "history": [' + ", ".join(f'"i{k}"' for k in h) + "]}\n"
                            for u, h in enumerate(np.split(pick, ends[:-1]))))
    return {"history_file_mib": round((work / "histories.jsonl").stat().st_size / 2**20, 1)}


def step_trie(work: Path) -> dict:
    import torch

    from mscg.artifacts.codes import load_codes
    from mscg.decoding.trie import CodeTrie

    start = time.perf_counter()
    codes = load_codes(work / "codes")
    loaded = time.perf_counter()
    vocab = codes.vocab
    trie = CodeTrie(codes.codes[:, vocab.columns_of("collab")], [s.size for s in vocab.slots_of("collab")])
    built = time.perf_counter()
    probe = torch.arange(min(4096, len(codes.item_ids)))
    trie.allowed_along(probe)  # the training-time masks, for a batch of targets
    return {"load_codes_s": round(loaded - start, 3), "build_s": round(built - loaded, 3),
            "trie_bytes": trie.memory_bytes(), "trie_bytes_per_item": round(trie.memory_bytes() / trie.n_items, 1),
            "levels": [{"size": s, "nodes": n, "layout": trie.layout(j)}
                       for j, (s, n) in enumerate(zip(trie.sizes, trie.n_nodes))],
            "codes_bytes_per_item": len(vocab.slots) * (1 if max(s.size for s in vocab.slots) <= 256 else 2),
            "collision_sizes": {m: vocab.slots_of(m)[-1].size for m in vocab.modalities}}


def step_model(work: Path, seed: int) -> dict:
    """A randomly initialised generator with `mscg train`'s default architecture, saved as a model dir."""
    import torch

    from mscg.artifacts.codes import load_codes
    from mscg.artifacts.modeldir import copy_codes_into, save_model_dir
    from mscg.recommenders.defaults import DEFAULT_BEAM_SIZE
    from mscg.models.generator import Generator, GeneratorConfig

    codes = load_codes(work / "codes")
    config = GeneratorConfig(vocabulary=codes.vocab.to_json(), modalities=list(codes.vocab.modalities))
    torch.manual_seed(seed)
    model = Generator(config)
    out = work / "model"
    out.mkdir(exist_ok=True)
    n_params = sum(p.numel() for p in model.parameters())
    save_model_dir(out, "model", model, config.to_json(), item_ids=codes.item_ids,
                   codes=copy_codes_into(out, work / "codes"), beam_size=DEFAULT_BEAM_SIZE, parameters=n_params,
                   training={"note": "random initialisation (scale benchmark)"}, provenance={"seed": seed})
    return {"parameters": n_params}


def sample_users(path: Path, n_users: int, n_decode: int):
    """Every (n_users // n_decode)-th line of the history file, streamed."""
    stride = max(1, n_users // n_decode)
    taken = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f):
            if line_no % stride == 0:
                yield json.loads(line)
                taken += 1
                if taken == n_decode:
                    return


def step_decode(work: Path, n_users: int, n_decode: int, beam: int, batch_size: int, device: str) -> dict:
    import torch

    from mscg import recommenders
    from mscg.devices import resolve_device

    start = time.perf_counter()
    rec = recommenders.load(work / "model", resolve_device(device), beam_size=beam, codes_path=None)
    index = {item_id: i for i, item_id in enumerate(rec.item_ids)}
    loaded = time.perf_counter()
    decoded = 0
    decode_s = 0.0
    users = sample_users(work / "histories.jsonl", n_users, n_decode)
    with open(work / "recommendations.jsonl", "w", encoding="utf-8") as out:
        while True:
            batch = [u for _, u in zip(range(batch_size), users)]
            if not batch:
                break
            histories = [np.array([index[i] for i in u["history"]], dtype=np.int64) for u in batch]
            t = time.perf_counter()
            items, scores = rec.top_k(histories, min(20, beam))
            decode_s += time.perf_counter() - t
            assert bool((items >= 0).all()), "every user gets real items"
            out.write("".join(json.dumps({"user_id": u["user_id"], "items": [rec.item_ids[i] for i in row]}) + "\n"
                              for u, row in zip(batch, items.tolist())))
            decoded += len(batch)
    total = time.perf_counter() - start
    return {"users": decoded, "beam": beam, "batch_size": batch_size, "load_s": round(loaded - start, 3),
            "decode_s": round(decode_s, 3), "users_per_s": round(decoded / decode_s, 1), "total_s": round(total, 3),
            "torch_threads": torch.get_num_threads()}


def step_train_data(work: Path, n_train: int) -> dict:
    """interactions.jsonl from the first `n_train` users of the history file (timestamps = positions)."""
    with open(work / "histories.jsonl", encoding="utf-8") as f, open(work / "data" / "interactions.jsonl", "w") as out:
        for line_no, line in enumerate(f):
            if line_no == n_train:
                break
            u = json.loads(line)
            out.write("".join(json.dumps({"user_id": u["user_id"], "item_id": i, "timestamp": t}) + "\n"
                              for t, i in enumerate(u["history"])))
    return {}


def step_interactions(work: Path) -> dict:
    """data/interactions.jsonl from every user of the history file (timestamps = positions), streamed."""
    count = 0
    with open(work / "histories.jsonl", encoding="utf-8") as f, open(work / "data" / "interactions.jsonl", "w") as out:
        for line in f:
            u = json.loads(line)
            out.write("".join(f'{{"user_id": "{u["user_id"]}", "item_id": "{i}", "timestamp": {t}}}\n'
                              for t, i in enumerate(u["history"])))
            count += len(u["history"])
    return {"interactions": count, "file_mib": round((work / "data" / "interactions.jsonl").stat().st_size / 2**20, 1)}


def step_read(work: Path) -> dict:
    """Read and split the dataset as every stage does; the memory it holds per interaction afterwards."""
    import resource

    from mscg.data.split import load_dataset

    before = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()  # resident now
    start = time.perf_counter()
    ds = load_dataset(work / "data")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    n = len(ds.interactions)
    return {"seconds": round(seconds, 2), "interactions": n, "users": len(ds.split), "items": len(ds.catalogue),
            "peak_bytes_per_interaction": round((peak - before) / n, 1)}


def timed_steps(events, k: int) -> dict:
    """Drive a fit's events (a loop of one epoch) for 1 + k optimizer steps: the set-up's seconds, then the
    seconds per step over the last k (the first warms up), and the epoch they project."""
    start = time.perf_counter()
    info: dict = {}
    total = None
    for event in events:
        if event.kind == "info":
            info.update(event.info)
        elif event.kind == "start":
            total, started = event.total_steps, time.perf_counter()
        elif event.kind == "step" and event.step == 1:
            first = time.perf_counter()
        elif event.kind == "step" and event.step == 1 + k:
            break
        if event.kind in ("epoch", "done"):
            raise SystemExit(f"the epoch ended before {1 + k} steps: lower --steps")
    per_step = (time.perf_counter() - first) / k
    return {"setup_s": round(started - start, 2), "steps_timed": k, "seconds_per_step": round(per_step, 4),
            "steps_per_epoch": total, "epoch_s_projected": round(per_step * total, 1),
            **{key: info[key] for key in ("samples", "targets", "parameters", "samples_per_step") if key in info}}


def step_collab(work: Path, k: int, negatives: int | None, device: str) -> dict:
    """`mscg collab`'s training at its defaults for this catalogue (or `negatives`), k steps."""
    from dataclasses import replace

    from mscg.data.split import load_dataset
    from mscg.models.sasrec_config import SASRecConfig
    from mscg.devices import resolve_device
    from mscg.training.sasrec import SASREC_LOOP, fit_sasrec

    ds = load_dataset(work / "data")
    config = replace(SASRecConfig(n_items=0), negatives=negatives).resolved(len(ds.catalogue))
    events = fit_sasrec(config, replace(SASREC_LOOP, epochs=1), ds, device=resolve_device(device))
    return {"negatives": config.negatives, "pack": config.pack, **timed_steps(events, k)}


def step_train(work: Path, k: int, device: str) -> dict:
    """`mscg train`'s training at its defaults on the codes, k steps."""
    from dataclasses import replace

    from mscg.artifacts.codes import load_codes
    from mscg.data.split import load_dataset
    from mscg.models.generator import GeneratorConfig
    from mscg.devices import resolve_device
    from mscg.training.generator import GENERATOR_LOOP, fit_generator

    ds = load_dataset(work / "data")
    codes = load_codes(work / "codes")
    config = GeneratorConfig(vocabulary=codes.vocab.to_json(), modalities=list(codes.vocab.modalities))
    events = fit_generator(config, replace(GENERATOR_LOOP, epochs=1), codes, ds, device=resolve_device(device),
                           valid_users=256)
    return timed_steps(events, k)


# ---- the driver -------------------------------------------------------------------------------------
def child(step: str, args) -> None:
    """Run one step in this (child) process and print its result as the last line of stdout."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    if step == "generate":
        out = step_generate(work, args.n, args.users[0], args.dim, args.max_group, args.seed)
    elif step == "trie":
        out = step_trie(work)
    elif step == "model":
        out = step_model(work, args.seed)
    elif step == "train-data":
        out = step_train_data(work, args.train_users)
    elif step == "decode":
        out = step_decode(work, args.users[0], args.decode_users, args.beam, 256, args.device)
    elif step == "interactions":
        out = step_interactions(work)
    elif step == "read":
        out = step_read(work)
    elif step in ("collab", "collab-full"):
        out = step_collab(work, args.steps, 0 if step == "collab-full" else None, args.device)
    elif step == "train":
        out = step_train(work, args.steps, args.device)
    else:
        raise SystemExit(f"unknown step {step}")
    (work / f"step_{step}.json").write_text(json.dumps(out))


def run_size(n: int, n_users: int, args) -> dict:
    work = Path(args.workdir) / f"n{n}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log = work / "log.txt"
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    if args.threads:
        env.update({"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)})
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--work", str(work), "--n", str(n), "--users", str(n_users), "--dim", str(args.dim),
              "--max-group", str(args.max_group), "--seed", str(args.seed), "--decode-users", str(args.decode_users),
              "--beam", str(args.beam), "--device", args.device, "--threads", str(args.threads),
              "--train-users", str(args.train_users), "--steps", str(args.steps)]
    mscg = [sys.executable, "-m", "mscg"]
    dev = ["--device", args.device]
    steps = [("generate", me + ["--child", "generate"] + common)]
    if args.steps:
        steps += [(name, me + ["--child", name] + common) for name in ("interactions", "read", "collab")]
        if n <= args.full_softmax_max:
            steps.append(("collab-full", me + ["--child", "collab-full"] + common))
    for m in MODALITIES:
        steps.append((f"quantize {m}", mscg + ["quantize", "--modality", m, "--embeddings", str(work / f"emb_{m}"),
                                              "-o", str(work / f"q_{m}"), "--codebook-size", "256", "--n-levels", "3",
                                              "--seed", str(args.seed)]))
    steps.append(("assign-codes", mscg + ["assign-codes", "-d", str(work / "data"), "-o", str(work / "codes"), *dev,
                                          *sum((["-q", str(work / f"q_{m}")] for m in MODALITIES), [])]))
    steps.append(("trie", me + ["--child", "trie"] + common))
    if args.steps:
        steps.append(("train", me + ["--child", "train"] + common))
    if args.train_users:
        steps.append(("train-data", me + ["--child", "train-data"] + common))
        steps.append(("train (1 epoch)", mscg + ["train", "-d", str(work / "data"), "--codes", str(work / "codes"),
                                                 "-o", str(work / "model"), "--epochs", "1", "--valid-users", "256",
                                                 *dev]))
    else:
        steps.append(("model", me + ["--child", "model"] + common))
    steps.append(("decode", me + ["--child", "decode"] + common))
    results = []
    for name, argv in steps:
        print(f"[{n:,} items] {name} ...", file=sys.stderr, flush=True)
        r = run_step_subprocess(argv, env=env, log=log, timeout=args.timeout)
        r["step"] = name
        r["under_limit"] = r["peak_rss_mib"] <= args.limit_mib
        key = name.split(" ")[0]
        out_file = work / f"step_{key}.json"
        if out_file.exists():
            r["result"] = json.loads(out_file.read_text())
        r["argv"] = " ".join(Path(a).name if a == sys.executable else a for a in argv)
        results.append(r)
        failed = "" if r["returncode"] == 0 else f", FAILED (exit {r['returncode']}), see {log}"
        print(f"[{n:,} items] {name}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB{failed}",
              file=sys.stderr, flush=True)
        if name.startswith("train (") and (work / "model" / "meta.json").exists():  # training throughput
            meta = json.loads((work / "model" / "meta.json").read_text())
            r["result"] = {"samples_per_second": meta.get("training", {}).get("samples_per_second")}
        if r["returncode"] != 0:
            break
    if not args.keep:
        for p in work.iterdir():
            if p.name != "log.txt":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    return {"items": n, "steps": results}


def markdown(result: dict) -> str:
    m = result["machine"]
    sizes = [r["items"] for r in result["sizes"]]
    users = "/".join(f"{u:,}" for u in result["settings"]["users"])
    lines = [f"Scale simulation: {users} users' histories, decoding "
             f"{result['settings']['decode_users']:,} users at beam {result['settings']['beam']}; 3 modalities x "
             f"(3 x 256 + collision level); limit {result['settings']['limit_mib']:,} MiB per step", "",
             f"Machine: {machine_line(m)}", f"Command: `{m['command']}`", ""]
    head = ["step"] + [f"{n:,} items: s / peak MiB" for n in sizes]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = list(dict.fromkeys(s["step"] for r in result["sizes"] for s in r["steps"]))
    for name in names:
        cells = [name]
        for r in result["sizes"]:
            s = next((s for s in r["steps"] if s["step"] == name), None)
            if s is None:
                cells.append("—")
            else:
                flag = "" if s["under_limit"] and s["returncode"] == 0 else (" FAILED" if s["returncode"] else " OVER")
                cells.append(f"{s['seconds']:.1f} / {s['peak_rss_mib']:,.0f}{flag}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in result["sizes"]:
        by = {s["step"]: s.get("result", {}) for s in r["steps"]}
        t, d = by.get("trie", {}), by.get("decode", {})
        if t:
            layout = ", ".join(f"{lv['nodes']:,}x{lv['size']} {lv['layout']}" for lv in t["levels"])
            lines.append(f"- {r['items']:,} items: trie {t['trie_bytes'] / 2**20:.1f} MiB "
                         f"({t['trie_bytes_per_item']} B/item; levels {layout}), built in {t['build_s']} s; codes "
                         f"{t['codes_bytes_per_item']} B/item vs a 64-d float32 SASRec table 256 B/item; collision "
                         f"levels {t['collision_sizes']}")
        if d:
            lines.append(f"  decode: {d['users']:,} users in {d['decode_s']} s = {d['users_per_s']} users/s "
                         f"(load {d['load_s']} s, {d['torch_threads']} threads)")
        if by.get("read"):
            rd = by["read"]
            lines.append(f"  read + split: {rd['interactions']:,} interactions of {rd['users']:,} users in "
                         f"{rd['seconds']} s, {rd['peak_bytes_per_interaction']} bytes per interaction at the peak")
        for name in ("collab", "collab-full", "train"):
            st = by.get(name)
            if st:
                how = (f" ({'full softmax' if not st['negatives'] else str(st['negatives']) + ' sampled negatives'}"
                       f", {'packed' if st['pack'] else 'padded'} windows)" if "negatives" in st else "")
                lines.append(f"  {name.replace('-full', '')}{how}: {st['seconds_per_step']} s a step over "
                             f"{st['steps_timed']} steps, {st['steps_per_epoch']:,} steps an epoch: an epoch "
                             f"~{st['epoch_s_projected'] / 60:,.1f} min (set-up {st['setup_s']} s)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000, 400_000],
                   help="catalogue sizes, comma-separated")
    p.add_argument("--users", type=lambda s: [int(x) for x in s.split(",")], default=[1_000_000],
                   help="users in the generated history file (~14.5 interactions each), one number for every "
                        "catalogue size or one per size, comma-separated")
    p.add_argument("--decode-users", type=int, default=10_000, help="users decoded (sampled from the file)")
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--dim", type=int, default=32, help="dimension of the synthetic embeddings")
    p.add_argument("--max-group", type=int, default=100, help="largest group of identical items per modality")
    p.add_argument("--train-users", type=int, default=0, help="train the generator 1 epoch on this many users "
                                                              "(default: random initialisation)")
    p.add_argument("--steps", type=int, default=0, help="also read + split, and time this many optimizer steps "
                                                        "of collab and train (the stages of a whole pipeline)")
    p.add_argument("--full-softmax-max", type=int, default=100_000, help="with --steps: also time collab's full "
                                                                       "softmax up to this many items")
    p.add_argument("--limit-mib", type=float, default=4096, help="peak RSS budget per step")
    p.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per step before it is killed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch/OpenMP threads per step (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="/tmp/mscg-scale", help="scratch space (several GB at 400k items)")
    p.add_argument("--keep", action="store_true", help="keep the generated data and artifacts")
    p.add_argument("-o", "--output", type=Path, help="write the JSON here (default: stdout)")
    p.add_argument("--md", type=Path, help="write the Markdown table here (default: stderr)")
    p.add_argument("--section", help="also write the table into BENCHMARKS.md under this section name "
                                     "(e.g. scale-cpu)")
    # internal: one step in a child process
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args)
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = {k: getattr(args, k) for k in ("items", "users", "decode_users", "beam", "dim", "max_group",
                                              "train_users", "limit_mib", "device", "threads", "seed")}
    result = {"benchmark": "scale", "machine": machine(args.device), "settings": settings, "sizes": []}
    users = args.users * len(args.items) if len(args.users) == 1 else args.users
    if len(users) != len(args.items):
        raise SystemExit("--users: one number, or one per --items size")
    for n, n_users in zip(args.items, users):
        result["sizes"].append(run_size(n, n_users, args))
        write_json(args.output, result) if args.output else None  # partial results survive an interruption
    over = [(r["items"], s["step"]) for r in result["sizes"] for s in r["steps"] if not s["under_limit"]]
    result["all_under_limit"] = not over
    publish(result, markdown(result), json_path=args.output, md_path=args.md, section=args.section)


if __name__ == "__main__":
    main()
