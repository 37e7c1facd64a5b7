"""`mscg assign-codes`: apply one quantizer per modality and write every item's multimodal code."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from mscg.artifacts.atomic import AtomicDir, check_output
from mscg.artifacts.meta import MODALITIES, input_record, meta_inputs, provenance, verify_input
from mscg.commands._common import DataOpt, DeviceOpt, ForceOpt, NoVerifyOpt, OutputOpt, SeedOpt, user_errors
from mscg.console import info
from mscg.data.items import Catalogue, load_catalogue
from mscg.data.split import dataset_files
from mscg.errors import DataError, UsageError


@dataclass
class AssignResult:
    items: int
    modalities: list[dict[str, Any]] = field(default_factory=list)
    vocab_size: int = 0
    slots: int = 0


def parse_overrides(pairs: list[str], flag: str) -> dict[str, Path]:
    out = {}
    for pair in pairs:
        modality, sep, path = pair.partition("=")
        if not sep or modality not in MODALITIES:
            raise UsageError(f"{flag} {pair!r} must look like MODALITY=PATH with MODALITY one of "
                             f"{', '.join(MODALITIES)}")
        out[modality] = Path(path)
    return out


def quantized_modalities(quantizers: list[Path]) -> dict[str, str]:
    """{modality: what its quantizer reads ("embeddings" or "images")}, from the quantizers' files alone."""
    from mscg.artifacts.modeldir import read_model_dir
    from mscg.quantizers import METHODS, QUANTIZERS

    found = {}
    for q in quantizers:
        config, meta = read_model_dir(q, "quantizer", "--quantizer", METHODS)
        modality = meta.get("modality", config.get("modality"))
        if modality in MODALITIES:
            found.setdefault(modality, QUANTIZERS[config["model_type"]].reads)
    return found


def check_overrides(overrides: dict[str, Path], quantizers: list[Path]) -> None:
    """Every --embeddings MODALITY=PATH must replace the embeddings of one of the quantizers given."""
    if not overrides:
        return
    reads = quantized_modalities(quantizers)
    for modality, path in overrides.items():
        if reads.get(modality) != "embeddings":
            why = ("its quantizer learns from the item images, not from embeddings" if modality in reads else
                   f"no --quantizer quantizes {modality} (they quantize {', '.join(reads) or 'nothing'})")
            raise UsageError(f"--embeddings {modality}={path} would not be used: {why}; drop it, or add the "
                             f"{modality} quantizer")


def modality_codes(quantizer_path: Path, catalogue: Catalogue, overrides: dict[str, Path],
                   device, skip_bad_images: bool,
                   verify: bool = True) -> tuple[str, np.ndarray, np.ndarray, list[int], dict]:
    """(modality, rows of the catalogue that have it, their codes (n, L), codebook sizes, record).

    The embeddings a quantizer was trained on are found through its meta.json and, with `verify`, must
    still have the SHA-256 recorded there; embeddings given with --embeddings replace them on purpose."""
    from mscg.artifacts.embeddings import load_embeddings
    from mscg.quantizers import QUANTIZERS, encode_images, load_quantizer

    model, config, meta = load_quantizer(quantizer_path)
    modality = meta.get("modality", config.get("modality"))
    record: dict[str, Any] = {"quantizer": input_record(quantizer_path), "method": config["model_type"]}
    if QUANTIZERS[config["model_type"]].reads == "embeddings":
        trained_on = meta.get("input", {}).get("embeddings", "") if isinstance(meta.get("input"), dict) else ""
        source = overrides.get(modality) or Path(trained_on if isinstance(trained_on, str) else "")
        if verify and modality not in overrides:
            verify_input(source, meta, "embeddings", quantizer_path)
        emb = load_embeddings(source, f"--embeddings {modality}=")
        if emb.modality != modality:
            raise DataError(f"{source} holds {emb.modality} embeddings but {quantizer_path} quantizes {modality}; "
                            f"pass --embeddings {modality}=PATH")
        if emb.dim != config["dim"]:
            raise DataError(f"{source} has {emb.dim}-d vectors but {quantizer_path} was trained on {config['dim']}-d "
                            "ones; pass the embeddings it was trained on")
        unknown = [i for i in emb.item_ids if i not in catalogue.index]
        if unknown:
            raise DataError(f"{source} has {len(unknown):,} items that are not in {catalogue.path} "
                            f"(e.g. {unknown[0]!r}); make the embeddings from the same items.jsonl")
        rows = np.array([catalogue.index[i] for i in emb.item_ids], dtype=np.int64)
        codes = model.encode(emb.vectors).numpy()
        record["embeddings"] = input_record(source)
        made_by = emb.meta.get("source") if isinstance(emb.meta.get("source"), dict) else {}
        for key, name in (("predicted_item_ids", "predicted_items"), ("untrained_item_ids", "untrained_items")):
            if isinstance(made_by.get(key), list):  # collab embeddings: from content (predict-collab), or untrained
                record[name] = len(made_by[key])
    else:
        rows, codes = encode_images(model, catalogue, device, skip_bad_images=skip_bad_images)
        record["items"] = input_record(catalogue.path)
    order = np.argsort(rows, kind="stable")  # catalogue order, so the collision level follows it
    return modality, rows[order], codes[order], list(config["codebook_sizes"]), record


def assign_codes(data: Path, output: Path, *, quantizers: list[Path], embeddings: dict[str, Path] | None = None,
                 device: str = "auto", seed: int = 0, skip_bad_images: bool = False,
                 force: bool = False, verify: bool = True) -> AssignResult:
    import torch

    from mscg.artifacts.codes import Codes, Vocabulary, code_statistics, collision_level, save_codes
    from mscg.devices import resolve_device

    if not quantizers:
        raise UsageError("pass at least one --quantizer (-q), one per modality")
    items_path, _ = dataset_files(data)
    # never write into an input, nor into what the quantizers were made from (their embeddings)
    inputs = [Path(data), items_path, *quantizers, *(p for q in quantizers for p in meta_inputs(q)),
              *(embeddings or {}).values()]
    check_output(output, force=force, inputs=inputs)
    check_overrides(embeddings or {}, quantizers)
    catalogue = load_catalogue(items_path)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    per_modality: dict[str, tuple] = {}
    for q in quantizers:
        modality, rows, codes, sizes, record = modality_codes(q, catalogue, embeddings or {}, dev, skip_bad_images,
                                                              verify)
        if modality in per_modality:
            raise UsageError(f"two quantizers for the {modality} modality "
                             f"({per_modality[modality][3]['quantizer']['path']} and {q}); pass one per modality")
        per_modality[modality] = (rows, codes, sizes, record)

    ordered = [m for m in MODALITIES if m in per_modality]  # fixed modality order: text, image, collab
    N = len(catalogue)
    columns, slot_sizes, records = [], {}, []
    for m in ordered:
        rows, codes, sizes, record = per_modality[m]
        suffix, collision_size = collision_level(codes)
        full = np.full((N, len(sizes) + 1), -1, dtype=np.int64)
        full[rows, : len(sizes)] = codes
        full[rows, len(sizes)] = suffix
        columns.append(full)
        slot_sizes[m] = sizes + [collision_size]
        stats = code_statistics(codes, sizes)
        records.append({"name": m, "n_levels": len(sizes), "codebook_sizes": sizes, "collision_size": collision_size,
                        "items_with_modality": int(len(rows)), "items_without_modality": int(N - len(rows)),
                        "stats": stats, **record})
    vocab = Vocabulary.build(slot_sizes)
    result = Codes(item_ids=catalogue.item_ids, codes=torch.from_numpy(np.concatenate(columns, axis=1)), vocab=vocab)
    with AtomicDir(output, force=force, inputs=inputs) as tmp:
        save_codes(tmp, result, modalities=records,
                   provenance=provenance({"items": items_path,
                                          **{f"quantizer_{m}": per_modality[m][3]["quantizer"]["path"]
                                             for m in ordered}}, seed))
    return AssignResult(items=N, modalities=records, vocab_size=vocab.size, slots=len(vocab.slots))


@user_errors
def assign_codes_cli(
    data: DataOpt,
    output: OutputOpt,
    quantizer: Annotated[list[Path], typer.Option("--quantizer", "-q", help="Quantizer directory; repeat once per "
                                                                            "modality.", show_default=False)],
    embeddings: Annotated[list[str], typer.Option(help="MODALITY=PATH: embeddings to quantize instead of those the "
                                                       "quantizer was trained on (repeatable).")] = [],
    skip_bad_images: Annotated[bool, typer.Option("--skip-bad-images", help="rq-dino: treat unreadable image "
                                                  "files as 'no image'.")] = False,
    no_verify: NoVerifyOpt = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Give every catalogue item its multimodal code: the quantizer codes of each modality plus a
    collision level, concatenated in the fixed order text, image, collab.

    Reads DATA/items.jsonl and the quantizers (each remembers the embeddings it was trained on);
    writes OUTPUT/codes.safetensors + meta.json with the vocabulary layout and collision statistics.
    Items lacking a modality get -1 there (the generator sees that modality's mask token).

    [bold]Examples[/bold]

      mscg assign-codes -d data/ml-100k -q work/q_text -q work/q_collab -o work/codes

      mscg assign-codes -d data/ml-100k -q work/q_text -q work/q_image -q work/q_collab -o work/codes
    """
    r = assign_codes(data, output, quantizers=quantizer, embeddings=parse_overrides(embeddings, "--embeddings"),
                     device=device, seed=seed, skip_bad_images=skip_bad_images, force=force, verify=not no_verify)
    for m in r.modalities:
        s = m["stats"]
        info(f"{m['name']}: {m['items_with_modality']:,} items, {m['n_levels']} x {m['codebook_sizes'][0]} codes + "
             f"collision level of {m['collision_size']}; collision rate {s.get('collision_rate', 0):.1%}, "
             f"codebook usage {'/'.join(f'{u:.0%}' for u in s.get('codebook_usage', []))}"
             + (f"; {m['predicted_items']:,} predicted from content" if m.get("predicted_items") else ""))
        if m.get("untrained_items"):
            info(f"{m['name']}: {m['untrained_items']:,} items have codes from untrained SASRec rows (no training "
                 "interaction); `mscg predict-collab` predicts their embeddings from content instead")
    info(f"wrote {output}: {r.items:,} items x {r.slots} tokens, vocabulary of {r.vocab_size:,} ids "
         f"({r.slots} bytes per item as codes)")
