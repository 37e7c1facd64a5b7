"""`mscg quantize`: learn a residual quantizer for one modality and write a quantizer directory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from mscg.artifacts.atomic import check_output, main_rank_output
from mscg.artifacts.meta import MODALITIES, QUANTIZER_METHODS as METHODS, provenance
from mscg.commands._common import DeviceOpt, ForceOpt, OutputOpt, QuantizeLogEveryOpt, ResumeOpt, SeedOpt, user_errors
from mscg.console import info, render, warn
from mscg.errors import UsageError

DEFAULT_CODEBOOK_CAP = 256


def auto_codebook_size(n_items: int, cap: int = DEFAULT_CODEBOOK_CAP) -> int:
    """Smallest power of two >= sqrt(n_items), between 2 and `cap` (256 from ~33k items on)."""
    return int(min(cap, max(2, 2 ** math.ceil(math.log2(math.sqrt(max(n_items, 1)))))))


@dataclass
class QuantizeResult:
    method: str
    modality: str
    items: int
    codebook_sizes: list[int]
    stats: dict[str, Any] = field(default_factory=dict)


def parse_codebook_size(text: str, n_levels: int, n_items: int) -> list[int]:
    if n_levels < 1:
        raise UsageError("--n-levels must be at least 1")
    if text == "auto":
        return [auto_codebook_size(n_items)] * n_levels
    try:
        sizes = [int(t) for t in text.split(",")]
    except ValueError:
        raise UsageError(f"--codebook-size {text!r} must be auto, an integer, or one integer per level") from None
    if len(sizes) == 1:
        sizes = sizes * n_levels
    if len(sizes) != n_levels or min(sizes) < 2:
        raise UsageError(f"--codebook-size {text!r}: give one size >= 2, or {n_levels} comma-separated sizes")
    return sizes


def quantize(output: Path, *, modality: str | None = None, method: str = "rq-kmeans", embeddings: Path | None = None,
             data: Path | None = None, n_levels: int = 3, codebook_size: str = "auto", normalize: bool = True,
             seed: int = 0, device: str = "auto", force: bool = False, resume: bool = False,
             options: dict[str, Any] | None = None) -> QuantizeResult:
    """Train the quantizer `method` and write it to OUTPUT. `options`: the method's training options and,
    for rq-dino, architecture fields (the registry says which; anything else is refused)."""
    from mscg.quantizers import QUANTIZERS
    from mscg.training import distributed as dist

    dist.init_from_env()
    options = dict(options or {})
    if modality is None and QUANTIZERS.get(method) is not None and QUANTIZERS[method].reads == "images":
        modality = "image"  # the method implies it
    if modality is None:
        raise UsageError(f"--method {method} needs --modality (one of: {', '.join(MODALITIES)})")
    if modality not in MODALITIES:
        raise UsageError(f"--modality {modality!r} must be one of: {', '.join(MODALITIES)}")
    if method not in QUANTIZERS:
        raise UsageError(f"--method {method!r} must be one of: {', '.join(QUANTIZERS)}")
    kind = QUANTIZERS[method]
    unknown = sorted(set(options) - kind.options())
    if unknown:
        why = " (it has no training loop)" if kind.training is None else ""
        raise UsageError(f"--{unknown[0].replace('_', '-')} does not apply to --method {method}{why}; drop it")
    training_fields = {f.name for f in fields(kind.training)} if kind.training is not None else set()
    training = kind.training(**{k: v for k, v in options.items() if k in training_fields}) \
        if kind.training is not None else None
    config_fields = {k: v for k, v in options.items() if k not in training_fields}
    if kind.reads == "images":
        if modality != "image":
            raise UsageError(f"--method {method} learns image codes from pixels; use it with --modality image")
        if data is None:
            raise UsageError(f"--method {method} trains on the item images: pass --data (the folder of items.jsonl)")
        return quantize_images(output, kind, training, config_fields, data=data, n_levels=n_levels,
                               codebook_size=codebook_size, seed=seed, device=device, force=force, resume=resume)
    if embeddings is None:
        raise UsageError(f"--method {method} quantizes vectors: pass --embeddings (made by `mscg embed`, "
                         "`mscg collab` or `mscg import-embeddings`)")
    return quantize_embeddings(output, kind, training, config_fields, embeddings=embeddings, modality=modality,
                               n_levels=n_levels, codebook_size=codebook_size, normalize=normalize, seed=seed,
                               device=device, force=force, resume=resume)


def check_training(training) -> None:
    """Refuse bad epochs / batch size / learning rate before anything slow runs."""
    from mscg.training.loop import LoopConfig

    if training is not None:
        given = {k: getattr(training, k) for k in ("epochs", "batch_size", "lr", "log_every")
                 if getattr(training, k) is not None}
        LoopConfig(**{"epochs": 1, "batch_size": 1, "lr": 1e-3, **given}).check()


def quantize_embeddings(output: Path, kind, training, config_fields: dict[str, Any], *, embeddings: Path,
                        modality: str, n_levels: int,
                        codebook_size: str, normalize: bool, seed: int, device: str, force: bool,
                        resume: bool) -> QuantizeResult:
    import torch

    from mscg.artifacts.codes import code_statistics
    from mscg.artifacts.embeddings import load_embeddings
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.training import distributed as dist
    from mscg.training.loop import RESUME_FILE

    method = kind.config.model_type
    check_training(training)
    if dist.is_main():
        check_output(output, force=force, inputs=[embeddings])
    emb = load_embeddings(embeddings)
    if emb.modality != modality:
        raise UsageError(f"--embeddings {embeddings} holds {emb.modality} embeddings, not {modality}; pass "
                         f"--modality {emb.modality} or the {modality} embeddings")
    sizes = parse_codebook_size(codebook_size, n_levels, len(emb.item_ids))
    dev = dist.resolve_device(device)
    torch.manual_seed(seed)
    prov = provenance({"embeddings": embeddings}, seed)
    config = kind.config(dim=emb.dim, codebook_sizes=sizes, normalize=normalize, modality=modality, **config_fields)
    name = "residual k-means" if method == "rq-kmeans" else "RQ-VAE"
    info(f"quantize: {name}, {n_levels} levels x {sizes[0]} codewords on {len(emb.item_ids):,} {modality} vectors")
    with main_rank_output(output, main=dist.is_main(), force=force, inputs=[embeddings],
                          resumable=training is not None, resume=resume) as tmp:
        events = kind.fit(config, training, emb.vectors, emb.item_ids, seed=seed, device=dev, checkpoint_dir=tmp,
                          resume=resume, source=str(emb.path or "the embeddings"))
        model, summary = render(events, f"quantize ({method})", quiet=not dist.is_main())
        model = model.cpu().eval()
        codes = model.encode(emb.vectors).numpy()
        stats = code_statistics(codes, sizes)
        stats["reconstruction_mse"] = model.reconstruction_error(emb.vectors)
        if dist.is_main():
            save_model_dir(tmp, "quantizer", model, config.to_json(), modality=modality, method=method,
                           input={"embeddings": str(Path(embeddings).resolve())}, stats=stats, training=summary,
                           provenance=prov)
            (tmp / RESUME_FILE).unlink(missing_ok=True)  # last: a failed save keeps the checkpoint
    dist.barrier()
    return QuantizeResult(method, modality, len(emb.item_ids), sizes, stats)


def quantize_images(output: Path, kind, training, config_fields: dict[str, Any], *, data: Path, n_levels: int,
                    codebook_size: str, seed: int, device: str, force: bool, resume: bool) -> QuantizeResult:
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.data.items import load_catalogue
    from mscg.data.split import dataset_files
    from mscg.encoders.image import decode_images
    from mscg.training import distributed as dist
    from mscg.training.loop import RESUME_FILE

    method = kind.config.model_type
    items_path, _ = dataset_files(data)
    if dist.is_main():
        check_output(output, force=force, inputs=[items_path])  # fail before the slow part
    catalogue = load_catalogue(items_path)
    n_imaged = sum(p is not None for p in catalogue.images)
    sizes = parse_codebook_size(codebook_size, n_levels, n_imaged)
    config = rq_dino_config(sizes, config_fields)
    check_training(training)
    dev = dist.resolve_device(device)
    rows, images, skipped = decode_images(catalogue, config.cache_size, skip_bad_images=training.skip_bad_images)
    prov = provenance({"items": items_path}, seed)

    def announce(plan: dict[str, Any]) -> None:
        if dist.is_main():
            info(f"quantize: {method} ({config.backbone}) on {len(rows):,} images, {n_levels} levels x {sizes[0]} "
                 f"codewords; {plan['epochs']} epochs of {plan['steps_per_epoch']} steps, crops "
                 f"{config.image_size}/{config.local_size} px"
                 + (f" ({skipped:,} unreadable images skipped)" if skipped else ""))

    with main_rank_output(output, main=dist.is_main(), force=force, inputs=[items_path], resumable=True,
                          resume=resume) as tmp:
        events = kind.fit(config, training, images, seed=seed, device=dev, checkpoint_dir=tmp, resume=resume,
                          fingerprint={"inputs": prov["inputs"], "skipped_unreadable": skipped})
        model, summary, _, stats = render(events, f"quantize ({method})", quiet=not dist.is_main(),
                                          on_info=announce)
        stats["skipped_unreadable"] = skipped
        if dist.is_main():
            save_model_dir(tmp, "quantizer", model, config.to_json(), modality="image", method=method,
                           input={"items": str(Path(items_path).resolve())}, stats=stats,
                           training={**summary, "skipped_unreadable": skipped}, provenance=prov)
            (tmp / RESUME_FILE).unlink(missing_ok=True)  # last: a failed save keeps the checkpoint
    dist.barrier()
    return QuantizeResult(method, "image", len(rows), sizes, stats)


def rq_dino_config(sizes: list[int], fields: dict[str, Any]):
    """The RQ-DINO architecture from quantize's options (config fields), each checked with its flag named."""
    from mscg.models.rq_dino import BACKBONES, EFFICIENTNET_BLOCKS, RQDINOConfig

    fields = dict(fields)
    backbone = fields.get("backbone", "efficientnet-lite0")
    if backbone not in BACKBONES:
        raise UsageError(f"--backbone {backbone!r} must be one of: {', '.join(BACKBONES)}")
    if "image_size" in fields and "local_size" not in fields:
        fields["local_size"] = max(16, round(fields["image_size"] * 3 / 7))  # DINO's 96 for 224
    config = RQDINOConfig(codebook_sizes=sizes, **fields)
    if config.image_size < 32 or config.local_size < 16:
        raise UsageError(f"--image-size {config.image_size} is too small; use at least 32 pixels (default 112)")
    if config.n_local < 0:
        raise UsageError("n_local must be 0 or more")
    if backbone == "efficientnet-lite0" and not 0 <= config.train_blocks <= EFFICIENTNET_BLOCKS:
        raise UsageError(f"train_blocks {config.train_blocks} must be between 0 and {EFFICIENTNET_BLOCKS} "
                         "(EfficientNet-Lite0's blocks)")
    if backbone == "vit-small":
        if config.vit_dim % config.vit_heads:
            raise UsageError(f"vit_dim {config.vit_dim} must be divisible by vit_heads {config.vit_heads}")
        if config.local_size < config.patch_size:
            raise UsageError(f"local crops of {config.local_size} px are smaller than a {config.patch_size} px patch; "
                             "raise --image-size")
    return config


def describe_stats(stats: dict[str, Any]) -> str:
    usage = "/".join(f"{u:.0%}" for u in stats.get("codebook_usage", []))
    text = (f"codebook usage per level {usage}; {stats.get('unique_codes', 0):,} distinct codes, "
            f"collision rate {stats.get('collision_rate', 0):.1%} "
            f"(largest group {stats.get('largest_collision_group')})")
    if "before_refit" in stats:
        before = stats["before_refit"]
        text += (f" (trained codebooks before the k-means refit: usage "
                 f"{'/'.join(f'{u:.0%}' for u in before['codebook_usage'])}, collision rate "
                 f"{before['collision_rate']:.1%})")
    if "reconstruction_mse" in stats:
        text += f"; reconstruction MSE {stats['reconstruction_mse']:.4f}"
    return text


@user_errors
def quantize_cli(
    output: OutputOpt,
    modality: Annotated[Literal[MODALITIES] | None, typer.Option(
        help="text, image or collab (default: image for rq-dino; "
             "required otherwise).", show_default=False)] = None,
    embeddings: Annotated[Path | None, typer.Option(help="Embeddings directory to quantize "
                                                         "(rq-kmeans, rq-vae).")] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Folder of items.jsonl (rq-dino trains on its "
                                                                   "images).")] = None,
    method: Annotated[Literal[METHODS], typer.Option(help="rq-kmeans, rq-vae, or rq-dino "
                                             "(learns from the item images).")] = "rq-kmeans",
    n_levels: Annotated[int, typer.Option(help="Quantizer levels (a collision level is added by assign-codes).")] = 3,
    codebook_size: Annotated[str, typer.Option(help="Codewords per level: auto (the smallest power of two >= "
                                                    "sqrt(items), at most 256), N, or N1,N2,N3.")] = "auto",
    normalize: Annotated[bool, typer.Option(help="L2-normalise vectors before quantizing.")] = True,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (rq-vae, rq-dino; default: chosen from the "
                                                    "catalogue size (rq-vae: at least 20 passes and 3,000 steps), "
                                                    "from the image count (rq-dino: ~5 for 1,252 images)).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (rq-vae, rq-dino; default: chosen from the "
                                                        "catalogue size, 256 to 1024 (rq-vae), 32 (rq-dino)).")
                          ] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (rq-vae, rq-dino; default: 1e-3 (rq-vae), 5e-4 "
                                                  "(rq-dino)).")] = None,
    log_every: QuantizeLogEveryOpt = None,
    backbone: Annotated[str | None, typer.Option(help="rq-dino backbone: efficientnet-lite0 (pretrained) or "
                                                      "vit-small (from scratch).")] = None,
    image_size: Annotated[int | None, typer.Option(help="rq-dino global crop size in pixels.")] = None,
    skip_bad_images: Annotated[bool, typer.Option("--skip-bad-images", help="rq-dino: treat unreadable image "
                                                  "files as 'no image'.")] = False,
    refit_codebooks: Annotated[bool, typer.Option(help="rq-dino: refit the codebooks by residual k-means on the "
                                                       "final teacher latents before coding.")] = True,
    balanced_last_level: Annotated[bool, typer.Option(
        "--balanced-last-level", help="rq-kmeans: assign the last level by a balanced (Sinkhorn) assignment over "
                                      "the items, so that its codewords are used about equally.")] = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
) -> None:
    """Learn a residual quantizer (L levels of codebooks) for one modality.

    rq-kmeans and rq-vae read an embeddings directory; rq-dino learns image codes from the pixels
    of DATA/items.jsonl's images (self-distillation, no reconstruction). Writes OUTPUT/config.json
    + model.safetensors + meta.json (codebook usage and collision rate included).

    [bold]Examples[/bold]

      mscg quantize --modality text --embeddings work/emb_text -o work/q_text

      mscg quantize --method rq-dino -d data/ml-100k -o work/q_image
    """
    options = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr, "log_every": log_every,
                                 "backbone": backbone,
                                 "image_size": image_size, "skip_bad_images": skip_bad_images,
                                 "balanced_last_level": balanced_last_level}.items()
               if v is not None and v is not False}  # 0 is a value (and is refused), not "unset"
    if not refit_codebooks:
        if method != "rq-dino":
            raise UsageError("--no-refit-codebooks only applies to --method rq-dino")
        options["refit_codebooks"] = False
    from mscg.training import distributed as dist

    r = quantize(output, modality=modality, method=method, embeddings=embeddings, data=data, n_levels=n_levels,
                 codebook_size=codebook_size, normalize=normalize, seed=seed, device=device, force=force,
                 resume=resume, options=options)
    if dist.is_main():
        info(f"wrote {output}: {r.method} on {r.items:,} {r.modality} items, "
             f"{len(r.codebook_sizes)} x {r.codebook_sizes[0]}; {describe_stats(r.stats)}")
        if r.items > 1 and r.stats.get("unique_codes") == 1:
            warn(f"all {r.items:,} items got the same code: the {r.modality} vectors carry no signal the quantizer "
                 "can split (constant, or from a model that diverged); check the embeddings before assigning codes")
