"""`mscg quantize --method rq-dino`: learn image codes from the item images by self-distillation.

Images are decoded once and kept in memory as small uint8 tensors; every step draws fresh multi-crop
views of them (seeded: the loop's global RNG). Training runs in the shared loop (resume, DDP), the
teacher and the dead-code restarts are updated after each step, and the quantizer directory holds
the whole model (frozen trunk, student, teacher), so assign-codes rebuilds it from config.json.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from mscg.artifacts.atomic import check_output, main_rank_output
from mscg.artifacts.meta import provenance
from mscg.console import info
from mscg.data.items import load_catalogue
from mscg.data.split import dataset_files
from mscg.errors import UsageError

LOOP_OPTIONS = ("epochs", "batch_size", "lr", "teacher_momentum", "skip_bad_images")
FIXED_FIELDS = ("codebook_sizes", "modality", "model_type")
TARGET_VIEWS = 6_000  # default epochs: about this many images per run (at least 2, at most 100 epochs)
DEFAULT_BATCH_SIZE = 32
DEFAULT_LR = 5e-4
RESTART_UNTIL = 0.8  # no dead-code restarts in the last 20% of the steps, so the codebooks settle


def default_epochs(n_images: int) -> int:
    """About TARGET_VIEWS image passes in all: ~5 epochs for MovieLens-100K's 1,252 posters, 2 from 3k images."""
    return int(min(100, max(2, round(TARGET_VIEWS / max(n_images, 1)))))


def default_teacher_momentum(total_steps: int) -> float:
    """DINO's 0.996 for long runs; for short ones an EMA time constant of a tenth of the run (at least 0.9)."""
    return float(min(0.996, max(0.9, 1 - 10 / max(total_steps, 1))))


def teacher_momentum(step: int, total_steps: int, base: float) -> float:
    """Cosine schedule from `base` at step 0 to 1 at the end (DINO)."""
    progress = min(1.0, step / max(total_steps, 1))
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


class ImageViews:
    """BatchSource of the training loop: cached uint8 images -> fresh multi-crop views per batch."""

    def __init__(self, images: list[torch.Tensor], crop):
        self.images = images
        self.crop = crop

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        globals_, locals_ = self.crop([self.images[i] for i in indices.tolist()])
        return {"globals": globals_, "locals": locals_}


def decode_images(catalogue, short_side: int, *, skip_bad_images: bool) -> tuple[list[int], list[torch.Tensor], int]:
    """(catalogue rows, uint8 (3, H, W) images with short side `short_side`, unreadable images skipped)."""
    from mscg.encoders.image import CatalogueImages, resize_short, to_uint8_tensor

    reader = CatalogueImages(catalogue, skip_bad_images=skip_bad_images)
    rows: list[int] = []
    images: list[torch.Tensor] = []
    for batch_rows, batch in reader.batches(lambda img: to_uint8_tensor(resize_short(img, short_side)),
                                            batch_size=256, description="decode images"):
        rows.extend(batch_rows)
        images.extend(batch)
    if not rows:
        raise reader.none_readable("learn codes from")
    return rows, images, reader.skipped


@torch.no_grad()
def centre_pass(model, images: list[torch.Tensor], device: torch.device, *, what: str, batch_size: int = 64,
                description: str = "centre views") -> torch.Tensor:
    """The images' centre views (deterministic) through the model in eval mode: (N, F) student backbone
    features (`what="features"`) or (N, latent_dim) teacher latents (`what="teacher"`)."""
    from mscg.console import progress_bar
    from mscg.encoders.augment import centre_view

    encode = model.backbone_features if what == "features" else model.teacher_latents
    was_training = model.training
    model.eval()
    out = []
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(images), status="")
        for start in range(0, len(images), batch_size):
            views = torch.stack([centre_view(img, model.config.image_size) for img in images[start:start + batch_size]])
            out.append(encode(views.to(device)).float().cpu())
            bar.advance(task, len(views))
    model.train(was_training)
    return torch.cat(out)


def build_config(sizes: list[int], options: dict[str, Any]):
    from mscg.models.rq_dino import BACKBONES, RQDINOConfig

    known = {f for f in RQDINOConfig.__dataclass_fields__ if f not in FIXED_FIELDS}
    unknown = sorted(set(options) - known - set(LOOP_OPTIONS))
    if unknown:
        raise UsageError(f"rq-dino does not take the option(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known | set(LOOP_OPTIONS)))}")
    fields = {k: v for k, v in options.items() if k in known}
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
    if backbone == "efficientnet-lite0" and not 0 <= config.train_blocks <= 16:
        raise UsageError(f"train_blocks {config.train_blocks} must be between 0 and 16 (EfficientNet-Lite0's blocks)")
    if backbone == "vit-small":
        if config.vit_dim % config.vit_heads:
            raise UsageError(f"vit_dim {config.vit_dim} must be divisible by vit_heads {config.vit_heads}")
        if config.local_size < config.patch_size:
            raise UsageError(f"local crops of {config.local_size} px are smaller than a {config.patch_size} px patch; "
                             "raise --image-size")
    return config


def quantize_rq_dino(output: Path, *, data: Path, n_levels: int = 3, codebook_size: str = "auto", seed: int = 0,
                     device: str = "auto", force: bool = False, resume: bool = False,
                     options: dict[str, Any] | None = None):
    from mscg.artifacts.codes import code_statistics
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.commands.quantize import QuantizeResult, parse_codebook_size
    from mscg.encoders.augment import MultiCrop
    from mscg.models.rq_dino import RQDINO
    from mscg.training import distributed as dist
    from mscg.training.loop import RESUME_FILE, LoopConfig, LoopResult, train_loop
    from mscg.training.render import render

    dist.init_from_env()
    options = dict(options or {})
    skip_bad_images = bool(options.get("skip_bad_images", False))
    items_path, _ = dataset_files(data)
    if dist.is_main():
        check_output(output, force=force, inputs=[items_path])  # fail before the slow part
    catalogue = load_catalogue(items_path)
    n_imaged = sum(p is not None for p in catalogue.images)
    sizes = parse_codebook_size(codebook_size, n_levels, n_imaged)
    config = build_config(sizes, options)
    given = {k: options[k] for k in ("epochs", "batch_size", "lr") if options.get(k) is not None}
    LoopConfig(**{"epochs": 1, "batch_size": 1, "lr": DEFAULT_LR, **given}).check()  # fail before the slow part
    dev = dist.resolve_device(device)
    rows, images, skipped = decode_images(catalogue, config.cache_size, skip_bad_images=skip_bad_images)

    epochs = int(given.get("epochs", default_epochs(len(rows))))
    batch_size = int(given.get("batch_size", min(DEFAULT_BATCH_SIZE, len(rows))))
    lr = float(given.get("lr", DEFAULT_LR))
    loop = LoopConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=0.0, warmup_fraction=0.1, seed=seed)
    steps_per_epoch = max(1, math.ceil(math.ceil(len(rows) / dist.world_size()) / batch_size))
    total_steps = steps_per_epoch * epochs
    base_momentum = float(options["teacher_momentum"]) if options.get("teacher_momentum") is not None else \
        default_teacher_momentum(total_steps)
    # Dead-code checks about once an epoch, and never more often than every 4*K latents of a level.
    latents_per_step = batch_size * (2 + config.n_local)
    restart_every = max(steps_per_epoch, math.ceil(4 * max(sizes) / latents_per_step))
    if dist.is_main():
        info(f"quantize: rq-dino ({config.backbone}) on {len(rows):,} images, {n_levels} levels x {sizes[0]} codewords; "
             f"{epochs} epochs of {steps_per_epoch} steps, crops {config.image_size}/{config.local_size} px"
             + (f" ({skipped:,} unreadable images skipped)" if skipped else ""))

    torch.manual_seed(seed)
    model = RQDINO(config).to(memory_format=torch.channels_last)  # back to contiguous before saving
    source = ImageViews(images, MultiCrop(global_size=config.image_size, local_size=config.local_size,
                                          n_local=config.n_local))
    prov = provenance({"items": items_path}, seed)
    training = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "teacher_momentum": base_momentum,
                "restart_every": restart_every, "skipped_unreadable": skipped}
    fingerprint = {"model": config.to_json(), "inputs": prov["inputs"], "training": training}
    restarted = {"codes": 0}

    def after_step(core: RQDINO, step: int, total: int) -> None:
        core.update_teacher(teacher_momentum(step, total, base_momentum))
        if step % restart_every == 0 and step <= RESTART_UNTIL * total:
            restarted["codes"] += core.restart_dead_codes()

    result = LoopResult()
    stats: dict[str, Any] = {}
    with main_rank_output(output, main=dist.is_main(), force=force, inputs=[items_path], resumable=True,
                          resume=resume) as tmp:
        resuming = resume and (tmp / RESUME_FILE).exists()
        if not resuming and dist.is_main():  # under torchrun, DDP hands rank 0's weights to the others
            model.load_pretrained_backbone()
            model.to(dev)
            features = centre_pass(model, images, dev, what="features", description="k-means init")
            model.initialize(features.to(dev), seed=seed)
        events = train_loop(model, source, loop, device=dev, checkpoint_dir=tmp, resume=resume,
                            fingerprint=fingerprint, after_step=after_step, result=result)
        render(events, "quantize (rq-dino)", quiet=not dist.is_main())
        if dist.is_main():
            model.eval()
            z = centre_pass(model, images, dev, what="teacher", description="image codes").to(dev)
            if config.refit_codebooks:
                trained = code_statistics(model.teacher.rq.encode(z).cpu().numpy(), sizes)
                model.refit_codebooks(z, seed=seed)
            codes = model.teacher.rq.encode(z).cpu().numpy()
            stats = code_statistics(codes, sizes)
            if config.refit_codebooks:
                stats["before_refit"] = {k: trained[k] for k in ("collision_rate", "codebook_usage")}
            stats["skipped_unreadable"] = skipped
            (tmp / RESUME_FILE).unlink(missing_ok=True)
            model = model.to(device="cpu", memory_format=torch.contiguous_format)
            save_model_dir(tmp, "quantizer", model, config.to_json(), modality="image", method="rq-dino",
                           input={"items": str(Path(items_path).resolve())}, stats=stats,
                           training={**result.summary(), **training, "restarted_codes": restarted["codes"]},
                           provenance=prov)
    dist.barrier()
    return QuantizeResult("rq-dino", "image", len(rows), sizes, stats)
