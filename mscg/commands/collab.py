"""`mscg collab`: SASRec on the training split -> the collaborative modality (+ the SASRec baseline)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from mscg import __version__
from mscg.artifacts.atomic import AtomicDir, check_output, main_rank_output
from mscg.artifacts.meta import provenance
from mscg.commands._common import (DataOpt, DeviceOpt, ForceOpt, KeepCheckpointOpt, OutputOpt, ResumeOpt,
                                   report_split, resume_finished_run, tap, user_errors, valid_summary)
from mscg.commands.options import config_options
from mscg.configs import check_fields, configure, toml_text
from mscg.console import info, render
from mscg.data.split import dataset_files, load_dataset
from mscg.models.sasrec_config import SASRecConfig
from mscg.training.defaults import SASREC_LOOP, LoopConfig, valid_users_option

RECORD = "collab.toml"  # the options of the run, in the embeddings and the --model-out folder


@dataclass
class CollabOptions:
    """What `collab` sets beyond the model (SASRecConfig) and its training loop (LoopConfig)."""

    valid_users: int = valid_users_option()

    def check(self) -> None:
        check_fields(self)


# Every option's default, each stated once: `mscg collab`'s flags, collab.toml and `mscg.collab(...)` start from these.
CONFIGS = {"config": SASRecConfig(n_items=0), "loop": SASREC_LOOP, "options": CollabOptions()}


@dataclass
class CollabResult:
    users: int
    items: int
    best_epoch: int | None
    valid: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    samples_per_second: float = 0.0


def collab(data: Path, output: Path, *, model_out: Path | None = None, config: SASRecConfig | None = None,
           loop: LoopConfig | None = None, options: CollabOptions | None = None, init_embeddings: Path | None = None,
           device: str = "auto", force: bool = False, resume: bool = False, keep_checkpoint: bool = False,
           config_file: Path | None = None, on_event=None, **values: Any) -> CollabResult:
    """Train SASRec on DATA's training split and write its item table as collab embeddings (and the model, with
    `model_out`), as `mscg collab` does (`mscg.collab` in Python).

    The options: `config` (the architecture and loss; `n_items` is set from the data, and a loss or packing left
    unset is chosen from the catalogue's size), `loop` (the training regime; `loop.seed` seeds the run) and
    `options`, CONFIGS' by default; a TOML `config_file` (e.g. a collab.toml) and the keyword `values` set any option
    by its name (d_model=32, epochs=50, seed=1), the keywords over the file. `on_event(event)` gets every training
    event (mscg.training.loop.Event) the progress display gets."""
    from mscg.artifacts.embeddings import Embeddings, load_embeddings, save_embeddings
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.artifacts.training_log import write_training_log
    from mscg.popularity import items_below, train_counts
    from mscg.training import distributed as dist
    from mscg.training.loop import RESUME_FILE
    from mscg.training.sasrec import content_start, fit_sasrec

    dist.init_from_env()
    config, loop, options = configure(CONFIGS, values, file=config_file, where="mscg collab",
                                      given={"config": config, "loop": loop, "options": options}).values()
    config.check()
    options.check()
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
                            fingerprint={"inputs": prov["inputs"]}, valid_users=options.valid_users)
        if on_event is not None:
            events = tap(events, on_event)
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
            record = toml_text([config, loop, options], record_header())
            (tmp / RECORD).write_text(record, encoding="utf-8")
            if model_out is not None:
                with AtomicDir(model_out, force=force, inputs=inputs) as mtmp:
                    save_model_dir(mtmp, "model", model, config.to_json(), item_ids=ds.catalogue.item_ids,
                                   training=result.summary(), provenance=prov,
                                   train_item_counts=counts.tolist())
                    (mtmp / RECORD).write_text(record, encoding="utf-8")
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


def record_header() -> str:
    return (f"The options of the `mscg collab` run that wrote this folder (mscg {__version__}). To train it again:\n"
            f"  mscg collab --config {RECORD} -d DATA -o OUTPUT [--model-out MODEL] [--init-embeddings EMB]\n"
            "(a flag given there overrides this file; the paths are not options).\n")


@user_errors
@config_options(CONFIGS, record=RECORD, flags={"batch_size": {"help": "Windows per step."}})
def collab_cli(
    data: DataOpt,
    output: OutputOpt,
    model_out: Annotated[Path | None, typer.Option(help="Also save the SASRec model here (a baseline that "
                                                        "`evaluate` and `recommend` can score).")] = None,
    config: SASRecConfig = CONFIGS["config"],
    loop: LoopConfig = CONFIGS["loop"],
    options: CollabOptions = CONFIGS["options"],
    init_embeddings: Annotated[Path | None, typer.Option(
        help="Start SASRec's item table from these embeddings (e.g. the text modality, reduced to --d-model by "
             "PCA) instead of noise.")] = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    keep_checkpoint: KeepCheckpointOpt = False,
) -> None:
    """Train SASRec (softmax cross-entropy: full, or sampled for large catalogues) on the training split and
    write its item-embedding table as the collaborative modality.

    Reads DATA/items.jsonl + DATA/interactions.jsonl; writes OUTPUT (embeddings, modality collab) and,
    with --model-out, the SASRec model; both hold collab.toml, the run's options, which --config reads
    back. Validation items are only used for early stopping; test items are never seen. Runs under
    torchrun for multi-GPU / multi-node training.

    [bold]Examples[/bold]

      mscg collab -d data/ml-100k -o work/emb_collab --model-out work/sasrec

      mscg collab -d data/amazon-toys -o work/emb_collab --negatives 512 --negative-sampler popularity

      torchrun --nproc_per_node 4 -m mscg collab -d data/big -o work/emb_collab --model-out work/sasrec
    """
    r = collab(data, output, model_out=model_out, config=config, loop=loop, options=options,
               init_embeddings=init_embeddings, device=device, force=force, resume=resume,
               keep_checkpoint=keep_checkpoint)
    from mscg.training import distributed as dist

    if dist.is_main():
        info(f"wrote {output}" + (f" and {model_out}" if model_out else "") +
             f": best epoch {r.best_epoch} (valid {valid_summary(r.valid)}); {r.samples_per_second:,.0f} samples/s")
