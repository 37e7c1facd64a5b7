"""`mscg recommend`: user histories in, top-K items with scores out (JSONL; `-` pipes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from mscg.api import FALLBACKS, history_rows, item_key, load
from mscg.artifacts.atomic import check_file_output
from mscg.artifacts.meta import meta_inputs, read_meta
from mscg.commands._common import DeviceOpt, ForceOpt, NoVerifyOpt, is_stdout, user_errors, write_result
from mscg.console import info, warn
from mscg.data.jsonl import read_jsonl_lines, shown, write_jsonl_line
from mscg.errors import DataError, UsageError

ON_ERRORS = ("fail", "skip")
LISTED_LINES = 5  # skipped lines named by number on stderr


@dataclass
class Request:
    line_no: int
    user_id: str
    history: np.ndarray  # dense item indices, oldest first; empty: no known item (the fallback answers)


@dataclass
class Requests:
    requests: list[Request] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (line number, message) of skipped lines
    unknown_items: int = 0  # dropped by --skip-unknown


def read_histories(path: str, index: dict[str, int], *, skip_unknown: bool, fallback: bool,
                   on_error: str = "fail") -> Requests:
    """The input lines as requests; a bad line stops the run (`on_error="fail"`) or is skipped and listed."""
    out = Requests()
    name = "<stdin>" if path == "-" else path
    for line_no, obj in read_jsonl_lines(path):
        try:
            if isinstance(obj, DataError):
                raise obj
            request, unknown = parse_request(obj, f"{name} line {line_no}", line_no, index,
                                             skip_unknown=skip_unknown, fallback=fallback)
        except DataError as e:
            if on_error == "fail":
                raise
            out.failed.append((line_no, str(e)))
            continue
        out.requests.append(request)
        out.unknown_items += unknown
    return out


def parse_request(obj: dict, where: str, line_no: int, index: dict[str, int], *, skip_unknown: bool,
                  fallback: bool) -> tuple[Request, int]:
    """One line's request and how many of its history items the model does not know (dropped)."""
    for key in ("user_id", "history"):
        if key not in obj:
            raise DataError(f"{where}: missing \"{key}\"; every line is {{\"user_id\": ..., \"history\": "
                            "[item_id, ...]}")
    user_id = item_key(obj["user_id"])
    if user_id is None:
        raise DataError(f"{where}: \"user_id\" must be a string (or an integer), found {shown(obj['user_id'])}")
    history = obj["history"]
    if not isinstance(history, list):
        raise DataError(f"{where}: \"history\" must be a list of item ids, found {shown(history)}")
    try:
        known, unknown = history_rows(history, index)
    except ValueError as e:
        raise DataError(f"{where}: \"history\" must list item ids (strings or integers), found "
                        f"{shown(e.args[0])}") from None
    if unknown and not skip_unknown:
        raise DataError(f"{where}: item {unknown[0]!r} is not in the model's catalogue; drop it or pass "
                        "--skip-unknown")
    if not known and not fallback:
        raise DataError(f"{where}: user {user_id!r} has no known history item; give at least one, or pass "
                        "--fallback popular")
    return Request(line_no, user_id, np.asarray(known, dtype=np.int64)), len(unknown)


def skipped_lines_message(failed: list[tuple[int, str]], total: int) -> str:
    numbers = ", ".join(str(n) for n, _ in failed[:LISTED_LINES]) + (", ..." if len(failed) > LISTED_LINES else "")
    return (f"skipped {len(failed):,} of {total:,} input lines (line{'s' if len(failed) > 1 else ''} {numbers}); "
            f"the first: {failed[0][1]}")


def recommend(model_path: Path, histories_path: str, output: str, *, k: int = 10, codes: Path | None = None,
              beam_size: int | None = None, batch_size: int = 256, device: str = "auto", skip_unknown: bool = False,
              exclude_history: bool = True, on_error: str = "fail", fallback: str = "none", force: bool = False,
              verify: bool = True) -> int:
    """Write OUTPUT (one line per answered input line, in input order); returns how many lines were answered."""
    from mscg.popularity import COUNTS_KEY, no_counts_error

    if k < 1:
        raise UsageError("-k must be at least 1")
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if on_error not in ON_ERRORS:
        raise UsageError(f"--on-error {on_error!r} must be one of: {', '.join(ON_ERRORS)}")
    if fallback not in FALLBACKS:
        raise UsageError(f"--fallback {fallback!r} must be one of: {', '.join(FALLBACKS)}")
    if fallback == "popular" and COUNTS_KEY not in read_meta(model_path, "model", "MODEL"):
        raise no_counts_error("--fallback popular", model_path)  # before the model is loaded
    # never write into an input, nor into what the model was made from (a generator's codes)
    inputs = [Path(model_path), *meta_inputs(model_path)] + ([Path(codes)] if codes is not None else [])
    inputs += [] if histories_path == "-" else [Path(histories_path)]
    if not is_stdout(output):
        check_file_output(Path(output), force=force, inputs=inputs)
    model = load(model_path, device, beam_size=beam_size, codes=codes, verify=verify)
    if model.kind == "mscg-generator" and beam_size is not None and k > beam_size:
        raise UsageError(f"-k {k} is larger than --beam-size {beam_size}; raise --beam-size to at least {k}")
    popular = model.popular_indices(k, "--fallback popular") if fallback == "popular" else []
    read = read_histories(histories_path, model.index, skip_unknown=skip_unknown, fallback=fallback == "popular",
                          on_error=on_error)
    ranked = iter(model.rank_indices([r.history for r in read.requests if len(r.history)], k,
                                     exclude_history=exclude_history, batch_size=batch_size))
    lines = []
    for request in read.requests:
        found = next(ranked) if len(request.history) else popular
        line = {"user_id": request.user_id, "items": [model.item_ids[i] for i, _ in found],
                "scores": [round(s, 6) for _, s in found]}
        if not len(request.history):
            line["fallback"] = "popular"  # scores: how often each item occurs in the training data
        lines.append(write_jsonl_line(line))
    write_result(output, "".join(lines), force=force, inputs=inputs)
    if read.unknown_items:
        info(f"skipped {read.unknown_items:,} history items unknown to the model")
    fallbacks = sum(1 for r in read.requests if not len(r.history))
    if fallbacks:
        info(f"{fallbacks:,} user{'s' if fallbacks > 1 else ''} with no known history item got the most popular "
             "items (--fallback popular)")
    if read.failed:
        warn(skipped_lines_message(read.failed, len(read.failed) + len(read.requests)))
    return len(read.requests)


@user_errors
def recommend_cli(
    model: Annotated[Path, typer.Argument(help="Model directory (from train, or collab --model-out).",
                                          show_default=False)],
    histories: Annotated[str, typer.Option("--input", "-i", help="JSONL of {\"user_id\", \"history\": \\[item_id, "
                                                                  "...]}, oldest first; - reads stdin.")] = "-",
    output: Annotated[str, typer.Option("--output", "-o", help="JSONL of {\"user_id\", \"items\", \"scores\"}; - "
                                                               "writes stdout.")] = "-",
    k: Annotated[int, typer.Option("-k", "--k", help="Items per user.")] = 10,
    codes: Annotated[Path | None, typer.Option(help="Codes directory (default: the generator's own; another must "
                                                    "have the same SHA-256, e.g. a copy).")] = None,
    beam_size: Annotated[int | None, typer.Option(help="Generator beam size (default: as trained, "
                                                       "at least K).")] = None,
    batch_size: Annotated[int, typer.Option(help="Users per batch.")] = 256,
    skip_unknown: Annotated[bool, typer.Option("--skip-unknown", help="Ignore history items the model does not "
                                               "know.")] = False,
    include_history: Annotated[bool, typer.Option("--include-history/--exclude-history", help="Rank the items "
                                                  "already in the user's history too (for repeat consumption); "
                                                  "by default they are left out.")] = False,
    on_error: Annotated[str, typer.Option(help="A bad input line: fail (stop, write nothing) or skip (answer the "
                                               "other lines; stderr counts and names the skipped ones).")] = "fail",
    fallback: Annotated[str, typer.Option(help="A user with no known history item: none (an error), or popular "
                                               "(the items most often in the model's training data, scored by "
                                               "that count; the line gets \"fallback\": \"popular\").")] = "none",
    no_verify: NoVerifyOpt = False,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Recommend the top K items for each user history. Scores are the model's log-probabilities
    (generator) or inner products (SASRec); a generator only ever returns real items.

    [bold]Examples[/bold]

      echo '{"user_id": "u1", "history": ["50", "172", "181"]}' | mscg recommend work/generator -k 5

      mscg recommend work/sasrec -i histories.jsonl -o recs.jsonl -k 20

      mscg recommend work/generator -i users.jsonl -o recs.jsonl --on-error skip --fallback popular
    """
    n = recommend(model, histories, output, k=k, codes=codes, beam_size=beam_size, batch_size=batch_size,
                  device=device, skip_unknown=skip_unknown, exclude_history=not include_history, on_error=on_error,
                  fallback=fallback, force=force, verify=not no_verify)
    if not is_stdout(output):
        info(f"wrote {output}: recommendations for {n:,} users")
