"""`mscg serve`: the model loaded once, answering recommendation requests over HTTP (JSON) until stopped."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from mscg.recommenders.defaults import EVAL_BATCH_SIZE
from mscg.commands._common import DeviceOpt, NoVerifyOpt, user_errors
from mscg.console import info, stderr, warn
from mscg.errors import UsageError


def serve(model_path: Path, *, host: str = "127.0.0.1", port: int = 8000, k: int = 10, device: str = "auto",
          beam_size: int | None = None, codes: Path | None = None, verify: bool = True, on_ready=None,
          max_batch: int = EVAL_BATCH_SIZE) -> None:
    """Serve until interrupted (Ctrl-C, SIGTERM). `on_ready(url)` is called once the socket listens.
    `max_batch`: users ranked together in one model call (1: each request alone)."""
    from mscg.api import load
    from mscg.serve import MAX_K, listen, make_app, make_server

    if max_batch < 1:
        raise UsageError(f"--max-batch {max_batch} must be at least 1 (1: no micro-batching)")

    if not 1 <= k <= MAX_K:
        raise UsageError(f"-k {k} must be from 1 to {MAX_K:,}")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} must be from 0 to 65535 (0: any free port)")
    model = load(model_path, device, beam_size=beam_size, codes=codes, verify=verify)
    try:
        sock = listen(host, port)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port (0: any free "
                         "one) or --host") from None
    server = make_server(make_app(model, k, on_error=warn, max_batch=max_batch))

    def stop(signum, frame):
        raise KeyboardInterrupt

    # uvicorn handles SIGINT and SIGTERM while it runs (it finishes the requests in flight), then raises the
    # signal again for the handler it found: this one, or Python's KeyboardInterrupt for SIGINT.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        if on_ready is not None:
            on_ready(f"http://{shown}:{bound_port}")
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        sock.close()


@user_errors
def serve_cli(
    model: Annotated[Path, typer.Argument(help="Model directory (from train, or collab --model-out).",
                                          show_default=False)],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one (the start-up line names "
                                           "it).")] = 8000,
    k: Annotated[int, typer.Option("-k", "--k", help="Items per user when a request gives no \"k\".")] = 10,
    beam_size: Annotated[int | None, typer.Option(help="Generator beam size (default: as trained); a request for "
                                                       "K items searches a beam of at least K.")] = None,
    codes: Annotated[Path | None, typer.Option(help="Codes directory (default: the generator's own; another must "
                                                    "have the same SHA-256, e.g. a copy).")] = None,
    max_batch: Annotated[int, typer.Option(help="Users ranked together in one model call when requests "
                                                "arrive at once; 1: each request alone, its scores then "
                                                "bit-identical to the Python API's.")] = EVAL_BATCH_SIZE,
    no_verify: NoVerifyOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Serve recommendations over HTTP (FastAPI on uvicorn): POST /recommend with {"history": \\[item_id, ...],
    "k": 10} (or {"users": \\[{"user_id": ..., "history": \\[...]}, ...]}) answers {"items", "scores",
    "score_kind"}, history items left out unless "include_history": true; GET /health describes the model; GET
    /docs (and /openapi.json) documents the API. Every error is {"error": ...}: 400 for a bad request, 404, 405, 413 for
    a body over 16 MiB. Concurrent requests are ranked together (micro-batching) in one model thread. The
    model is loaded once; Ctrl-C or SIGTERM stops the server.

    [bold]Examples[/bold]

      mscg serve work/generator --port 8000

      curl -s localhost:8000/recommend -d '{"history": ["50", "172", "181"], "k": 5}'
    """
    def started(url: str) -> None:  # printed even under MSCG_QUIET: with --port 0 it is how one learns the port
        stderr.print(f"serving {model} at {url} (POST /recommend, GET /health, API docs at {url}/docs); Ctrl-C "
                     "stops", soft_wrap=True, markup=False)

    serve(model, host=host, port=port, k=k, device=device, beam_size=beam_size, codes=codes, verify=not no_verify,
          on_ready=started, max_batch=max_batch)
    info("stopped")
