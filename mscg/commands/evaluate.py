"""`mscg evaluate`: full-ranking leave-one-out Recall@K / NDCG@K of a generator or a SASRec model."""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from mscg.artifacts.atomic import check_file_output
from mscg.artifacts.meta import dumps_json, meta_inputs, provenance
from mscg.commands._common import (DataOpt, DeviceOpt, ForceOpt, NoVerifyOpt, human_console, is_stdout, parse_ks,
                                   report_split, user_errors, write_result)
from mscg.console import info, progress_bar
from mscg.data.split import SPLITS, load_dataset
from mscg.errors import DataError, UsageError
from mscg.recommenders.defaults import EVAL_BATCH_SIZE, EXCLUDE_HISTORY_EVALUATING


@dataclass
class EvalResult:
    metrics: dict[str, Any]


def evaluate(model_path: Path, data: Path, *, codes: Path | None = None, split: str = "test",
             beam_size: int | None = None, ks: tuple[int, ...] = (5, 10), batch_size: int = EVAL_BATCH_SIZE,
             device: str = "auto", output: Path | None = None, force: bool = False,
             by_popularity: bool = False, exclude_history: bool = EXCLUDE_HISTORY_EVALUATING, verify: bool = True,
             fmt: str = "json") -> EvalResult:
    """`output` "-" writes the result to stdout; `fmt` is what is written: json (the metrics), csv or md (the
    metrics table; without `output` onto stdout)."""
    import numpy as np
    import torch

    from mscg.data.coldstart import read_withheld
    from mscg.evaluation import ranked_batches
    from mscg.metrics import add_sums, means, metric_sums
    from mscg.popularity import PopularityBreakdown, train_counts
    from mscg import recommenders
    from mscg.devices import resolve_device

    if split not in SPLITS:
        raise UsageError(f"--split {split!r} must be test or valid")
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    output = resolve_format(fmt, output)
    # never write into an input, nor into what the model was made from (a generator's codes)
    inputs = [Path(data), Path(model_path), *meta_inputs(model_path)] + ([Path(codes)] if codes is not None else [])
    if output is not None and not is_stdout(output):
        check_file_output(output, force=force, inputs=inputs)  # fail before the slow part
    dev = resolve_device(device)
    recommender = recommenders.load(model_path, dev, beam_size=beam_size, codes_path=codes, verify=verify)
    ds = load_dataset(data)
    if recommender.item_ids != ds.catalogue.item_ids:
        raise DataError(f"model {model_path} was trained on another catalogue than {ds.catalogue.path}; evaluate it "
                        "on the data it was trained with")
    report_split(ds.split)
    users = range(len(ds.split))
    total: dict[str, float] = {}
    withheld = read_withheld(data, ds.catalogue.index)  # a cold-start split: its users are reported apart
    cold_sums: dict[str, dict[str, float]] = {"cold_start": {}, "warm": {}}
    breakdown = PopularityBreakdown(train_counts(ds.split, len(ds.catalogue)), max(ks)) if by_popularity else None
    started = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(f"evaluate ({split})", total=len(users), status="")
        # the popularity breakdown needs the top-K lists; ranks within them give the same Recall/NDCG@K
        for batch in ranked_batches(recommender, ds.split, users, split, k=max(ks), batch_size=batch_size,
                                    lists=breakdown is not None, exclude_history=exclude_history):
            ranks = batch.ranks
            if breakdown is not None:
                breakdown.add(ranks, batch.targets, batch.top, batch.histories)
            add_sums(total, metric_sums(ranks, ks))
            if withheld is not None:
                cold = torch.from_numpy(np.isin(batch.targets.numpy(), withheld))
                add_sums(cold_sums["cold_start"], metric_sums(ranks[cold], ks))
                add_sums(cold_sums["warm"], metric_sums(ranks[~cold], ks))
            bar.advance(task, len(batch.users))
    seconds = time.perf_counter() - started
    metrics: dict[str, Any] = {k: round(v, 6) for k, v in means(total).items()}
    metrics.update({
        "users": int(total["count"]), "eval_seconds": round(seconds, 3), "split": split,
        "model": str(Path(model_path).resolve()), "model_type": recommender.kind, "device": str(dev),
        "bytes_per_item": recommender.memory_bytes_per_item(), "exclude_history": exclude_history,
    })
    if recommender.kind == "mscg-generator":
        metrics["beam_size"] = max(recommender.beam_size, max(ks))  # the narrowest beam searched
    if breakdown is not None:
        metrics.update(breakdown.summary(ks))
    if withheld is not None:
        metrics["withheld_items"] = int(len(withheld))
        for group, sums in cold_sums.items():  # cold_start: users whose target was withheld from training
            metrics[group] = {"users": int(sums.get("count", 0)),
                              **({k: round(v, 6) for k, v in means(sums).items()} if sums.get("count") else {})}
    if output is not None:
        record = {"model": model_path, "items": ds.items_path, "interactions": ds.interactions_path}
        if codes is not None:
            record["codes"] = codes
        metrics["provenance"] = provenance(record, None)
        text = dumps_json(metrics) if fmt == "json" else table_text({Path(model_path).name: metrics}, fmt)
        write_result(output, text, force=force, inputs=inputs)
    return EvalResult(metrics)


FORMATS = ("json", "csv", "md")


def resolve_format(fmt: str, output: Path | str | None) -> Path | str | None:
    """Where the result goes: `output`; for a table format (csv, md) given without one, stdout ("-"), so that
    `--format md` alone prints the table (and the table for people goes to stderr, as with `-o -`)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} must be one of: {', '.join(FORMATS)}")
    if fmt != "json" and output is None:
        return "-"
    return output


def _table_keys(rows: dict[str, dict[str, Any]]) -> list[str]:
    keys = [k for k in next(iter(rows.values())) if k.startswith(("recall@", "ndcg@"))]
    keys.sort(key=lambda k: (k.split("@")[0] != "recall", int(k.split("@")[1])))
    return keys


def table_text(rows: dict[str, dict[str, Any]], fmt: str) -> str:
    """The metrics table as data: csv (full precision, the JSON keys as header; empty for a missing metric)
    or md (a Markdown table as printed)."""
    keys = _table_keys(rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        columns = [*keys, "users", "eval_seconds", "bytes_per_item"]
        writer.writerow(["model", *columns])
        for name, m in rows.items():
            writer.writerow([name, *("" if _number(m.get(c), "g") == "-" else m[c] for c in columns)])
        return out.getvalue()
    header = ["model", *(k.replace("recall", "R").replace("ndcg", "N") for k in keys), "users", "eval s",
              "bytes/item"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, m in rows.items():
        cells = [name.replace("|", "\\|"), *(_number(m.get(k), ".4f") for k in keys), f"{m.get('users', 0):,}",
                 _number(m.get("eval_seconds", 0), ".1f"), _number(m.get("bytes_per_item"), "g")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def metrics_table(rows: dict[str, dict[str, Any]], title: str) -> Table:
    keys = _table_keys(rows)
    table = Table(title=title)
    table.add_column("model")
    for k in keys:
        table.add_column(k.replace("recall", "R").replace("ndcg", "N"), justify="right")
    table.add_column("users", justify="right")
    table.add_column("eval s", justify="right")
    table.add_column("bytes/item", justify="right")  # the item representation the model needs at inference
    for name, m in rows.items():
        table.add_row(name, *(_number(m.get(k), ".4f") for k in keys), f"{m.get('users', 0):,}",
                      _number(m.get("eval_seconds", 0), ".1f"), _number(m.get("bytes_per_item"), "g"))
    return table


def _number(value: Any, spec: str) -> str:
    """A table cell: the number formatted, or "-" (a missing, null or NaN metric)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return format(value, spec)


def popularity_table(metrics: dict[str, Any], by: str = "target") -> Table:
    """Metrics per popularity group of the users' targets (`by` "target", with what the top-K lists hold) or of
    their histories' most recent items (`by` "last_item")."""
    k = next(key for key in metrics if key.startswith("recommended_train_count@")).split("@")[1]
    if by == "target":
        table = Table(title="by target popularity (occurrences in training)",
                      caption=f"top-{k} lists: mean popularity {metrics[f'recommended_train_count@{k}']:g} (targets "
                              f"{metrics['target_train_count_mean']:g}); {metrics[f'history_share@{k}']:.1%} of the "
                              "items are already in the user's history")
    else:
        table = Table(title="by the popularity of the history's most recent item (occurrences in training)")
    table.add_column("group")
    table.add_column("users", justify="right")
    table.add_column(f"{by.replace('_', ' ')} count", justify="right")
    for name in (f"recall@{k}", f"ndcg@{k}"):
        table.add_column(name.replace("recall", "R").replace("ndcg", "N"), justify="right")
    for g in metrics[f"by_{by}_popularity"]:
        low, high = g[f"{by}_train_count"]
        table.add_row(g["group"], f"{g['users']:,}", f"{low:,}–{high:,}", f"{g[f'recall@{k}']:.4f}",
                      f"{g[f'ndcg@{k}']:.4f}")
    return table


def cold_start_table(metrics: dict[str, Any]) -> Table:
    """Metrics of the users whose target was withheld from training (a cold-start split) and of the rest."""
    table = Table(title=f"cold start: {metrics['withheld_items']:,} items withheld from training")
    keys = [k for k in metrics if k.startswith(("recall@", "ndcg@"))]
    table.add_column("users")
    table.add_column("count", justify="right")
    for key in keys:
        table.add_column(key.replace("recall", "R").replace("ndcg", "N"), justify="right")
    for group, label in (("cold_start", "target withheld"), ("warm", "the rest")):
        g = metrics[group]
        table.add_row(label, f"{g['users']:,}", *(f"{g[k]:.4f}" if k in g else "-" for k in keys))
    return table


def memory_line(metrics: dict[str, Any]) -> str:
    """The paper's memory argument, measured: bytes per item of the model's item representation."""
    b = metrics["bytes_per_item"]
    if metrics["model_type"] == "fused":
        return (f"item memory: {b:g} bytes per item (the generator's codes plus the dense scorer's float32 item table: "
                "SASRec's embeddings or the dense head's keys)")
    if metrics["model_type"] == "sasrec":
        return f"item memory: {b:g} bytes per item (a {b / 4:g}-d float32 embedding table, grows with the catalogue)"
    return (f"item memory: {b:g} bytes per item as codes (one byte per code token) vs 256 bytes per item for a "
            "64-d float32 embedding table such as SASRec's")


FormatOpt = Annotated[Literal[FORMATS], typer.Option(
    "--format", help="What -o writes: json (the metrics), csv or md (the "
                     "metrics table; without -o onto stdout).")]


@user_errors
def evaluate_cli(
    model: Annotated[Path, typer.Argument(help="Model directory (from train, or collab --model-out).",
                                          show_default=False)],
    data: DataOpt,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the metrics here (see --format); - "
                                                      "writes stdout, and the table goes to stderr.")] = None,
    fmt: FormatOpt = "json",
    codes: Annotated[Path | None, typer.Option(help="Codes directory (default: the generator's own copy, in its "
                                                    "folder; another must have the same SHA-256).")
                     ] = None,
    split: Annotated[Literal[SPLITS], typer.Option(help="test (last item) or valid (second last).")] = "test",
    beam_size: Annotated[int | None, typer.Option(help="Generator beam size (default: as trained); the largest K "
                                                       "searches a beam of at least K.")] = None,
    ks: Annotated[str, typer.Option(help="Cut-offs K for Recall@K and NDCG@K.")] = "5,10",
    batch_size: Annotated[int, typer.Option(help="Users per batch.")] = EVAL_BATCH_SIZE,
    by_popularity: Annotated[bool, typer.Option(
        "--by-popularity", help="Also report the metrics for users grouped by how popular (in training) their "
                                "target is (and how popular their history's most recent item is), the mean "
                                "popularity of the recommended items, and the share of recommendations already "
                                "in the user's history.")] = False,
    exclude_history: Annotated[bool, typer.Option(
        "--exclude-history/--include-history", help="Rank only the items the user has not interacted with (the "
                                                    "target always stays), or every item, as the published "
                                                    "leave-one-out tables do.")] = EXCLUDE_HISTORY_EVALUATING,
    no_verify: NoVerifyOpt = False,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Leave-one-out evaluation with full ranking over all items: Recall@K and NDCG@K on the test
    split (or validation). A generator ranks by trie-constrained beam search (every result is a real
    item); SASRec scores every item.

    [bold]Examples[/bold]

      mscg evaluate work/generator -d data/ml-100k -o work/eval_mscgrec.json

      mscg evaluate work/sasrec -d data/ml-100k --split valid --by-popularity

      mscg evaluate work/sasrec -d data/ml-100k --format csv > eval.csv
    """
    output = resolve_format(fmt, output)  # --format csv|md without -o: the table onto stdout
    r = evaluate(model, data, codes=codes, split=split, beam_size=beam_size, ks=parse_ks(ks), batch_size=batch_size,
                 device=device, output=output, force=force, by_popularity=by_popularity,
                 exclude_history=exclude_history, verify=not no_verify, fmt=fmt)
    title = f"{split} split" + (", history items excluded" if exclude_history else "")
    console = human_console(output)
    console.print(metrics_table({model.name: r.metrics}, title))
    if by_popularity:
        console.print(popularity_table(r.metrics))
        console.print(popularity_table(r.metrics, by="last_item"))
    if "cold_start" in r.metrics:
        console.print(cold_start_table(r.metrics))
    info(memory_line(r.metrics))
    info("history items excluded from the ranking (--exclude-history; the target always stays)" if exclude_history
         else "history items kept in the ranking (paper protocol; --exclude-history leaves them out)")
    if output is not None and not is_stdout(output):
        info(f"wrote {output}")
