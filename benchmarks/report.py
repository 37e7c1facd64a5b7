"""Writing benchmark results into BENCHMARKS.md: each script owns one marked section.

    <!-- BEGIN name --> ... <!-- END name -->

A script replaces its own section (or appends it) and leaves the others alone.
"""

from __future__ import annotations

import datetime
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
if str(ROOT) not in sys.path:  # scripts run as `python benchmarks/NAME.py` see benchmarks/, not the root
    sys.path.insert(0, str(ROOT))


def machine(device: str = "auto") -> str:
    """CPU model, core count, GPU (if used) and torch version."""
    import torch

    from benchmarks._common import cpu_model

    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() and device != "cpu" else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def stamp(device: str = "auto") -> str:
    """The line every section starts with: machine, date, command."""
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    return f"Machine: {machine(device)}. Date: {datetime.date.today().isoformat()}. Command: `{command}`"


def work_folder_arguments(parser, prefix: str, *, data: bool = True) -> None:
    """The flags of a script that reads the trained models of an ablations.py work folder and publishes its
    results as PREFIX-NAME: --data (unless the script reads the models alone), --work, --name, --seeds, --models."""
    if data:
        parser.add_argument("--data", type=Path, required=True, help="folder with items.jsonl + interactions.jsonl")
    parser.add_argument("--work", type=Path, required=True,
                        help="an ablations.py work folder (WORK/seedS/MODEL)")
    parser.add_argument("--name", required=True, help=f"results name: benchmarks/results/{prefix}-NAME.{{json,md}}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["sasrec", "mscgrec"],
                        help="model folders in each seed folder")


def publish(name: str, heading: str, results: dict, table: str) -> None:
    """benchmarks/results/NAME.json (the results) and NAME.md (the table), and the BENCHMARKS.md section NAME
    (the heading, then the table); the table is printed too."""
    import json

    out_dir = ROOT / "benchmarks" / "results"
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(table)
    write_section(name, f"### {heading}\n\n{table}")
    print(table)


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
