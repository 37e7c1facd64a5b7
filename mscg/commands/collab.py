"""`mscg collab`: SASRec on the training split -> the collaborative modality (+ the SASRec baseline)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

import typer

from mscg.artifacts.atomic import AtomicDir, check_output, main_rank_output
from mscg.artifacts.meta import provenance
from mscg.commands._common import (DataOpt, DeviceOpt, EpochsOpt, ForceOpt, KeepCheckpointOpt, LogEveryOpt, LrOpt,
                                   OutputOpt, PatienceOpt, ValidateEveryOpt, WarmupStepsOpt, resume_finished_run,
                                   PrecisionOpt, ResumeOpt, SeedOpt, WeightDecayOpt, check_attention, valid_summary,
                                   parse_warmup, warmup_text,
                                   report_split, user_errors)
from mscg.console import info, render
from mscg.data.split import dataset_files, load_dataset
from mscg.errors import UsageError
from mscg.models.sasrec_config import DEFAULT_NEGATIVES, FULL_SOFTMAX_MAX_ITEMS, NEGATIVE_SAMPLERS, SASRecConfig
from mscg.training.defaults import SASREC_LOOP, LoopConfig


@dataclass
class CollabResult:
    users: int
    items: int
    best_epoch: int | None
    valid: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    samples_per_second: float = 0.0


def collab(data: Path, output: Path, *, model_out: Path | None = None, config: SASRecConfig | None = None,
           loop: LoopConfig = SASREC_LOOP, device: str = "auto", init_embeddings: Path | None = None,
           force: bool = False, resume: bool = False, keep_checkpoint: bool = False) -> CollabResult:
    """Train SASRec on DATA's training split (`config`: the architecture and loss; `n_items` is set from the data,
    and a loss or packing left unset is chosen from the catalogue's size; `loop.seed` seeds it) and write its item
    table as collab embeddings (and the model, with `model_out`)."""
    from mscg.artifacts.embeddings import Embeddings, load_embeddings, save_embeddings
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.artifacts.training_log import write_training_log
    from mscg.popularity import items_below, train_counts
    from mscg.training import distributed as dist
    from mscg.training.loop import RESUME_FILE
    from mscg.training.sasrec import content_start, fit_sasrec

    dist.init_from_env()
    config = config or SASRecConfig(n_items=0)
    if min(config.max_history, config.d_model, config.n_layers, config.n_heads) < 1:
        raise UsageError("--max-history, --d-model, --n-layers and --n-heads must be at least 1")
    check_attention(config.d_model, config.n_heads, config.dropout)
    if config.negatives is not None and config.negatives < 0:
        raise UsageError("--negatives must be 0 (full softmax) or more")
    if config.negative_sampler not in NEGATIVE_SAMPLERS:
        raise UsageError(f"--negative-sampler {config.negative_sampler!r} must be one of: "
                         f"{', '.join(NEGATIVE_SAMPLERS)}")
    loop.check()  # flags first: nothing is read or written for a command that cannot run
    items_path, interactions_path = dataset_files(data)
    inputs = [Path(data), items_path, interactions_path]  # never write into DATA
    if init_embeddings is not None:
        inputs.append(Path(init_embeddings))
    if dist.is_main():
        for out in (output, model_out):
            if out is not None:
                check_output(out, force=force, inputs=inputs)  # fail before the slow part
    start = load_embeddings(init_embeddings, "--init-embeddings") if init_embeddings is not None else None
    ds = load_dataset(data)
    if dist.is_main():
        report_split(ds.split)
    dev = dist.resolve_device(device)
    config = config.resolved(len(ds.catalogue))
    if dist.is_main():
        info(describe_loss(config))
    start_table = None
    if start is not None:
        start_table = content_start(start, ds.catalogue.item_ids, config.d_model, loop.seed)
        if dist.is_main():
            info(f"item table starts from {init_embeddings} ({start.modality}, {start.dim}-d -> {config.d_model}-d "
                 f"by PCA) for {int(start_table[1].sum()):,} of {len(start_table[1]):,} items")
    prov_inputs = {"items": items_path, "interactions": interactions_path}
    if start is not None:
        prov_inputs["init_embeddings"] = Path(init_embeddings)
    prov = provenance(prov_inputs, loop.seed)
    if dist.is_main():
        resume_finished_run(output, resume)
    with main_rank_output(output, main=dist.is_main(), force=force, inputs=inputs, resumable=True,
                          resume=resume) as tmp:
        events = fit_sasrec(config, loop, ds, device=dev, start=start_table, checkpoint_dir=tmp, resume=resume,
                            fingerprint={"inputs": prov["inputs"]})
        model, result = render(events, "collab (SASRec)", quiet=not dist.is_main())
        if dist.is_main():
            counts = train_counts(ds.split, len(ds.catalogue))
            untrained = items_below(counts, ds.catalogue.item_ids, 1)  # their rows keep their initial values
            if untrained:
                info(f"{len(untrained):,} items have no training interaction, so their collab rows are untrained; "
                     "`mscg predict-collab` gives them embeddings predicted from their content")
            save_embeddings(tmp, Embeddings("collab", ds.catalogue.item_ids, model.item_table().detach().cpu()),
                            source={"encoder": "SASRec item embeddings", "split": "train",
                                    "best_epoch": result.best_epoch,
                                    "init": start.modality if start is not None else "random",
                                    # rows that saw no training interaction: `mscg predict-collab` replaces them
                                    "untrained_item_ids": untrained},
                            provenance=prov)
            write_training_log(tmp, result.summary())  # the records also beside the embeddings' meta.json
            if model_out is not None:
                with AtomicDir(model_out, force=force, inputs=inputs) as mtmp:
                    save_model_dir(mtmp, "model", model, config.to_json(), item_ids=ds.catalogue.item_ids,
                                   training=result.summary(), provenance=prov,
                                   train_item_counts=counts.tolist())
            if not keep_checkpoint:
                (tmp / RESUME_FILE).unlink(missing_ok=True)  # last: a failed save keeps the checkpoint
    dist.barrier()
    return CollabResult(users=len(ds.split), items=len(ds.catalogue), best_epoch=result.best_epoch,
                        valid=result.best_scores(), seconds=result.seconds,
                        samples_per_second=result.samples_per_second)


def describe_loss(config: SASRecConfig) -> str:
    """The line that says how a resolved config trains."""
    if not config.negatives:
        loss = f"full softmax over all {config.n_items:,} items"
    else:
        loss = (f"sampled softmax, {config.negatives:,} {config.negative_sampler} negatives per batch of the "
                f"{config.n_items:,} items")
    return f"loss: {loss}; windows {'packed' if config.pack else 'padded'}"


MODEL = SASRecConfig(n_items=0)  # the defaults of the flags below


@user_errors
def collab_cli(
    data: DataOpt,
    output: OutputOpt,
    model_out: Annotated[Path | None, typer.Option(help="Also save the SASRec model here (a baseline that "
                                                        "`evaluate` and `recommend` can score).")] = None,
    max_history: Annotated[int, typer.Option(help="Items of history SASRec attends to.")] = MODEL.max_history,
    d_model: Annotated[int, typer.Option(help="Embedding width.")] = MODEL.d_model,
    n_layers: Annotated[int, typer.Option(help="Self-attention blocks.")] = MODEL.n_layers,
    n_heads: Annotated[int, typer.Option(help="Attention heads.")] = MODEL.n_heads,
    dropout: Annotated[float, typer.Option(help="Dropout rate.")] = MODEL.dropout,
    negatives: Annotated[int | None, typer.Option(
        help=f"Sampled softmax with N negatives shared by each batch; 0: full softmax over every item. Default: "
             f"full softmax up to {FULL_SOFTMAX_MAX_ITEMS:,} items, {DEFAULT_NEGATIVES} negatives above.",
        show_default=False)] = None,
    negative_sampler: Annotated[Literal[NEGATIVE_SAMPLERS], typer.Option(
        help="How negatives are drawn: uniform (from the catalogue), or popularity (in proportion to each item's "
             "training count, with the logQ correction).")] = MODEL.negative_sampler,
    pack: Annotated[bool | None, typer.Option(
        "--pack/--no-pack", help="Pack short training windows into shared rows so that no compute goes to "
                                 "padding (the same loss). Default: on with sampled softmax, off with full softmax.",
        show_default=False)] = None,
    epochs: EpochsOpt = SASREC_LOOP.epochs,
    batch_size: Annotated[int, typer.Option(help="Windows per step.")] = SASREC_LOOP.batch_size,
    lr: LrOpt = SASREC_LOOP.lr,
    weight_decay: WeightDecayOpt = SASREC_LOOP.weight_decay,
    patience: PatienceOpt = SASREC_LOOP.patience,
    validate_every: ValidateEveryOpt = SASREC_LOOP.validate_every,
    log_every: LogEveryOpt = SASREC_LOOP.log_every,
    warmup_steps: WarmupStepsOpt = warmup_text(SASREC_LOOP.warmup_steps),
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = SASREC_LOOP.precision,
    init_embeddings: Annotated[Path | None, typer.Option(
        help="Start SASRec's item table from these embeddings (e.g. the text modality, reduced to --d-model by "
             "PCA) instead of noise.")] = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    keep_checkpoint: KeepCheckpointOpt = False,
) -> None:
    """Train SASRec (softmax cross-entropy: full, or sampled for large catalogues) on the training split and
    write its item-embedding table as the collaborative modality.

    Reads DATA/items.jsonl + DATA/interactions.jsonl; writes OUTPUT (embeddings, modality collab) and,
    with --model-out, the SASRec model. Validation items are only used for early stopping; test items
    are never seen. Runs under torchrun for multi-GPU / multi-node training.

    [bold]Examples[/bold]

      mscg collab -d data/ml-100k -o work/emb_collab --model-out work/sasrec

      mscg collab -d data/amazon-toys -o work/emb_collab --negatives 512 --negative-sampler popularity

      torchrun --nproc_per_node 4 -m mscg collab -d data/big -o work/emb_collab --model-out work/sasrec
    """
    config = SASRecConfig(n_items=0, max_history=max_history, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                          dropout=dropout, negatives=negatives, negative_sampler=negative_sampler, pack=pack)
    loop = replace(SASREC_LOOP, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                   patience=patience, validate_every=validate_every, warmup_steps=parse_warmup(warmup_steps),
                   precision=precision, seed=seed, log_every=log_every)
    r = collab(data, output, model_out=model_out, config=config, loop=loop, device=device,
               init_embeddings=init_embeddings, force=force, resume=resume, keep_checkpoint=keep_checkpoint)
    from mscg.training import distributed as dist

    if dist.is_main():
        info(f"wrote {output}" + (f" and {model_out}" if model_out else "") +
             f": best epoch {r.best_epoch} (valid {valid_summary(r.valid)}); {r.samples_per_second:,.0f} samples/s")
