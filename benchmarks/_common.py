"""Helpers shared by the benchmark scripts: machine description, timing, peak memory, and the
reference decoder (HF `generate` with beam search and a trie `prefix_allowed_tokens_fn`).

Benchmarks are scripts, not part of the package: run them from the repository root, e.g.
`python benchmarks/decoding.py --help`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


# ---- machine and run description ------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores visible, torch threads, GPU, versions, date, command."""
    import transformers

    device = torch.device(device)
    info: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_line(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    return (f"{info['date']} | {info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads){gpu} | "
            f"device {info['device']} | torch {info['torch']}, transformers {info['transformers']} | "
            f"load average {info['load_average']}")


def quiet_transformers() -> None:
    """Silence generate()'s advisory warnings (we set every generation parameter explicitly)."""
    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    warnings.filterwarnings("ignore", category=FutureWarning)


# ---- timing and memory ----------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, *, repeat: int = 1, warmup: int = 0) -> tuple[Any, float]:
    """(last result, best wall seconds over `repeat` runs) — best-of-n is robust to a busy machine."""
    for _ in range(warmup):
        fn()
    best, out = float("inf"), None
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return out, best


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size (MiB) of this process (or of its finished children) so far. Linux: KiB."""
    return resource.getrusage(who).ru_maxrss / 1024


def run_step_subprocess(argv: list[str], *, env: dict[str, str] | None = None, timeout: float | None = None,
                        log: Path | None = None) -> dict[str, Any]:
    """Run one step as a child process; its wall time and peak RSS (MiB).

    The peak RSS of exactly that child is read from os.wait4's rusage, so steps do not mix.
    """
    start = time.perf_counter()
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=out, stderr=out)
        deadline = None if timeout is None else start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log is not None:
            out.close()
    return {"seconds": round(time.perf_counter() - start, 3), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "returncode": proc.returncode, "argv": argv}


def write_json(path: Path | None, obj: Any) -> None:
    text = json.dumps(obj, indent=2) + "\n"
    if path is None or str(path) == "-":
        sys.stdout.write(text)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")


def publish(result: dict[str, Any], md: str, *, json_path: Path | None, md_path: Path | None,
            section: str | None) -> None:
    """A benchmark's outputs: the Markdown table to stderr (and `md_path`, and BENCHMARKS.md's `section`),
    the JSON to `json_path` (stdout without one)."""
    if md_path:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(md, encoding="utf-8")
    sys.stderr.write("\n" + md)
    if section:
        from benchmarks.report import write_section

        write_section(section, md)
    write_json(json_path, result)


# ---- the reference decoder: HF generate with a trie prefix function ------------------------------------
def prefix_table(model, trie) -> dict[tuple[int, ...], list[int]]:
    """{decoded vocabulary ids so far (after the decoder start): allowed next vocabulary ids}, from the
    trie's own tables — a dict trie, the usual way a prefix function is written for HF generate."""
    import numpy as np

    table: dict[tuple[int, ...], set[int]] = {}
    node_codes: dict[int, tuple[int, ...]] = {0: ()}  # node -> its token prefix, at the current depth
    for level in range(trie.depth):
        offset = model.level_offsets[level]
        next_codes: dict[int, tuple[int, ...]] = {}
        nodes = np.array(sorted(node_codes), dtype=np.int64)
        children = trie.children(level, torch.from_numpy(nodes).to(trie.node_of.device)).cpu().numpy()  # (n, size)
        for row, node in enumerate(nodes.tolist()):
            prefix = node_codes[node]
            codes = np.flatnonzero(children[row] >= 0)
            table[prefix] = [offset + int(c) for c in codes]
            if level + 1 < trie.depth:
                for c in codes.tolist():
                    next_codes[int(children[row, c])] = prefix + (offset + c,)
        node_codes = next_codes
    return {k: sorted(v) for k, v in table.items()}


_TRANSFORMERS_T5 = weakref.WeakKeyDictionary()


def transformers_t5(model):
    """transformers' T5ForConditionalGeneration holding the generator's T5 weights (mscg.models.t5 has its
    layout and state-dict keys), in the generator's mode, device and dtype: the reference to check against.
    Built once per model (its weights as at the first call), without touching the global RNG."""
    from transformers import T5ForConditionalGeneration

    if model not in _TRANSFORMERS_T5:
        t5 = model.t5
        with torch.random.fork_rng(devices=[]):
            hf = T5ForConditionalGeneration(model.config.t5_config())
        hf.load_state_dict(t5.state_dict())
        _TRANSFORMERS_T5[model] = hf.to(device=t5.shared.weight.device, dtype=t5.shared.weight.dtype)
    return _TRANSFORMERS_T5[model].train(model.t5.training)


def hf_beam_search(model, history: torch.Tensor, trie, beam_size: int, prefixes: dict | None = None,
                   states: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search with transformers' `generate(num_beams=beam_size, prefix_allowed_tokens_fn=...)` on the
    generator's T5 weights (`transformers_t5`), over the
    same encoder states: -> items (B, beam_size) (-1 for a sequence that is not an item), scores (B, beam_size).

    Scores are HF's: log_softmax over the full vocabulary, then masked, summed over steps
    (length_penalty=0). They equal mscg's only for a model whose `config.constraint` is "off".
    """
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    from transformers.modeling_outputs import BaseModelOutput

    from mscg.artifacts.codes import BOS, PAD

    prefixes = prefix_table(model, trie) if prefixes is None else prefixes
    dead = [PAD]  # a prefix outside the trie (a beam already at -inf) may continue anywhere; it never wins

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        return prefixes.get(tuple(sent[1:].tolist()), dead)

    with torch.no_grad():
        enc, mask = states if states is not None else model.encode(history)
        B = enc.shape[0]
        out = transformers_t5(model).generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=enc), attention_mask=mask,
            decoder_start_token_id=BOS, bos_token_id=BOS, pad_token_id=PAD, eos_token_id=None,
            num_beams=beam_size, num_return_sequences=beam_size, max_new_tokens=trie.depth,
            min_new_tokens=trie.depth, prefix_allowed_tokens_fn=allowed, do_sample=False, length_penalty=0.0,
            early_stopping=True, return_dict_in_generate=True, output_scores=True, use_cache=True,
            # NOTE: an empty cache of our own: transformers 5.x sizes the cache it creates from the
            # *encoder's* layer count (T5Config.num_layers), which breaks when num_decoder_layers differs.
            past_key_values=EncoderDecoderCache(DynamicCache(), DynamicCache()),
        )
    seqs = out.sequences[:, 1:1 + trie.depth].reshape(B, beam_size, -1)  # (B, beam, D) vocabulary ids
    scores = out.sequences_scores.reshape(B, beam_size).float()
    node = torch.zeros(B, beam_size, dtype=torch.long, device=seqs.device)
    for level in range(trie.depth):
        code = seqs[..., level] - model.level_offsets[level]
        ok = (node >= 0) & (code >= 0) & (code < trie.sizes[level])
        nxt = trie.children(level, node.clamp(min=0).view(-1)).view(B, beam_size, -1)
        node = torch.where(ok, nxt.gather(2, code.clamp(0, trie.sizes[level] - 1)[..., None])[..., 0], -1)
    items = torch.where(torch.isfinite(scores) & (scores > -1e8), node, torch.full_like(node, -1))
    return items, scores


def agreement(a: torch.Tensor, b: torch.Tensor, k: int) -> dict[str, float]:
    """Top-k agreement of two (B, >=k) item lists: identical ordered lists, identical sets, mean overlap@k."""
    a, b = a[:, :k].tolist(), b[:, :k].tolist()
    same_list = sum(x == y for x, y in zip(a, b))
    same_set = sum(set(x) == set(y) for x, y in zip(a, b))
    overlap = sum(len(set(x) & set(y)) / k for x, y in zip(a, b))
    n = max(len(a), 1)
    return {"identical_lists": same_list / n, "identical_sets": same_set / n, "overlap": overlap / n}
