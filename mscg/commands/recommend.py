"""`mscg recommend`: user histories in, top-K items with scores out (JSONL; `-` pipes)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from mscg.artifacts.atomic import check_output, write_text_atomic
from mscg.commands._common import DeviceOpt, ForceOpt, user_errors
from mscg.console import info
from mscg.data.jsonl import read_jsonl, write_jsonl_line
from mscg.errors import DataError, UsageError


def read_histories(path: str, index: dict[str, int], skip_unknown: bool) -> tuple[list[str], list[np.ndarray], int]:
    users, histories, skipped = [], [], 0
    name = "<stdin>" if path == "-" else path
    for line_no, obj in read_jsonl(path):
        where = f"{name} line {line_no}"
        user_id = obj.get("user_id")
        history = obj.get("history")
        if not isinstance(user_id, str):
            raise DataError(f"{where}: \"user_id\" must be a string; quote it")
        if not isinstance(history, list) or not all(isinstance(i, str) for i in history):
            raise DataError(f"{where}: \"history\" must be a list of item_id strings")
        known = [index[i] for i in history if i in index]
        if len(known) < len(history):
            if not skip_unknown:
                unknown = next(i for i in history if i not in index)
                raise DataError(f"{where}: item {unknown!r} is not in the model's catalogue; drop it or pass "
                                "--skip-unknown")
            skipped += len(history) - len(known)
        if not known:
            raise DataError(f"{where}: user {user_id!r} has no known history item; give at least one")
        users.append(user_id)
        histories.append(np.asarray(known, dtype=np.int64))
    return users, histories, skipped


def recommend(model_path: Path, histories_path: str, output: str, *, k: int = 10, codes: Path | None = None,
              beam_size: int | None = None, batch_size: int = 256, device: str = "auto", skip_unknown: bool = False,
              exclude_history: bool = False, force: bool = False) -> int:
    from mscg.recommenders import load_recommender
    from mscg.training.distributed import resolve_device

    if k < 1:
        raise UsageError("-k must be at least 1")
    inputs = [Path(model_path)] + ([Path(codes)] if codes is not None else [])
    inputs += [] if histories_path == "-" else [Path(histories_path)]
    if output != "-":
        check_output(Path(output), force=force, inputs=inputs)
    dev = resolve_device(device)
    recommender = load_recommender(model_path, dev, beam_size=beam_size, codes_path=codes)
    if recommender.kind == "mscg-generator" and beam_size is not None and k > beam_size:
        raise UsageError(f"-k {k} is larger than --beam-size {beam_size}; raise --beam-size to at least {k}")
    index = {item_id: i for i, item_id in enumerate(recommender.item_ids)}
    users, histories, skipped = read_histories(histories_path, index, skip_unknown)
    lines = []
    for start in range(0, len(users), batch_size):
        batch = histories[start:start + batch_size]
        items, scores = recommender.top_k(batch, k, exclude_history=exclude_history)
        for row, user_id in enumerate(users[start:start + batch_size]):
            keep = items[row] >= 0
            lines.append(write_jsonl_line({
                "user_id": user_id,
                "items": [recommender.item_ids[i] for i in items[row][keep].tolist()],
                "scores": [round(s, 6) for s in scores[row][keep].tolist()],
            }))
    if output == "-":
        sys.stdout.writelines(lines)
        sys.stdout.flush()
    else:
        write_text_atomic(Path(output), "".join(lines), force=force, inputs=inputs)
    if skipped:
        info(f"skipped {skipped:,} history items unknown to the model")
    return len(users)


@user_errors
def recommend_cli(
    model: Annotated[Path, typer.Argument(help="Model directory (from train, or collab --model-out).",
                                          show_default=False)],
    histories: Annotated[str, typer.Option("--input", "-i", help="JSONL of {\"user_id\", \"history\": [item_id, "
                                                                  "...]}, oldest first; - reads stdin.")] = "-",
    output: Annotated[str, typer.Option("--output", "-o", help="JSONL of {\"user_id\", \"items\", \"scores\"}; - "
                                                               "writes stdout.")] = "-",
    k: Annotated[int, typer.Option("-k", "--k", help="Items per user.")] = 10,
    codes: Annotated[Path | None, typer.Option(help="Codes directory (default: the generator's own).")] = None,
    beam_size: Annotated[int | None, typer.Option(help="Generator beam size (default: as trained, "
                                                       "at least K).")] = None,
    batch_size: Annotated[int, typer.Option(help="Users per batch.")] = 256,
    skip_unknown: Annotated[bool, typer.Option(help="Ignore history items the model does not know.")] = False,
    exclude_history: Annotated[bool, typer.Option(help="Leave out items already in the user's history (a "
                                                        "generator widens its beam to still return K).")] = False,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Recommend the top K items for each user history. Scores are the model's log-probabilities
    (generator) or inner products (SASRec); a generator only ever returns real items.

    [bold]Examples[/bold]

      echo '{"user_id": "u1", "history": ["50", "172", "181"]}' | mscg recommend work/generator -k 5

      mscg recommend work/sasrec -i histories.jsonl -o recs.jsonl -k 20
    """
    n = recommend(model, histories, output, k=k, codes=codes, beam_size=beam_size, batch_size=batch_size,
                  device=device, skip_unknown=skip_unknown, exclude_history=exclude_history, force=force)
    if output != "-":
        info(f"wrote {output}: recommendations for {n:,} users")
