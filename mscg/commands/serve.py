"""`mscg serve`: the model loaded once, answering recommendation requests over HTTP (JSON) until stopped."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from mscg.commands._common import DeviceOpt, NoVerifyOpt, user_errors
from mscg.console import info, stderr, warn
from mscg.errors import UsageError


def serve(model_path: Path, *, host: str = "127.0.0.1", port: int = 8000, k: int = 10, device: str = "auto",
          beam_size: int | None = None, codes: Path | None = None, verify: bool = True, on_ready=None) -> None:
    """Serve until interrupted (Ctrl-C, SIGTERM). `on_ready(url)` is called once the socket listens."""
    from mscg.api import load
    from mscg.serve import MAX_K, make_server

    if not 1 <= k <= MAX_K:
        raise UsageError(f"-k {k} must be from 1 to {MAX_K:,}")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} must be from 0 to 65535 (0: any free port)")
    model = load(model_path, device, beam_size=beam_size, codes=codes, verify=verify)
    if model.kind == "mscg-generator" and beam_size is not None and k > beam_size:
        raise UsageError(f"-k {k} is larger than --beam-size {beam_size}; raise --beam-size to at least {k}")
    try:
        server = make_server(model, host, port, k, on_error=warn)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port (0: any free "
                         "one) or --host") from None

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        bound_host, bound_port = server.server_address[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        if on_ready is not None:
            on_ready(f"http://{shown}:{bound_port}")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()


@user_errors
def serve_cli(
    model: Annotated[Path, typer.Argument(help="Model directory (from train, or collab --model-out).",
                                          show_default=False)],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one (the start-up line names "
                                           "it).")] = 8000,
    k: Annotated[int, typer.Option("-k", "--k", help="Items per user when a request gives no \"k\".")] = 10,
    beam_size: Annotated[int | None, typer.Option(help="Generator beam size (default: as trained, "
                                                       "at least K).")] = None,
    codes: Annotated[Path | None, typer.Option(help="Codes directory (default: the generator's own; another must "
                                                    "have the same SHA-256, e.g. a copy).")] = None,
    no_verify: NoVerifyOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Serve recommendations over HTTP: POST /recommend with {"history": \\[item_id, ...], "k": 10} (or
    {"users": \\[{"user_id": ..., "history": \\[...]}, ...]}) answers {"items", "scores"}, history items left
    out unless "include_history": true; GET /health describes the model. A bad request gets a 400 with
    {"error": ...}. The model is loaded once; Ctrl-C or SIGTERM stops the server.

    [bold]Examples[/bold]

      mscg serve work/generator --port 8000

      curl -s localhost:8000/recommend -d '{"history": ["50", "172", "181"], "k": 5}'
    """
    def started(url: str) -> None:  # printed even under MSCG_QUIET: with --port 0 it is how one learns the port
        stderr.print(f"serving {model} at {url} (POST /recommend, GET /health); Ctrl-C stops", soft_wrap=True,
                     markup=False)

    serve(model, host=host, port=port, k=k, device=device, beam_size=beam_size, codes=codes, verify=not no_verify,
          on_ready=started)
    info("stopped")
