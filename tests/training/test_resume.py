"""Resume: a training stage killed mid-run continues from its checkpoint with --resume and ends with
exactly the model an uninterrupted run makes (CPU, same seed).

Each test runs the command in another process (a fork of this one, so without start-up cost) that
checkpoints after every step (MSCG_CHECKPOINT_SECONDS=0). Once a few checkpoints are on disk the
process is killed (SIGKILL, or SIGINT = Ctrl-C); the same command is rerun with --resume and its
weights are compared byte for byte with an uninterrupted run made meanwhile in this process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest
import torch

from mscg.artifacts.atomic import partial_path
from tests.helpers import build_tiny_pipeline, invoke, one_thread  # noqa: F401 (fixture)

STEP_CHECKPOINTS = {"MSCG_CHECKPOINT_SECONDS": "0"}  # the forked run checkpoints after every step

COLLAB = ["--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--max-history", "10", "--epochs", "6",
          "--batch-size", "4", "--patience", "100", "--device", "cpu", "--seed", "3"]
TRAIN = ["--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--d-ff", "32", "--max-history", "5",
         "--valid-users", "10", "--beam-size", "10", "--epochs", "3", "--batch-size", "16", "--patience", "100",
         "--device", "cpu", "--seed", "3"]
RQVAE = ["--method", "rq-vae", "--modality", "text", "--n-levels", "2", "--epochs", "10", "--batch-size", "8",
         "--device", "cpu", "--seed", "3"]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("resume"), generator=False, sasrec=False)


class Forked:
    """`mscg ARGS` in a fork of this process (torch already imported), with Popen's poll/wait/signals.

    Safe because torch runs on one thread here (the `one_thread` fixture): the child never starts an
    OpenMP parallel region, which could hang after a fork.
    """

    def __init__(self, args: list, log: Path):
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:
            self._child([str(a) for a in args], log)

    @staticmethod
    def _child(args: list[str], log: Path) -> None:
        code = 1
        try:
            os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
            os.environ.update(STEP_CHECKPOINTS)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            from mscg.artifacts.meta import set_command_line
            from mscg.cli import app

            set_command_line(["mscg", *args])
            app(args=args, prog_name="mscg")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:  # noqa: BLE001 - reported in the log, never back into pytest
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"mscg (pid {self.pid}) still runs after {timeout} s")
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def interrupt_after_checkpoints(proc: Forked, checkpoint: Path, sig: int, *, checkpoints: int = 3,
                                timeout: float = 120) -> threading.Thread:
    """Send `sig` once `checkpoint` has been (re)written `checkpoints` times (seen by polling its mtime)."""

    def watch() -> None:
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                seen.add(checkpoint.stat().st_mtime_ns)
            except FileNotFoundError:
                pass
            if len(seen) >= checkpoints:
                proc.send_signal(sig)
                return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def interrupted_run(args: list, out: Path, log: Path, sig: int, reference) -> tuple[int, dict]:
    """Run `mscg ARGS` in another process and interrupt it mid-training while `reference()` runs here.
    Returns (exit code, the checkpoint's loop state)."""
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    proc = Forked(args, log)
    watcher = interrupt_after_checkpoints(proc, partial_path(out) / "resume.pt", sig)
    try:
        reference()
        watcher.join(timeout=120)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = log.read_text(errors="replace")
    assert not out.exists(), f"the run finished before it could be interrupted; make it longer:\n{stderr}"
    payload = torch.load(partial_path(out) / "resume.pt", map_location="cpu", weights_only=True)
    return code, json.loads(payload["state"])


def training_history(model_dir: Path) -> list:
    return json.loads((model_dir / "meta.json").read_text())["training"]["history"]


def test_collab_resumes_after_kill(pipe, tmp_path):
    data = pipe.data
    out, model, ref, ref_model = tmp_path / "emb", tmp_path / "sasrec", tmp_path / "ref", tmp_path / "ref_sasrec"
    args = ["collab", "-d", data, "-o", out, "--model-out", model, *COLLAB]

    def reference():
        result = invoke("collab", "-d", data, "-o", ref, "--model-out", ref_model, *COLLAB)
        assert result.exit_code == 0, result.output

    code, state = interrupted_run(args, out, tmp_path / "log", signal.SIGKILL, reference)
    assert code == -signal.SIGKILL and state["step"] > 0 and not model.exists()

    result = invoke(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert f"resumed from step {state['step']:,}" in result.stderr
    assert not partial_path(out).exists()
    assert (out / "embeddings.safetensors").read_bytes() == (ref / "embeddings.safetensors").read_bytes()
    assert (model / "model.safetensors").read_bytes() == (ref_model / "model.safetensors").read_bytes()
    assert training_history(model) == training_history(ref_model)
    assert json.loads((model / "meta.json").read_text())["provenance"]["seed"] == 3


@pytest.mark.parametrize("samples,batch", [("prefix", "16"), ("window", "2")])  # windows: ~5x fewer samples
def test_train_resumes_after_ctrl_c(pipe, tmp_path, samples, batch):
    import mscg.models.generator  # noqa: F401 - imported once, before the fork, not in both processes

    data, codes = pipe.data, pipe.codes
    out, ref = tmp_path / "generator", tmp_path / "ref"
    args = ["train", "-d", data, "--codes", codes, "-o", out, *TRAIN, "--samples", samples, "--batch-size", batch]

    def reference():
        result = invoke("train", "-d", data, "--codes", codes, "-o", ref, *TRAIN, "--samples", samples,
                        "--batch-size", batch)
        assert result.exit_code == 0, result.output

    code, state = interrupted_run(args, out, tmp_path / "log", signal.SIGINT, reference)
    stderr = (tmp_path / "log").read_text()
    assert code == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert state["step"] > 0

    result = invoke(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert f"resumed from step {state['step']:,}" in result.stderr
    assert (out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    assert training_history(out) == training_history(ref)


def test_resume_refuses_other_settings(pipe, tmp_path):
    """A checkpoint made with other flags is not silently mixed in."""
    out = tmp_path / "emb"
    partial_path(out).mkdir()
    payload = {"model": {}, "optimizer": {}, "scheduler": {}, "state": "{}", "best_state": {}, "rng": torch.zeros(1),
               "cuda_rng": [], "fingerprint": json.dumps({"other": "run"})}
    torch.save(payload, partial_path(out) / "resume.pt")
    result = invoke("collab", "-d", pipe.data, "-o", out, *COLLAB, "--resume")
    assert result.exit_code == 2, result.output
    assert "other settings or inputs" in result.stderr and "drop --resume" in result.stderr
    assert not out.exists()


def test_rqvae_resumes_after_kill(pipe, tmp_path):
    out, ref = tmp_path / "q", tmp_path / "ref"
    args = ["quantize", "--embeddings", pipe.emb_text, "-o", out, *RQVAE]

    def reference():
        result = invoke("quantize", "--embeddings", pipe.emb_text, "-o", ref, *RQVAE)
        assert result.exit_code == 0, result.output

    code, state = interrupted_run(args, out, tmp_path / "log", signal.SIGKILL, reference)
    assert code == -signal.SIGKILL and state["step"] > 0

    result = invoke(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert f"resumed from step {state['step']:,}" in result.stderr
    assert (out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
