"""Pictures of mscg artifacts (`mscg plot`), drawn with matplotlib's Agg backend into PNG bytes.

    a model, quantizer or collab embeddings folder   training curves from its training_log.csv: the loss per
                                                     step record and per epoch, the learning rate, and the
                                                     validation metrics (also per popularity third)
    a codes folder (assign-codes)                    per modality: items per codeword at each level (codebook
                                                     usage) and the sizes of the collision groups
    evaluation files (evaluate -o, compare -o)       grouped bars of Recall/NDCG@K, one bar per run

matplotlib is imported inside the drawing functions only: the rest of mscg never loads it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from mscg.artifacts.evaluations import entry, read_runs
from mscg.errors import DataError, UsageError

WHAT = "a model, quantizer or codes folder, or evaluation files (`mscg evaluate -o`, `mscg compare -o`)"


# ---- what was given ---------------------------------------------------------------------------------

def plot_png(inputs: list[str]) -> tuple[str, bytes]:
    """(what was drawn: "training" | "codes" | "metrics", the PNG) for the inputs of `mscg plot`."""
    if not inputs:
        raise UsageError(f"mscg plot needs an input: {WHAT}")
    paths = [entry(text)[1] for text in inputs]
    for path in paths:
        if not path.exists():
            raise DataError(f"{path} does not exist; pass {WHAT}")
    folders = [p for p in paths if p.is_dir()]
    if folders:
        if len(paths) > 1:
            raise UsageError(f"{folders[0]} is a folder: mscg plot draws one model or codes folder at a time, or "
                             "several evaluation files; pass it alone")
        return _folder(folders[0])
    return "metrics", metrics_png(read_runs(inputs, fix="pass those, or one model or codes folder"))


def _folder(path: Path) -> tuple[str, bytes]:
    from mscg.artifacts.meta import read_json
    from mscg.artifacts.training_log import LOG_FILE, read_training_log

    if not (path / "meta.json").is_file():
        raise DataError(f"{path} holds no meta.json, so it is not an mscg folder; pass {WHAT}")
    meta = read_json(path / "meta.json", "")
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind == "codes":
        from mscg.artifacts.codes import load_codes

        return "codes", codes_png(load_codes(path, "plot"))
    if kind not in ("model", "quantizer", "embeddings"):
        found = f"a {kind!r} folder" if isinstance(kind, str) else "not an mscg artifact"
        raise DataError(f"{path} is {found}; pass {WHAT}")
    log = path / LOG_FILE
    if not log.is_file():
        training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
        if kind == "quantizer" and meta.get("method") == "rq-kmeans":
            raise DataError(f"{path} is a residual k-means quantizer, which has no training loop (its per-level "
                            "residuals are in meta.json training.levels); plot the codes made from it instead")
        source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
        if kind == "embeddings" and not str(source.get("encoder", "")).startswith("SASRec"):
            raise DataError(f"{path} holds embeddings from a pretrained encoder, which mscg did not train; pass "
                            f"{WHAT}")
        when = " (its meta.json holds no records either)" if not training.get("steps") else ""
        raise DataError(f"{path} has no {LOG_FILE}: it was trained before mscg recorded losses{when}; retrain it, "
                        "or pass an evaluation file")
    rows = read_training_log(log)
    if not rows:
        raise DataError(f"{log} holds no records; retrain {path}, or pass an evaluation file")
    title = f"{path.name}: {meta.get('model_type') or meta.get('method') or kind}"
    return "training", training_png(rows, title)


# ---- drawing ----------------------------------------------------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png", metadata={"Software": None})  # no version stamp: same data, same bytes
    return out.getvalue()


def _metric_order(key: str) -> tuple:
    name, _, k = key.partition("@")
    k, _, group = k.partition("/")
    return (group, name != "recall", int(k) if k.isdigit() else 0)


def training_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """Loss per step record and per epoch with the learning rate on a second axis; validation metrics per
    validated epoch (overall, and per popularity third when recorded)."""
    from matplotlib.ticker import MaxNLocator

    steps = [r for r in rows if r["kind"] == "step" and r.get("loss") is not None]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    metrics = sorted({k for r in epochs for k, v in r.items() if "@" in k and v is not None}, key=_metric_order)
    overall = [k for k in metrics if "/" not in k]
    thirds = [k for k in metrics if "/" in k]
    panels = 1 + bool(overall) + bool(thirds)
    figure = _figure(8, 3.2 * panels)
    axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
    figure.suptitle(title)

    ax = axes[0]
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], color="tab:blue", linewidth=1,
                label="loss (mean between step records)")
    with_loss = [r for r in epochs if r.get("loss") is not None and r.get("step") is not None]
    if with_loss:
        ax.plot([r["step"] for r in with_loss], [r["loss"] for r in with_loss], "o-", color="tab:orange",
                markersize=4, label="loss (epoch mean)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    lr_rows = [r for r in (steps or epochs) if r.get("lr") is not None and r.get("step") is not None]
    lines, labels = ax.get_legend_handles_labels()
    if lr_rows:
        lr_axis = ax.twinx()
        lr_axis.plot([r["step"] for r in lr_rows], [r["lr"] for r in lr_rows], "--", color="tab:gray", linewidth=1,
                     label="learning rate")
        lr_axis.set_ylabel("learning rate")
        more = lr_axis.get_legend_handles_labels()
        lines, labels = lines + more[0], labels + more[1]
    if lines:
        ax.legend(lines, labels, loc="upper right", fontsize="small")

    for ax, keys, what in ((axes[1] if overall else None, overall, "validation"),
                           (axes[-1] if thirds else None, thirds, "validation per popularity third of the target")):
        if ax is None:
            continue
        groups = list(dict.fromkeys(k.partition("/")[2] for k in keys))
        for n, key in enumerate(keys):
            points = [(r["epoch"], r[key]) for r in epochs if r.get(key) is not None]
            group = key.partition("/")[2]
            style = ({"color": f"C{groups.index(group)}", "linestyle": "-" if key.startswith("recall") else "--"}
                     if group else {"color": f"C{n}"})
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=key, **style)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", ncols=3 if len(keys) > 6 else 1)
    return _png(figure)


def codes_png(codes) -> bytes:
    """Per modality: items per codeword at each quantizer level, sorted (the codebook usage), and how many items
    share their quantizer code with how many others (the collision groups the last level separates)."""
    import numpy as np

    modalities = codes.vocab.modalities
    figure = _figure(11, 3.4 * len(modalities))
    axes = figure.subplots(len(modalities), 2, squeeze=False)
    figure.suptitle(f"{Path(codes.path).name if codes.path else 'codes'}: {len(codes.item_ids):,} items")
    matrix = codes.codes.numpy()
    for row, modality in enumerate(modalities):
        columns = codes.vocab.columns_of(modality)
        slots = codes.vocab.slots_of(modality)
        present = matrix[:, columns[0]] >= 0
        quantizer = matrix[present][:, columns[:-1]]  # (n, L): the collision level (last) left out
        usage_axis, group_axis = axes[row]
        for level, slot in enumerate(slots[:-1]):
            counts = np.sort(np.bincount(quantizer[:, level], minlength=slot.size))[::-1]
            used = int((counts > 0).sum())
            usage_axis.plot(np.arange(1, slot.size + 1), counts, drawstyle="steps-mid",
                            label=f"level {level + 1}: {used}/{slot.size} used ({used / slot.size:.0%})")
        usage_axis.set_yscale("symlog", linthresh=1)
        usage_axis.set_xlabel("codeword (by items, most used first)")
        usage_axis.set_ylabel("items")
        usage_axis.set_title(f"{modality}: codebook usage ({int(present.sum()):,} items)")
        usage_axis.grid(alpha=0.3)
        usage_axis.legend(fontsize="small")
        if len(quantizer):
            _, sizes = np.unique(quantizer, axis=0, return_counts=True)
            size_values, groups = np.unique(sizes, return_counts=True)
            items = size_values * groups
            group_axis.bar([str(s) for s in size_values], items, color="tab:purple")
            collided = int(items[size_values > 1].sum())
            group_axis.set_title(f"{modality}: collision groups ({collided / len(quantizer):.1%} of items collide, "
                                 f"largest {int(size_values.max())})")
        group_axis.set_xlabel("items sharing a quantizer code")
        group_axis.set_ylabel("items")
        group_axis.grid(alpha=0.3, axis="y")
    return _png(figure)


def metrics_png(runs: dict[str, dict[str, Any]]) -> bytes:
    """Grouped bars: one group per Recall/NDCG@K, one bar per run (missing or null metrics left out)."""
    import numpy as np

    keys = sorted({k for m in runs.values() for k, v in m.items() if k.startswith(("recall@", "ndcg@"))
                   and isinstance(v, (int, float)) and not isinstance(v, bool)}, key=_metric_order)
    if not keys:
        raise DataError(f"{', '.join(runs)}: no Recall@K or NDCG@K to draw; pass files written by `mscg evaluate -o`")
    figure = _figure(max(6.0, 1.2 * len(keys) + 0.3 * len(keys) * len(runs)), 4.5)
    ax = figure.subplots()
    width = 0.8 / len(runs)
    x = np.arange(len(keys))
    for i, (name, metrics) in enumerate(runs.items()):
        values = [metrics.get(k) if isinstance(metrics.get(k), (int, float)) else np.nan for k in keys]
        bars = ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize="x-small", padding=1)
    ax.set_xticks(x, keys)
    splits = sorted({str(m.get("split", "test")) for m in runs.values()})
    ax.set_ylabel(f"{'/'.join(splits)} split")
    ax.set_title(f"{len(runs)} run{'s' if len(runs) > 1 else ''}, full ranking")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    return _png(figure)


def describe(what: str) -> str:
    return {"training": "training curves", "codes": "codebook usage and collision groups",
            "metrics": "metrics"}[what]
