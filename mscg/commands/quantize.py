"""`mscg quantize`: learn a residual quantizer for one modality and write a quantizer directory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from mscg.artifacts.atomic import check_output, main_rank_output
from mscg.artifacts.meta import MODALITIES, provenance
from mscg.commands._common import DeviceOpt, ForceOpt, OutputOpt, ResumeOpt, SeedOpt, user_errors
from mscg.console import info
from mscg.errors import UsageError
from mscg.models.quantizers import IMAGE_METHODS, METHODS

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


def quantize(output: Path, *, modality: str, method: str = "rq-kmeans", embeddings: Path | None = None,
             data: Path | None = None, n_levels: int = 3, codebook_size: str = "auto", normalize: bool = True,
             seed: int = 0, device: str = "auto", force: bool = False, resume: bool = False,
             options: dict[str, Any] | None = None) -> QuantizeResult:
    import torch

    from mscg.artifacts.codes import code_statistics
    from mscg.artifacts.embeddings import load_embeddings
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.training import distributed as dist

    dist.init_from_env()
    options = options or {}
    if modality not in MODALITIES:
        raise UsageError(f"--modality {modality!r} must be one of: {', '.join(MODALITIES)}")
    if method not in METHODS:
        raise UsageError(f"--method {method!r} must be one of: {', '.join(METHODS)}")
    if method in IMAGE_METHODS:
        if modality != "image":
            raise UsageError(f"--method {method} learns image codes from pixels; use it with --modality image")
        if data is None:
            raise UsageError(f"--method {method} trains on the item images: pass --data (the folder of items.jsonl)")
        from mscg.commands.quantize_dino import quantize_rq_dino

        return quantize_rq_dino(output, data=data, n_levels=n_levels, codebook_size=codebook_size, seed=seed,
                                device=device, force=force, resume=resume, options=options)
    if embeddings is None:
        raise UsageError(f"--method {method} quantizes vectors: pass --embeddings (made by `mscg embed`, "
                         "`mscg collab` or `mscg import-embeddings`)")
    if method == "rq-kmeans" and options:
        raise UsageError(f"--{next(iter(options)).replace('_', '-')} does not apply to --method rq-kmeans "
                         "(it has no training loop); drop it")
    if dist.is_main():
        check_output(output, force=force, inputs=[embeddings])
    emb = load_embeddings(embeddings)
    if emb.modality != modality:
        raise UsageError(f"--embeddings {embeddings} holds {emb.modality} embeddings, not {modality}; pass "
                         f"--modality {emb.modality} or the {modality} embeddings")
    sizes = parse_codebook_size(codebook_size, n_levels, len(emb.item_ids))
    torch.manual_seed(seed)
    prov = provenance({"embeddings": embeddings}, seed)
    if method == "rq-kmeans":
        from mscg.models.rq_kmeans import RQKMeans, RQKMeansConfig

        config = RQKMeansConfig(dim=emb.dim, codebook_sizes=sizes, normalize=normalize, modality=modality)
        model = RQKMeans(config)
        info(f"quantize: residual k-means, {n_levels} levels x {sizes[0]} codewords on {len(emb.item_ids):,} "
             f"{modality} vectors")
        model.fit(emb.vectors, seed=seed)
        training: dict[str, Any] = {}
    else:
        from mscg.models.rqvae import fit_rqvae

        info(f"quantize: RQ-VAE, {n_levels} levels x {sizes[0]} codewords on {len(emb.item_ids):,} {modality} vectors")

        model, config, training = fit_rqvae(emb, sizes, normalize=normalize, seed=seed, device=device,
                                            output=output, force=force, resume=resume, options=options)
    model = model.cpu().eval()
    codes = model.encode(emb.vectors).numpy()
    stats = code_statistics(codes, sizes)
    stats["reconstruction_mse"] = model.reconstruction_error(emb.vectors)
    if dist.is_main():
        with main_rank_output(output, main=True, force=force, inputs=[embeddings], resumable=method != "rq-kmeans",
                              resume=resume) as tmp:
            (tmp / "resume.pt").unlink(missing_ok=True)
            save_model_dir(tmp, "quantizer", model, config.to_json(), modality=modality, method=method,
                           input={"embeddings": str(Path(embeddings).resolve())}, stats=stats, training=training,
                           provenance=prov)
    dist.barrier()
    return QuantizeResult(method, modality, len(emb.item_ids), sizes, stats)


def describe_stats(stats: dict[str, Any]) -> str:
    usage = "/".join(f"{u:.0%}" for u in stats.get("codebook_usage", []))
    text = (f"codebook usage per level {usage}; {stats.get('unique_codes', 0):,} distinct codes, "
            f"collision rate {stats.get('collision_rate', 0):.1%} (largest group {stats.get('largest_collision_group')})")
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
    modality: Annotated[str, typer.Option(help="text, image or collab.", show_default=False)],
    embeddings: Annotated[Path | None, typer.Option(help="Embeddings directory to quantize (rq-kmeans, rq-vae).")] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Folder of items.jsonl (rq-dino trains on its "
                                                                   "images).")] = None,
    method: Annotated[str, typer.Option(help="rq-kmeans, rq-vae, or rq-dino (images).")] = "rq-kmeans",
    n_levels: Annotated[int, typer.Option(help="Quantizer levels (a collision level is added by assign-codes).")] = 3,
    codebook_size: Annotated[str, typer.Option(help="Codewords per level: auto (the smallest power of two >= "
                                                    "sqrt(items), at most 256), N, or N1,N2,N3.")] = "auto",
    normalize: Annotated[bool, typer.Option(help="L2-normalise vectors before quantizing.")] = True,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (rq-vae, rq-dino).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (rq-vae, rq-dino).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (rq-vae, rq-dino).")] = None,
    backbone: Annotated[str | None, typer.Option(help="rq-dino backbone: efficientnet-lite0 (pretrained) or "
                                                      "vit-small (from scratch).")] = None,
    image_size: Annotated[int | None, typer.Option(help="rq-dino global crop size in pixels.")] = None,
    skip_bad_images: Annotated[bool, typer.Option(help="rq-dino: treat unreadable image files as 'no image'.")] = False,
    refit_codebooks: Annotated[bool, typer.Option(help="rq-dino: refit the codebooks by residual k-means on the "
                                                       "final teacher latents before coding.")] = True,
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

      mscg quantize --modality image --method rq-dino -d data/ml-100k -o work/q_image
    """
    options = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr, "backbone": backbone,
                                 "image_size": image_size, "skip_bad_images": skip_bad_images}.items()
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
