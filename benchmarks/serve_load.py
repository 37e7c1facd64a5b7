"""`mscg serve` under load: requests/s, latency and failed requests for 1 to 256 concurrent clients.

    python benchmarks/serve_load.py --generator work/mscgrec --sasrec work/sasrec --data data/ml-100k
    python benchmarks/serve_load.py --build /tmp/serve-work      # first runs examples/pipeline.sh on own-data

For each model it starts a real `mscg serve MODEL --port 0` process (the URL read from its start-up line on
stderr), then, for each client count, runs that many clients at once for --seconds (after --warmup seconds
not counted): each sends single-user POST /recommend requests one after another, the history of a user of
--data drawn at random (the last --max-history items, every id known to the model), k = --k. By default each
request opens its own connection (as urllib does; the load that made the old server reset connections);
--keep-alive reuses one per client. A request fails on a connection error, a timeout (--timeout), a status
other than 200, or an answer without "items". Reported per model and client count: requests answered,
failed, requests/s, p50 and p99 latency (ms, connection set-up included), and the throughput relative to
one client. The clients run in this process (asyncio), on the same machine as the server.

Targets: 256 concurrent clients with zero failed requests; at 64 clients, the generator's throughput at least
5x that of one client (micro-batching).

Writes benchmarks/results/NAME.{json,md} (NAME: --name, default serve-load) and the BENCHMARKS.md section NAME.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, publish, stamp

from benchmarks._common import machine


def user_histories(data: Path, known: set[str], max_history: int) -> list[list[str]]:
    """Each user's items in time order (the last `max_history`, ids the model knows), from interactions.jsonl."""
    rows: dict[str, list[tuple]] = {}
    with open(data / "interactions.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows.setdefault(str(r["user_id"]), []).append((r.get("timestamp", 0), str(r["item_id"])))
    histories = []
    for events in rows.values():
        items = [item for _, item in sorted(events, key=lambda e: e[0]) if item in known]
        if items:
            histories.append(items[-max_history:])
    return histories


class Server:
    """`mscg serve MODEL --port 0` in a child process; `url` once it listens."""

    def __init__(self, model: Path, k: int, device: str, extra: list[str], threads: str = "auto"):
        argv = [sys.executable, "-m", "mscg", "serve", str(model), "--port", "0", "-k", str(k), "--device", device,
                *extra]
        self.argv = argv
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if threads != "auto":  # torch's intra-op threads (default: one per core)
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stderr], daemon=True).start()
        self.stderr: list[str] = []
        deadline = time.monotonic() + 300
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                raise SystemExit(f"{shlex.join(argv)} did not start in 300 s: {''.join(self.stderr)}") from None
            self.stderr.append(line)
            found = re.search(r" at (http://[^ ]+) ", line)
            if found:
                self.url = found.group(1)
                break
            if self.proc.poll() is not None:
                raise SystemExit(f"{shlex.join(argv)} failed: {''.join(self.stderr)}")
        host_port = self.url.removeprefix("http://")
        self.host, port = host_port.rsplit(":", 1)
        self.host = self.host.strip("[]")
        self.port = int(port)

    def stop(self) -> dict:
        """SIGTERM; its exit code and what it wrote on stderr after the start-up line."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        time.sleep(0.2)
        while not self.lines.empty():
            self.stderr.append(self.lines.get())
        return {"exit_code": code, "stderr_after_start": [line.rstrip() for line in self.stderr[1:]]}


async def exchange(reader, writer, host: str, body: bytes, keep_alive: bool) -> tuple[int, bytes]:
    connection = b"keep-alive" if keep_alive else b"close"
    writer.write(b"POST /recommend HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                 b"Connection: %s\r\n\r\n%s" % (host.encode(), len(body), connection, body))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    data = await reader.readexactly(int(length.group(1))) if length else await reader.read()
    return status, data


async def run_clients(server: Server, bodies: list[bytes], clients: int, seconds: float, warmup: float,
                      timeout: float, keep_alive: bool, seed: int) -> dict:
    """`clients` clients sending requests back to back for warmup + seconds; the counted part's numbers."""
    start = time.perf_counter()
    counted_from, stop_at = start + warmup, start + warmup + seconds
    latencies: list[float] = []
    failures: Counter = Counter()

    async def client(n: int) -> None:
        rng = random.Random(seed * 100_003 + n)
        reader = writer = None
        while time.perf_counter() < stop_at:
            body = bodies[rng.randrange(len(bodies))]
            sent = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(server.host, server.port),
                                                            timeout)
                status, data = await asyncio.wait_for(exchange(reader, writer, server.host, body, keep_alive),
                                                      timeout)
                failed = f"HTTP {status}" if status != 200 else (None if b'"items"' in data else "no items")
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                failed = type(e).__name__
                status = None
            if not keep_alive or failed:
                if writer is not None:
                    writer.close()
                reader = writer = None
            if sent >= counted_from and time.perf_counter() <= stop_at + timeout:
                if failed:
                    failures[failed] += 1
                else:
                    latencies.append(time.perf_counter() - sent)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = min(time.perf_counter(), stop_at) - counted_from
    ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float | None:
        return round(ms[min(len(ms) - 1, int(p / 100 * len(ms)))], 2) if ms else None

    return {"clients": clients, "answered": len(ms), "failed": sum(failures.values()), "failures": dict(failures),
            "seconds": round(elapsed, 2), "requests_per_s": round(len(ms) / elapsed, 1),
            "p50_ms": pct(50), "p99_ms": pct(99), "mean_ms": round(statistics.mean(ms), 2) if ms else None}


def build_models(work: Path) -> tuple[Path, Path, Path]:
    """examples/pipeline.sh on examples/own-data (short budgets): (generator, SASRec, data)."""
    data = ROOT / "examples" / "own-data"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GEN_EPOCHS": os.environ.get("GEN_EPOCHS", "5"),
           "SASREC_EPOCHS": os.environ.get("SASREC_EPOCHS", "20"),
           "MSCG": os.environ.get("MSCG", f"{sys.executable} -m mscg")}
    subprocess.run(["bash", str(ROOT / "examples" / "pipeline.sh"), str(data), str(work)], check=True, env=env)
    return work / "mscgrec", work / "sasrec", data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", type=Path, help="a generator model directory (mscg train)")
    p.add_argument("--sasrec", type=Path, help="a SASRec model directory (mscg collab --model-out)")
    p.add_argument("--data", type=Path, default=ROOT / "examples" / "own-data",
                   help="folder with interactions.jsonl: the users whose histories are sent")
    p.add_argument("--build", type=Path, metavar="WORK",
                   help="without --generator/--sasrec: build both with examples/pipeline.sh on examples/own-data")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64, 256])
    p.add_argument("--seconds", type=float, default=10.0, help="counted seconds per client count")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds per client count before counting")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a request counts as failed")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--max-history", type=int, default=50)
    p.add_argument("--keep-alive", action="store_true", help="one connection per client (default: per request)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--serve-args", default="", help="more flags for mscg serve, e.g. \"--max-batch 1\"")
    p.add_argument("--torch-threads", nargs="+", default=["auto"],
                   help="the server's torch threads (OMP_NUM_THREADS), each a run of its own: auto (one per "
                        "core, torch's default) or a number")
    p.add_argument("--name", default="serve-load", help="results: benchmarks/results/NAME.{json,md}")
    p.add_argument("--note", default="", help="a reading of the numbers, added to the section")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    models = {"generator": args.generator, "sasrec": args.sasrec}
    if args.build and not any(models.values()):
        models["generator"], models["sasrec"], args.data = build_models(args.build)
    models = {kind: path for kind, path in models.items() if path is not None}
    if not models:
        p.error("give --generator and/or --sasrec (model directories), or --build WORK")

    import mscg

    runs = []
    for threads in args.torch_threads:
        for kind, path in models.items():
            known = set(mscg.load(path, "cpu").item_ids)
            histories = user_histories(args.data, known, args.max_history)
            if not histories:
                raise SystemExit(f"no user of {args.data} has an item that {path} knows")
            bodies = [json.dumps({"history": h, "k": args.k}).encode() for h in histories]
            server = Server(path, args.k, args.device, shlex.split(args.serve_args), threads)
            print(f"{kind}: {path} at {server.url} (torch threads {threads}), {len(histories)} user histories",
                  file=sys.stderr, flush=True)
            rows = []
            for clients in args.clients:
                row = asyncio.run(run_clients(server, bodies, clients, args.seconds, args.warmup, args.timeout,
                                              args.keep_alive, args.seed))
                row["load_average"] = round(os.getloadavg()[0], 2)
                print(json.dumps({"model": kind, "torch_threads": threads, **row}), file=sys.stderr, flush=True)
                rows.append(row)
            runs.append({"model": kind, "torch_threads": threads, "path": str(path), "users": len(histories),
                         "rows": rows, **server.stop()})

    results = {"runs": runs, "k": args.k, "keep_alive": args.keep_alive, "seconds": args.seconds,
               "torch_threads": args.torch_threads,
               "warmup": args.warmup, "serve_args": args.serve_args, "data": str(args.data),
               "machine": machine(args.device), "stamp": stamp(args.device), "note": args.note}
    publish(args.name, "`mscg serve` under load", results, markdown(results))


def targets(results: dict) -> list[str]:
    """The targets, each with the measured value and whether it is met, per model and torch threads."""
    lines = []
    for run in results["runs"]:
        name = f"{run['model']} (torch threads {run.get('torch_threads', 'auto')})"
        by_clients = {r["clients"]: r for r in run["rows"]}
        if 256 in by_clients:
            failed = by_clients[256]["failed"]
            lines.append(f"- {name}, 256 concurrent clients, zero failed requests: {failed} failed "
                         f"({'met' if failed == 0 else 'missed'}).")
        if run["model"] == "generator" and 1 in by_clients and 64 in by_clients:
            ratio = by_clients[64]["requests_per_s"] / max(by_clients[1]["requests_per_s"], 1e-9)
            lines.append(f"- {name}, throughput at 64 clients >= 5x one client: {ratio:.1f}x "
                         f"({'met' if ratio >= 5 else f'missed, by a factor {5 / ratio:.1f}'}).")
        if run["exit_code"] != 0 or run["stderr_after_start"] != ["stopped"]:
            lines.append(f"- {name} server: exit {run['exit_code']} on SIGTERM, stderr after start-up: "
                         f"{run['stderr_after_start'][:5]}")
    return lines


def markdown(results: dict) -> str:
    m = results["machine"]
    connection = "one connection per client (keep-alive)" if results["keep_alive"] else "a new connection per request"
    lines = [results["stamp"], "",
             f"{m['cores']} cores, shared by the server and the clients (one asyncio process), and by whatever "
             "else runs on the machine: the load average (1 min) after each row is in the table. Single-user "
             f"requests, k = {results['k']}, {connection}; {results['seconds']:g} s counted per row after "
             f"{results['warmup']:g} s of warm-up; latency includes connecting. Torch threads: the server's "
             "(auto: torch's default, one per core)." + (f" Server flags: `{results['serve_args']}`."
                                                         if results["serve_args"] else ""), "",
             ("| model | torch threads | users | clients | answered | failed | requests/s | vs 1 client | p50 ms "
              "| p99 ms | load |"), "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in results["runs"]:
        one = next((r["requests_per_s"] for r in run["rows"] if r["clients"] == 1), None)
        for r in run["rows"]:
            ratio = f"{r['requests_per_s'] / one:.1f}x" if one else "-"
            failed = f"{r['failed']}" + (f" ({', '.join(f'{k}: {v}' for k, v in r['failures'].items())})"
                                         if r["failed"] else "")
            lines.append(f"| {run['model']} | {run.get('torch_threads', 'auto')} | {run['users']} | {r['clients']} | "
                         f"{r['answered']:,} | {failed} | {r['requests_per_s']:,.1f} | {ratio} | {r['p50_ms']} | "
                         f"{r['p99_ms']} | {r.get('load_average', '-')} |")
    lines += ["", "Targets:", "", *targets(results)]
    if results.get("note"):
        lines += ["", results["note"]]
    lines += [""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
