"""`mscg recommend`: user histories in, top-K items with scores out (JSONL; `-` pipes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import typer

from mscg.api import FALLBACKS, POPULARITY, history_rows, item_key, load
from mscg.artifacts.atomic import check_file_output
from mscg.artifacts.meta import check_item_ids, meta_inputs, read_meta
from mscg.commands._common import DeviceOpt, ForceOpt, NoVerifyOpt, is_stdout, user_errors, write_result
from mscg.console import info, plural, warn
from mscg.data.jsonl import read_jsonl_lines, shown, write_jsonl_line
from mscg.errors import DataError, UsageError
from mscg.recommenders.defaults import EVAL_BATCH_SIZE, EXCLUDE_HISTORY_RECOMMENDING

ON_ERRORS = ("fail", "skip")
LISTED_LINES = 5  # skipped lines named by number on stderr


@dataclass
class Line:
    """One input line read without the model: its user id (None: the line gave none) and history ids."""

    line_no: int
    user_id: str | None
    history: list[str]  # item ids as mscg stores them (integers as their decimal strings), oldest first


@dataclass
class Request:
    line_no: int
    user_id: str | None  # None: the line gave none (its answer carries "line" instead)
    history: np.ndarray  # dense item indices, oldest first; empty: no known item (the fallback answers)


@dataclass
class Requests:
    requests: list[Request] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (line number, message) of skipped lines
    unknown_items: int = 0  # dropped by --skip-unknown


def read_histories(path: str, index: dict[str, int], *, skip_unknown: bool, fallback: bool,
                   on_error: str = "fail") -> Requests:
    """The input lines as requests, in two passes: every line's JSON, fields and types (`read_lines`), then its
    ids against the catalogue `index` (which the model folder's meta.json gives: no model needs loading). A bad
    line stops the run (`on_error="fail"`) or is skipped and listed."""
    lines, failed = read_lines(path, on_error)
    out = Requests(failed=failed)
    name = "<stdin>" if path == "-" else path
    for line in lines:
        try:
            request, unknown = to_request(line, f"{name} line {line.line_no}", index, skip_unknown=skip_unknown,
                                          fallback=fallback)
        except DataError as e:
            if on_error == "fail":
                raise
            out.failed.append((line.line_no, str(e)))
            continue
        out.requests.append(request)
        out.unknown_items += unknown
    out.failed.sort()
    return out


def read_lines(path: str, on_error: str = "fail") -> tuple[list[Line], list[tuple[int, str]]]:
    """(the well-formed lines, (line number, message) of the others); with `on_error="fail"` the first bad line
    raises. Nothing here needs the model."""
    lines: list[Line] = []
    failed: list[tuple[int, str]] = []
    name = "<stdin>" if path == "-" else path
    for line_no, obj in read_jsonl_lines(path):
        try:
            if isinstance(obj, DataError):
                raise obj
            lines.append(parse_line(obj, f"{name} line {line_no}", line_no))
        except DataError as e:
            if on_error == "fail":
                raise
            failed.append((line_no, str(e)))
    return lines, failed


def parse_line(obj: dict, where: str, line_no: int) -> Line:
    """One line's fields and types: "history" (a list of ids) and, optionally, "user_id" (an id)."""
    if "history" not in obj:
        raise DataError(f"{where}: missing \"history\"; every line is {{\"history\": [item_id, ...]}}, with an "
                        "optional \"user_id\"")
    user_id = None
    if "user_id" in obj:
        user_id = item_key(obj["user_id"])
        if user_id is None:
            raise DataError(f"{where}: \"user_id\" must be a string (or an integer), found {shown(obj['user_id'])}; "
                            "or leave it out")
    history = obj["history"]
    if not isinstance(history, list):
        raise DataError(f"{where}: \"history\" must be a list of item ids, found {shown(history)}")
    keys = [item_key(value) for value in history]
    if None in keys:
        raise DataError(f"{where}: \"history\" must list item ids (strings or integers), found "
                        f"{shown(history[keys.index(None)])}")
    return Line(line_no, user_id, keys)


def to_request(line: Line, where: str, index: dict[str, int], *, skip_unknown: bool,
               fallback: bool) -> tuple[Request, int]:
    """One line's request and how many of its history items the model does not know (dropped)."""
    known, unknown = history_rows(line.history, index)
    if unknown and not skip_unknown:
        raise DataError(f"{where}: item {unknown[0]!r} is not in the model's catalogue; drop it or pass "
                        "--skip-unknown")
    if not known and not fallback:
        who = f"user {line.user_id!r}" if line.user_id is not None else "the line"
        raise DataError(f"{where}: {who} has no known history item; give at least one, or pass --fallback popular")
    return Request(line.line_no, line.user_id, np.asarray(known, dtype=np.int64)), len(unknown)


def answer_line(request: Request, found: list[tuple[int, float]], item_ids: list[str], score_kind: str) -> dict:
    """The output object of one request: "user_id" (or, for a line without one, its input "line" number),
    "items", "scores", "score_kind"; a fallback answer is scored by popularity and marked "fallback"."""
    line: dict = {"user_id": request.user_id} if request.user_id is not None else {"line": request.line_no}
    line.update(items=[item_ids[i] for i, _ in found], scores=[round(s, 6) for _, s in found])
    if len(request.history):
        line["score_kind"] = score_kind
    else:
        line.update(score_kind=POPULARITY, fallback="popular")  # scores: training counts
    return line


def skipped_lines_message(failed: list[tuple[int, str]], total: int) -> str:
    numbers = ", ".join(str(n) for n, _ in failed[:LISTED_LINES]) + (", ..." if len(failed) > LISTED_LINES else "")
    return (f"skipped {len(failed):,} of {total:,} input lines (line{'s' if len(failed) > 1 else ''} {numbers}); "
            f"the first: {failed[0][1]}")


def recommend(model_path: Path, histories_path: str, output: str, *, k: int = 10, codes: Path | None = None,
              beam_size: int | None = None, batch_size: int = EVAL_BATCH_SIZE, device: str = "auto",
              skip_unknown: bool = False, exclude_history: bool = EXCLUDE_HISTORY_RECOMMENDING, on_error: str = "fail",
              fallback: str = "none", force: bool = False, verify: bool = True) -> int:
    """Write OUTPUT (one line per answered input line, in input order); returns how many lines were answered. The
    whole input is read and checked against the catalogue in the model's meta.json first: a bad line fails in a
    fraction of a second, not after the model is loaded."""
    if k < 1:
        raise UsageError("-k must be at least 1")
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if on_error not in ON_ERRORS:
        raise UsageError(f"--on-error {on_error!r} must be one of: {', '.join(ON_ERRORS)}")
    if fallback not in FALLBACKS:
        raise UsageError(f"--fallback {fallback!r} must be one of: {', '.join(FALLBACKS)}")
    meta = read_meta(model_path, "model", "MODEL")
    # never write into an input, nor into what the model was made from (a generator's codes)
    inputs = [Path(model_path), *meta_inputs(model_path)] + ([Path(codes)] if codes is not None else [])
    inputs += [] if histories_path == "-" else [Path(histories_path)]
    if not is_stdout(output):
        check_file_output(Path(output), force=force, inputs=inputs)
    item_ids = check_item_ids(Path(model_path), meta)
    read = read_histories(histories_path, {item_id: i for i, item_id in enumerate(item_ids)},
                          skip_unknown=skip_unknown, fallback=fallback == "popular", on_error=on_error)
    if fallback == "popular":  # still before the model is loaded (this imports torch)
        from mscg.popularity import no_counts_error, recorded_train_counts

        if recorded_train_counts(meta, len(item_ids), model_path) is None:
            raise no_counts_error("--fallback popular", model_path)
    model = load(model_path, device, beam_size=beam_size, codes=codes, verify=verify)
    assert model.item_ids == item_ids, "a model's catalogue is its meta.json's item_ids"
    fallbacks = sum(1 for r in read.requests if not len(r.history))
    popular = model.popular_indices(k, "--fallback popular") if fallbacks else []
    ranked = iter(model.rank_indices([r.history for r in read.requests if len(r.history)], k,
                                     exclude_history=exclude_history, batch_size=batch_size))
    lines = [write_jsonl_line(answer_line(r, next(ranked) if len(r.history) else popular, model.item_ids,
                                          model.score_kind)) for r in read.requests]
    write_result(output, "".join(lines), force=force, inputs=inputs)
    if read.unknown_items:
        info(f"skipped {plural(read.unknown_items, 'history item')} unknown to the model")
    if fallbacks:
        info(f"{plural(fallbacks, 'user')} with no known history item got the most popular items "
             "(--fallback popular)")
    if read.failed:
        warn(skipped_lines_message(read.failed, len(read.failed) + len(read.requests)))
    return len(read.requests)


@user_errors
def recommend_cli(
    model: Annotated[Path, typer.Argument(help="Model directory (from train, or collab --model-out).",
                                          show_default=False)],
    histories: Annotated[str, typer.Option("--input", "-i", help="JSONL of {\"user_id\" (optional), \"history\": "
                                                                  "\\[item_id, ...]}, oldest first; - reads "
                                                                  "stdin.")] = "-",
    output: Annotated[str, typer.Option("--output", "-o", help="JSONL of {\"user_id\" (or \"line\", the input line's "
                                                               "number, where it gave none), \"items\", \"scores\", "
                                                               "\"score_kind\"}; - writes stdout.")] = "-",
    k: Annotated[int, typer.Option("-k", "--k", help="Items per user.")] = 10,
    codes: Annotated[Path | None, typer.Option(help="Codes directory (default: the generator's own; another must "
                                                    "have the same SHA-256, e.g. a copy).")] = None,
    beam_size: Annotated[int | None, typer.Option(help="Generator beam size (default: as trained); a request for "
                                                       "K items searches a beam of at least K.")] = None,
    batch_size: Annotated[int, typer.Option(help="Users per batch.")] = EVAL_BATCH_SIZE,
    skip_unknown: Annotated[bool, typer.Option("--skip-unknown", help="Ignore history items the model does not "
                                               "know.")] = False,
    exclude_history: Annotated[bool, typer.Option(
        "--exclude-history/--include-history", help="Leave the items already in the user's history out, or rank "
                                                    "them too (for repeat consumption).")
                               ] = EXCLUDE_HISTORY_RECOMMENDING,
    on_error: Annotated[Literal[ON_ERRORS], typer.Option(
        help="A bad input line: fail (stop, write nothing) or skip (answer the "
             "other lines; stderr counts and names the skipped ones).")] = "fail",
    fallback: Annotated[Literal[FALLBACKS], typer.Option(
        help="A user with no known history item: none (an error), or popular "
             "(the items most often in the model's training data, scored by "
             "that count; the line gets \"fallback\": \"popular\").")] = "none",
    no_verify: NoVerifyOpt = False,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Recommend the top K items for each user history. Every output line names what its scores are
    ("score_kind"): log-probability (generator), inner-product (SASRec), fused (a fused model: a weighted sum of
    log-probabilities) or popularity (a --fallback popular line: training counts); they compare within a line, not
    across kinds. A generator only ever returns real items. The whole input is checked before the model is loaded.

    [bold]Examples[/bold]

      echo '{"history": ["50", "172", "181"]}' | mscg recommend work/generator -k 5

      mscg recommend work/sasrec -i histories.jsonl -o recs.jsonl -k 20

      mscg recommend work/generator -i users.jsonl -o recs.jsonl --on-error skip --fallback popular
    """
    n = recommend(model, histories, output, k=k, codes=codes, beam_size=beam_size, batch_size=batch_size,
                  device=device, skip_unknown=skip_unknown, exclude_history=exclude_history, on_error=on_error,
                  fallback=fallback, force=force, verify=not no_verify)
    if not is_stdout(output):
        info(f"wrote {output}: recommendations for {plural(n, 'user')}")
