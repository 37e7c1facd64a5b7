"""`mscg plot`: a PNG of training curves, of a codes folder, or of evaluation metrics side by side."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mscg.artifacts.atomic import write_bytes_atomic
from mscg.commands._common import ForceOpt, is_stdout, user_errors
from mscg.console import info
from mscg.errors import UsageError


def plot(inputs: list[str], output: Path | str, *, force: bool = False) -> str:
    """Draw `inputs` (one model/quantizer/codes folder, or evaluation files) into the PNG `output` ("-":
    stdout); returns what was drawn ("training", "codes" or "metrics")."""
    from mscg.artifacts.evaluations import entry
    from mscg.plots import plot_png

    if not is_stdout(output) and Path(output).suffix.lower() != ".png":
        raise UsageError(f"--output {output}: mscg plot writes PNG images; name it *.png (or - for stdout)")
    what, png = plot_png([str(i) for i in inputs])
    if is_stdout(output):
        sys.stdout.buffer.write(png)
        sys.stdout.flush()
    else:
        write_bytes_atomic(Path(output), png, force=force, inputs=[entry(str(i))[1] for i in inputs])
    return what


@user_errors
def plot_cli(
    inputs: Annotated[list[str], typer.Argument(help="A model, quantizer or codes folder; or evaluation files "
                                                     "(`evaluate -o`, `compare -o`; NAME=PATH names a run).",
                                                show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write (- writes stdout).",
                                         show_default=False)],
    force: ForceOpt = False,
) -> None:
    """Draw a PNG: training curves of a trained folder, codebook usage of a codes folder, or the metrics of
    several evaluations as grouped bars. The kind is read from what is given.

    A model folder (train, collab --model-out, quantize --method rq-vae/rq-dino) gives its loss per
    --log-every steps and per epoch, the learning rate and the validation metrics (training_log.csv).

    [bold]Examples[/bold]

      mscg plot work/generator -o work/curves.png

      mscg plot work/codes -o work/codes.png

      mscg plot sasrec=work/eval_sasrec.json mscgrec=work/eval_mscgrec.json -o work/metrics.png
    """
    from mscg.plots import describe

    what = plot(inputs, output, force=force)
    if not is_stdout(output):
        info(f"wrote {output}: {describe(what)}")
