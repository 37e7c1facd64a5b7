"""README.md, a model folder's short model card, written from its config.json and meta.json alone.

What it is, the data it saw (by digest, as provenance records it), its validation metrics and how to load and
serve it. Every statement comes from a field of the two files, and a field that is absent is left out, never
guessed. Deterministic: the same config and meta give the same bytes (no clock, no path of the folder itself, so a
copied or moved folder's card stays true). The card is documentation only: no mscg reader opens it.
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from pathlib import Path
from typing import Any

from mscg.artifacts.meta import META_FILE, read_json

CARD_FILE = "README.md"
CONFIG_FILE = "config.json"  # = mscg.artifacts.modeldir.CONFIG_FILE (which imports this module)

TITLES = {"sasrec": "SASRec baseline", "mscg-generator": "MSCGRec generator", "fused": "Fused ranking"}
WRITERS = {"sasrec": "mscg collab --model-out", "mscg-generator": "mscg train", "fused": "mscg fuse"}
PART_NAMES = {"generator": "the generator", "sasrec": "SASRec", "head": "the dense head"}
WIDTH = 110  # the card's paragraphs are wrapped at this width
NOT_METRICS = ("epoch", "step", "loss", "lr")  # the other fields of a training.history entry


def _int(d: dict[str, Any], key: str) -> int | None:
    v = d.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _number(v: Any) -> str:
    """A recorded number as JSON writes it (0.114549, 3), so the card's values are the meta's."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "–"
    return json.dumps(v)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _items(config: dict[str, Any], meta: dict[str, Any]) -> str | None:
    """'a catalogue of 40 items (38 of them in training)'."""
    ids = meta.get("item_ids")
    n = len(ids) if isinstance(ids, list) else _int(config, "n_items")
    if n is None:
        return None
    text = f"a catalogue of {_plural(n, 'item')}"
    counts = meta.get("train_item_counts")
    if isinstance(counts, list) and len(counts) == n and all(isinstance(c, int) for c in counts):
        text += f" ({sum(c > 0 for c in counts):,} of them in training)"
    return text


def _transformer(config: dict[str, Any], decoder: bool) -> str | None:
    parts = []
    if _int(config, "d_model") is not None:
        parts.append(f"width {config['d_model']}")
    layers = _int(config, "n_layers")
    if layers is not None:
        dec = _int(config, "n_decoder_layers") if decoder else None
        parts.append(f"{layers} encoder + {dec} decoder layers" if dec is not None else _plural(layers, "layer"))
    if _int(config, "n_heads") is not None:
        parts.append(_plural(config["n_heads"], "head"))
    if _int(config, "max_history") is not None:
        parts.append(f"histories of up to {_plural(config['max_history'], 'item')}")
    return f"A transformer: {', '.join(parts)}." if parts else None


def _what_sasrec(config: dict[str, Any], items: str) -> list[str]:
    text = [f"A SASRec sequential recommender over {items}, the collaborative baseline: it scores every item of "
            "the catalogue by the inner product of its embedding with the encoded history."]
    text += [t] if (t := _transformer(config, decoder=False)) else []
    negatives = _int(config, "negatives")
    if negatives == 0:
        text.append("Trained with a full softmax over every item.")
    elif negatives is not None:
        sampler = config.get("negative_sampler")
        text.append(f"Trained with a sampled softmax, {negatives:,}"
                    + (f" {sampler}" if isinstance(sampler, str) else "") + " negatives per batch.")
    return text


def _what_generator(config: dict[str, Any], meta: dict[str, Any], items: str) -> list[str]:
    modalities = config.get("modalities")
    decode = config.get("decode_modality")
    text = f"An MSCGRec generative recommender over {items}: it reads a user's history as the items' semantic codes"
    if isinstance(modalities, list) and modalities and all(isinstance(m, str) for m in modalities):
        text += f" of {' + '.join(modalities)}"
    text += " and generates the next item's " + (f"{decode} codes" if isinstance(decode, str) else "codes")
    beam, constraint = _int(meta, "beam_size"), config.get("constraint")
    how = ([f"beam size {beam}"] if beam is not None else []) + \
        ([f"{constraint} constraint"] if isinstance(constraint, str) else [])
    lines = [text + (f" by beam search ({', '.join(how)})." if how else " by beam search.")]
    lines += [t] if (t := _transformer(config, decoder=True)) else []
    if _int(meta, "parameters") is not None:
        lines.append(f"{meta['parameters']:,} parameters.")
    if (_int(config, "dense_content_dim") or 0) > 0:
        lines.append(f"It also has a dense head that scores items by their content ({config['dense_content_dim']} "
                     "features; `mscg fuse --dense-head` ranks with it).")
    if isinstance(meta.get("codes"), str):
        lines.append(f"The folder holds the codes it was trained with (`{meta['codes']}/`).")
    return lines


def _fused_weights(config: dict[str, Any]) -> tuple[list[str], list[float]] | None:
    """The parts ("generator", then each dense scorer) and their weights, as config.json records them."""
    dense, weight, weights = config.get("dense"), config.get("weight"), config.get("weights")
    if isinstance(dense, str) and isinstance(weight, (int, float)):
        return ["generator", dense], [weight, round(1 - weight, 10)]
    if isinstance(dense, list) and isinstance(weights, list) and len(weights) == len(dense) + 1:
        return ["generator", *dense], list(weights)
    return None


def _what_fused(config: dict[str, Any], meta: dict[str, Any], items: str) -> list[str]:
    candidates = _int(config, "candidates")
    lines = [f"A fused ranking over {items}: it re-ranks the union of the generator's beam and each dense scorer's "
             + (f"{candidates:,} " if candidates is not None else "") + "best items by a weighted sum of their "
             "log-probabilities."]
    parts = _fused_weights(config)
    if parts is not None:
        how = {"valid": " (chosen on validation)", "given": " (given)"}.get(meta.get("weight_chosen_on"), "")
        shown = ", ".join(f"{_number(w)} on {PART_NAMES.get(p, p)}" for p, w in zip(*parts))
        lines.append(f"Weights: {shown}{how}.")
    ranked = meta.get("ranked_by")
    if isinstance(ranked, list) and ranked:
        lines.append(f"It ranks by {' and '.join(PART_NAMES.get(p, str(p)) for p in ranked)}"
                     + (" alone." if len(ranked) == 1 else "."))
    if parts is not None:
        copies = ["`generator/`"] + (["`dense/`"] if "sasrec" in parts[0] else [])
        lines.append(f"The folder holds copies of the models it fuses ({', '.join(copies)}).")
    return lines


def _data(meta: dict[str, Any]) -> list[str]:
    prov = meta.get("provenance")
    inputs = prov.get("inputs") if isinstance(prov, dict) else None
    rows = [(name, r) for name, r in (inputs.items() if isinstance(inputs, dict) else []) if isinstance(r, dict)]
    if not rows:
        return []
    out = ["## Data", "", "The inputs it was made from, as its meta.json records them (a folder's digest covers its "
           "files):", "", "| input | path | SHA-256 |", "|---|---|---|"]
    out += [f"| {name} | `{r.get('path', '–')}` | `{r.get('sha256', '–')}` |" for name, r in rows]
    return out + [""]


def _metric_order(item: tuple[str, Any]) -> tuple[bool, int, str]:
    """Overall metrics first, then per popularity third ("ndcg@10/rare"); by cut-off K, then by name."""
    name = item[0]
    k = re.search(r"@(\d+)", name)
    return "/" in name, int(k.group(1)) if k else 0, name


def _metric_table(row: dict[str, Any]) -> list[str]:
    metrics = [(k, v) for k, v in row.items() if k not in NOT_METRICS and isinstance(v, (int, float, type(None)))
               and not isinstance(v, bool)]
    metrics.sort(key=_metric_order)
    if not metrics:
        return []
    return ["| metric | value |", "|---|---|", *(f"| {k} | {_number(v)} |" for k, v in metrics), ""]


def _validation(config: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    training = meta.get("training")
    if isinstance(training, dict):
        best, run = _int(training, "best_epoch"), _int(training, "epochs_run")
        history = training.get("history")
        rows = [h for h in history if isinstance(h, dict) and h.get("epoch") == best] if isinstance(history, list) \
            else []
        table = _metric_table(rows[-1]) if best is not None and rows else []
        if table:
            runs = f" (epochs run: {run})" if run is not None else ""
            warnings = [w for w in training.get("warnings") or [] if isinstance(w, str)]
            said = ["Training warned: " + "; ".join(warnings) + ".", ""] if warnings else []
            return ["## Validation", "", f"Best epoch {best}{runs}; its validation metrics:", "", *table, *said]
    validation, parts = meta.get("validation"), _fused_weights(config)
    if isinstance(validation, list) and parts is not None:
        weights = parts[1]
        for row in validation:
            if not isinstance(row, dict):
                continue
            given = [row["weight"]] if isinstance(row.get("weight"), (int, float)) else row.get("weights")
            if isinstance(given, list) and given == weights[:len(given)] and (table := _metric_table(
                    {k: v for k, v in row.items() if k not in ("weight", "weights")})):
                users = _int(meta, "valid_users")
                on = f" on {_plural(users, 'validation user')}" if users is not None else ""
                return ["## Validation", "", f"The metrics of its weights{on}:", "", *table]
    return []


def _example_ids(meta: dict[str, Any]) -> list[str]:
    ids = meta.get("item_ids")
    ids = ids[:2] if isinstance(ids, list) else []
    if ids and all(isinstance(i, str) and 0 < len(i) <= 40 and i.isprintable() and "`" not in i for i in ids):
        return ids
    return ["ITEM_ID"]


def _use(meta: dict[str, Any]) -> list[str]:
    ids = _example_ids(meta)
    request = shlex.quote(json.dumps({"history": ids}, ensure_ascii=False))
    return [
        "## Use", "",
        "`MODEL` is this folder (it is self-contained: copy or move it whole); `DATA` a dataset folder",
        "(items.jsonl + interactions.jsonl) such as the one under Data.", "",
        "```bash",
        "mscg evaluate MODEL -d DATA -o metrics.json   # Recall@K, NDCG@K on the test split",
        f"echo {request} | mscg recommend MODEL -k 10",
        "mscg serve MODEL --port 8000                  # POST /recommend, GET /health",
        "```", "",
        "```python",
        "import mscg",
        'model = mscg.load("MODEL")',
        f"model.recommend({json.dumps(ids, ensure_ascii=False)}, k=10)  # [(item_id, score), ...], best first",
        "```", "",
    ]


def _written_by(meta: dict[str, Any]) -> list[str]:
    prov = meta.get("provenance")
    prov = prov if isinstance(prov, dict) else {}
    version, seed, command = prov.get("mscg_version"), prov.get("seed"), prov.get("command")
    facts = ([f"mscg {version}"] if isinstance(version, str) else []) + \
        ([f"seed {seed}"] if isinstance(seed, int) and not isinstance(seed, bool) else [])
    out = [f"Written by {', '.join(facts)}" + (":" if isinstance(command, list) else ".")] if facts else []
    if isinstance(command, list) and all(isinstance(a, str) for a in command):
        out += ["", "```", shlex.join(command), "```"]
    return out


def model_card(config: dict[str, Any], meta: dict[str, Any]) -> str:
    """The Markdown model card of a model folder with this config.json and meta.json."""
    config = config if isinstance(config, dict) else {}
    meta = meta if isinstance(meta, dict) else {}
    model_type = config.get("model_type", meta.get("model_type"))
    model_type = model_type if isinstance(model_type, str) else "unknown"
    items = _items(config, meta) or "its catalogue"
    if model_type == "sasrec":
        what = _what_sasrec(config, items)
    elif model_type == "mscg-generator":
        what = _what_generator(config, meta, items)
    elif model_type == "fused":
        what = _what_fused(config, meta, items)
    else:
        what = [f"A {model_type} model over {items}."]
    writer = f", written by `{WRITERS[model_type]}`" if model_type in WRITERS else ""
    about = f"An mscg model folder{writer}. " + " ".join(what)
    lines = [f"# {TITLES.get(model_type, 'mscg model')}: `{model_type}`", "",
             textwrap.fill(about, WIDTH, break_long_words=False, break_on_hyphens=False), ""]
    lines += _data(meta) + _validation(config, meta) + _use(meta) + _written_by(meta)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def write_model_card(folder: Path) -> None:
    """(Re)write FOLDER/README.md from the folder's config.json and meta.json (written before this)."""
    folder = Path(folder)
    config = read_json(folder / CONFIG_FILE, f"write {CONFIG_FILE} before the model card")
    meta = read_json(folder / META_FILE, f"write {META_FILE} before the model card")
    (folder / CARD_FILE).write_text(model_card(config, meta), encoding="utf-8", newline="\n")
