"""`mscg quantize`: learn a residual quantizer for one modality and write a quantizer directory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from mscg import __version__
from mscg.artifacts.atomic import check_output, main_rank_output
from mscg.artifacts.meta import MODALITIES, QUANTIZER_METHODS as METHODS, provenance
from mscg.commands._common import DeviceOpt, ForceOpt, OutputOpt, ResumeOpt, tap, user_errors
from mscg.commands.options import config_options
from mscg.configs import check_fields, configure, option, specs, toml_text
from mscg.console import info, render, warn
from mscg.errors import UsageError
from mscg.training.defaults import DEFAULT_LOG_EVERY, seed_option

DEFAULT_CODEBOOK_CAP = 256
RECORD = "quantize.toml"  # the options of the run, in the quantizer folder


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


# QuantizeConfig's options that some methods take and others do not (the registry in mscg.quantizers says which)
METHOD_OPTIONS = ("epochs", "batch_size", "lr", "log_every", "backbone", "image_size", "skip_bad_images",
                  "refit_codebooks", "balanced_last_level")


@dataclass
class QuantizeConfig:
    """`quantize`'s options (METHOD_OPTIONS apply to some methods only; their None: the method chooses)."""

    modality: str | None = option(None, choices=MODALITIES, help="text, image or collab (default: image for "
                                  "rq-dino; required otherwise).")
    method: str = option("rq-kmeans", choices=METHODS, help="rq-kmeans, rq-vae, or rq-dino (learns from the item "
                         "images).")
    n_levels: int = option(3, ge=1, help="Quantizer levels (a collision level is added by assign-codes).")
    codebook_size: str = option("auto", help="Codewords per level: auto (the smallest power of two >= sqrt(items), at "
                                f"most {DEFAULT_CODEBOOK_CAP}), N, or N1,N2,N3.")
    normalize: bool = option(True, help="L2-normalise vectors before quantizing.")
    epochs: int | None = option(None, ge=1, help="Training epochs (rq-vae, rq-dino; default: chosen from the catalogue "
                                "size (rq-vae: at least 20 passes and 3,000 steps), from the image count (rq-dino: ~5 "
                                "for 1,252 images)).")
    batch_size: int | None = option(None, ge=1, help="Batch size (rq-vae, rq-dino; default: chosen from the catalogue "
                                    "size, 256 to 1024 (rq-vae), 32 (rq-dino)).")
    lr: float | None = option(None, gt=0, help="Learning rate (rq-vae, rq-dino; default: 1e-3 (rq-vae), 5e-4 "
                              "(rq-dino)).")
    log_every: int | None = option(None, ge=1, help="Optimizer steps between training records (rq-vae, rq-dino): the "
                                   "mean loss and learning rate, in meta.json and training_log.csv (default: "
                                   f"{DEFAULT_LOG_EVERY}).")
    backbone: str | None = option(None, help="rq-dino backbone: efficientnet-lite0 (pretrained) or vit-small (from "
                                  "scratch).")
    image_size: int | None = option(None, help="rq-dino global crop size in pixels.")
    skip_bad_images: bool = option(False, flag="--skip-bad-images", help="rq-dino: treat unreadable image files as "
                                   "'no image'.")
    refit_codebooks: bool = option(True, help="rq-dino: refit the codebooks by residual k-means on the final teacher "
                                   "latents before coding.")
    balanced_last_level: bool = option(False, flag="--balanced-last-level", help="rq-kmeans: assign the last level by "
                                       "a balanced (Sinkhorn) assignment over the items, so that its codewords are "
                                       "used about equally.")
    seed: int = seed_option()

    def check(self) -> None:
        check_fields(self)
        if self.codebook_size != "auto":
            parse_codebook_size(self.codebook_size, self.n_levels, 1)

    def method_options(self, takes: set[str], why: str = "") -> dict[str, Any]:
        """The options of the method that are set (`takes`: those the method takes); UsageError for one set away
        from its default that the method does not take."""
        defaults = {f.name: f.default for f in fields(QuantizeConfig)}
        out = {}
        for spec in specs(self):
            value = getattr(self, spec.name)
            if spec.name not in METHOD_OPTIONS or value is None:
                continue
            if spec.name in takes:
                out[spec.name] = value
            elif value != defaults[spec.name]:
                flag = f"--no-{spec.flag[2:]}" if value is False else spec.flag
                raise UsageError(f"{flag} does not apply to --method {self.method}{why}; drop it")
        return out


# Every option's default, each stated once: `mscg quantize`'s flags, quantize.toml and `mscg.quantize(...)`.
CONFIGS = {"config": QuantizeConfig()}


def quantize(output: Path, *, embeddings: Path | None = None, data: Path | None = None,
             config: QuantizeConfig | None = None, device: str = "auto", force: bool = False, resume: bool = False,
             options: dict[str, Any] | None = None, config_file: Path | None = None, on_event=None,
             **values: Any) -> QuantizeResult:
    """Train a quantizer and write it to OUTPUT, as `mscg quantize` does (`mscg.quantize` in Python).

    The options: `config` (QuantizeConfig(): rq-kmeans by default), a TOML `config_file` (e.g. a quantize.toml)
    and the keyword `values` by option name (method="rq-vae", modality="text", n_levels=2, seed=1), the keywords
    over the file. `options`: further fields of the method's training options or config by name (rq-dino's
    architecture, e.g. vit_dim; the registry says which; anything else is refused). `on_event(event)` gets every
    training event (mscg.training.loop.Event) the progress display gets."""
    from mscg.quantizers import QUANTIZERS
    from mscg.training import distributed as dist

    dist.init_from_env()
    extra = dict(options or {})
    values = {**{k: extra.pop(k) for k in list(extra) if k in METHOD_OPTIONS}, **values}
    config = configure(CONFIGS, values, file=config_file, where="mscg quantize", given={"config": config})["config"]
    config.check()
    kind = QUANTIZERS[config.method]
    method, modality = config.method, config.modality or ("image" if kind.reads == "images" else None)
    if modality is None:
        raise UsageError(f"--method {method} needs --modality (one of: {', '.join(MODALITIES)})")
    config = replace(config, modality=modality)
    why = " (it has no training loop)" if kind.training is None else ""
    options = {**config.method_options(kind.options(), why), **extra}
    unknown = sorted(set(options) - kind.options())
    if unknown:
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
        return quantize_images(output, kind, training, config_fields, config, data=data, device=device, force=force,
                               resume=resume, on_event=on_event)
    if embeddings is None:
        raise UsageError(f"--method {method} quantizes vectors: pass --embeddings (made by `mscg embed`, "
                         "`mscg collab` or `mscg import-embeddings`)")
    return quantize_embeddings(output, kind, training, config_fields, config, embeddings=embeddings, device=device,
                               force=force, resume=resume, on_event=on_event)


def write_record(out_dir: Path, q: QuantizeConfig, sizes: list[int], kind) -> None:
    """quantize.toml: the run's options, its codebook sizes as chosen, those the method does not take left out."""
    resolved = replace(q, codebook_size=str(sizes[0]) if len(set(sizes)) == 1 else ",".join(map(str, sizes)))
    leave_out = {name for name in METHOD_OPTIONS if name not in kind.options()}
    if kind.reads == "images":
        leave_out.add("normalize")
    header = (f"The options of the `mscg quantize` run that wrote this folder (mscg {__version__}). To train it "
              f"again:\n  mscg quantize --config {RECORD} --embeddings EMB (or -d DATA) -o OUTPUT\n"
              "(a flag given there overrides this file; the paths are not options).\n")
    (Path(out_dir) / RECORD).write_text(toml_text([resolved], header, leave_out=leave_out), encoding="utf-8")


def quantize_embeddings(output: Path, kind, training, config_fields: dict[str, Any], q: QuantizeConfig, *,
                        embeddings: Path, device: str, force: bool, resume: bool, on_event=None) -> QuantizeResult:
    import torch

    from mscg.artifacts.codes import code_statistics
    from mscg.artifacts.embeddings import load_embeddings
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.training import distributed as dist
    from mscg.training.loop import RESUME_FILE

    method, modality, n_levels, seed = kind.config.model_type, q.modality, q.n_levels, q.seed
    if dist.is_main():
        check_output(output, force=force, inputs=[embeddings])
    emb = load_embeddings(embeddings)
    if emb.modality != modality:
        raise UsageError(f"--embeddings {embeddings} holds {emb.modality} embeddings, not {modality}; pass "
                         f"--modality {emb.modality} or the {modality} embeddings")
    sizes = parse_codebook_size(q.codebook_size, n_levels, len(emb.item_ids))
    dev = dist.resolve_device(device)
    torch.manual_seed(seed)
    prov = provenance({"embeddings": embeddings}, seed)
    config = kind.config(dim=emb.dim, codebook_sizes=sizes, normalize=q.normalize, modality=modality,
                         **config_fields)
    name = "residual k-means" if method == "rq-kmeans" else "RQ-VAE"
    info(f"quantize: {name}, {n_levels} levels x {sizes[0]} codewords on {len(emb.item_ids):,} {modality} vectors")
    with main_rank_output(output, main=dist.is_main(), force=force, inputs=[embeddings],
                          resumable=training is not None, resume=resume) as tmp:
        events = kind.fit(config, training, emb.vectors, emb.item_ids, seed=seed, device=dev, checkpoint_dir=tmp,
                          resume=resume, source=str(emb.path or "the embeddings"))
        if on_event is not None:
            events = tap(events, on_event)
        model, summary = render(events, f"quantize ({method})", quiet=not dist.is_main())
        model = model.cpu().eval()
        codes = model.encode(emb.vectors).numpy()
        stats = code_statistics(codes, sizes)
        stats["reconstruction_mse"] = model.reconstruction_error(emb.vectors)
        if dist.is_main():
            save_model_dir(tmp, "quantizer", model, config.to_json(), modality=modality, method=method,
                           input={"embeddings": str(Path(embeddings).resolve())}, stats=stats, training=summary,
                           provenance=prov)
            write_record(tmp, q, sizes, kind)
            (tmp / RESUME_FILE).unlink(missing_ok=True)  # last: a failed save keeps the checkpoint
    dist.barrier()
    return QuantizeResult(method, modality, len(emb.item_ids), sizes, stats)


def quantize_images(output: Path, kind, training, config_fields: dict[str, Any], q: QuantizeConfig, *, data: Path,
                    device: str, force: bool, resume: bool, on_event=None) -> QuantizeResult:
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.data.items import load_catalogue
    from mscg.data.split import dataset_files
    from mscg.encoders.image import decode_images
    from mscg.training import distributed as dist
    from mscg.training.loop import RESUME_FILE

    method, n_levels, seed = kind.config.model_type, q.n_levels, q.seed
    items_path, _ = dataset_files(data)
    if dist.is_main():
        check_output(output, force=force, inputs=[items_path])  # fail before the slow part
    catalogue = load_catalogue(items_path)
    n_imaged = sum(p is not None for p in catalogue.images)
    sizes = parse_codebook_size(q.codebook_size, n_levels, n_imaged)
    config = rq_dino_config(sizes, config_fields)
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
        if on_event is not None:
            events = tap(events, on_event)
        model, summary, _, stats = render(events, f"quantize ({method})", quiet=not dist.is_main(),
                                          on_info=announce)
        stats["skipped_unreadable"] = skipped
        if dist.is_main():
            save_model_dir(tmp, "quantizer", model, config.to_json(), modality="image", method=method,
                           input={"items": str(Path(items_path).resolve())}, stats=stats,
                           training={**summary, "skipped_unreadable": skipped}, provenance=prov)
            write_record(tmp, q, sizes, kind)
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
@config_options(CONFIGS, record=RECORD)
def quantize_cli(
    output: OutputOpt,
    embeddings: Annotated[Path | None, typer.Option(help="Embeddings directory to quantize "
                                                         "(rq-kmeans, rq-vae).")] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Folder of items.jsonl (rq-dino trains on its "
                                                                   "images).")] = None,
    config: QuantizeConfig = CONFIGS["config"],
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    resume: ResumeOpt = False,
) -> None:
    """Learn a residual quantizer (L levels of codebooks) for one modality.

    rq-kmeans and rq-vae read an embeddings directory; rq-dino learns image codes from the pixels
    of DATA/items.jsonl's images (self-distillation, no reconstruction). Writes OUTPUT/config.json
    + model.safetensors + meta.json (codebook usage and collision rate included) + quantize.toml (the
    run's options, which --config reads back).

    [bold]Examples[/bold]

      mscg quantize --modality text --embeddings work/emb_text -o work/q_text

      mscg quantize --method rq-dino -d data/ml-100k -o work/q_image
    """
    from mscg.training import distributed as dist

    r = quantize(output, embeddings=embeddings, data=data, config=config, device=device, force=force, resume=resume)
    if dist.is_main():
        info(f"wrote {output}: {r.method} on {r.items:,} {r.modality} items, "
             f"{len(r.codebook_sizes)} x {r.codebook_sizes[0]}; {describe_stats(r.stats)}")
        if r.items > 1 and r.stats.get("unique_codes") == 1:
            warn(f"all {r.items:,} items got the same code: the {r.modality} vectors carry no signal the quantizer "
                 "can split (constant, or from a model that diverged); check the embeddings before assigning codes")
