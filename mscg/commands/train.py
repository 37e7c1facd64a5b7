"""`mscg train`: the MSCGRec generator (T5 encoder-decoder over multimodal codes)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

import typer

from mscg.artifacts.atomic import check_output, main_rank_output
from mscg.artifacts.meta import MODALITIES, meta_inputs, provenance
from mscg.commands._common import (DataOpt, DeviceOpt, EpochsOpt, ForceOpt, KeepCheckpointOpt, LogEveryOpt, LrOpt,
                                   OutputOpt, PatienceOpt, ValidateEveryOpt, WarmupStepsOpt, resume_finished_run,
                                   PrecisionOpt, ResumeOpt, SeedOpt, WeightDecayOpt, check_attention, valid_summary,
                                   parse_warmup, warmup_text,
                                   report_split, user_errors)
from mscg.console import info, render
from mscg.data.split import dataset_files, load_dataset
from mscg.errors import DataError, UsageError
from mscg.models.generator_config import CONSTRAINTS, HISTORY_ENCODINGS, SAMPLES, TRAIN_TRIES, GeneratorConfig
from mscg.training.defaults import DEFAULT_BEAM_SIZE, DEFAULT_VALID_USERS, GENERATOR_LOOP, LoopConfig


@dataclass
class TrainResult:
    samples: int
    best_epoch: int | None
    valid: dict[str, float] = field(default_factory=dict)
    parameters: int = 0
    seconds: float = 0.0
    samples_per_second: float = 0.0
    targets_per_second: float = 0.0


def parse_modalities(text: str | None, available: list[str]) -> list[str]:
    if text is None:
        return list(available)
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in available]
    if unknown or not chosen:
        raise UsageError(f"--modalities {text!r}: the codes hold {', '.join(available)}; choose among those")
    return [m for m in available if m in chosen]


def check_config(config: GeneratorConfig, valid_users: int, beam_size: int) -> None:
    """The flags' values, each refused with its flag named, before anything is read."""
    if config.constraint not in CONSTRAINTS:
        raise UsageError(f"--constraint {config.constraint!r} must be one of: {', '.join(CONSTRAINTS)}")
    if config.history_encoding not in HISTORY_ENCODINGS:
        raise UsageError(f"--history-encoding {config.history_encoding!r} must be tokens or items")
    if config.train_trie not in TRAIN_TRIES:
        raise UsageError(f"--train-trie {config.train_trie!r} must be one of: {', '.join(TRAIN_TRIES)}")
    if config.samples not in SAMPLES:
        raise UsageError(f"--samples {config.samples!r} must be one of: {', '.join(SAMPLES)}")
    if config.samples == "window" and config.history_encoding != "items":
        raise UsageError("--samples window reads one encoder position per item: use it with --history-encoding "
                         "items (or train --samples prefix)")
    if min(config.max_history, config.n_layers, beam_size, valid_users) < 1:
        raise UsageError("--max-history, --n-layers, --beam-size and --valid-users must be at least 1")
    if min(config.d_model, config.n_heads, config.d_ff, config.n_decoder_layers) < 1:
        raise UsageError("--d-model, --n-heads, --d-ff and --n-decoder-layers must be at least 1")
    check_attention(config.d_model, config.n_heads, config.dropout)
    if not 0 <= config.modality_mask_prob < 1:
        raise UsageError("--mask-prob must be in [0, 1)")
    if not 0 <= config.label_smoothing < 1:
        raise UsageError("--label-smoothing must be in [0, 1)")
    if beam_size < 10:
        raise UsageError("--beam-size must be at least 10: early stopping watches validation NDCG@10")
    if config.dense_loss_weight < 0 or config.dense_negatives < 1 or not config.dense_temperature > 0:
        raise UsageError("--dense-loss-weight must be >= 0, --dense-negatives >= 1 and --dense-temperature > 0")


def train(data: Path, codes_path: Path, output: Path, *, config: GeneratorConfig | None = None,
          loop: LoopConfig = GENERATOR_LOOP, modalities: str | None = None, valid_users: int = DEFAULT_VALID_USERS,
          beam_size: int = DEFAULT_BEAM_SIZE, window_stride: int | None = None, dense_content: list[Path] | None = None,
          device: str = "auto", force: bool = False, resume: bool = False, keep_checkpoint: bool = False
          ) -> TrainResult:
    """Train the generator over the codes (`config`: the architecture; its vocabulary and input modalities
    are taken from the codes, `modalities` chooses among them; `loop.seed` seeds it) and write OUTPUT. With
    `dense_content` (text/image embeddings) the model also gets a dense head over the items' content."""
    from mscg.artifacts.codes import load_codes
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.training import distributed as dist
    from mscg.training.generator import fit_generator
    from mscg.training.loop import RESUME_FILE

    dist.init_from_env()
    config = config or GeneratorConfig()
    check_config(config, valid_users, beam_size)
    if window_stride is not None and not 1 <= window_stride <= config.max_history:
        raise UsageError(f"--window-stride {window_stride} must be between 1 and --max-history "
                         f"({config.max_history})")
    loop.check()  # flags first: nothing is read or written for a command that cannot run
    items_path, interactions_path = dataset_files(data)
    dense_content = [Path(p) for p in dense_content or []]
    inputs = [Path(data), items_path, interactions_path, codes_path, *dense_content,  # never write into DATA,
              *(p for source in (codes_path, *dense_content) for p in meta_inputs(source))]  # nor what made them
    if dist.is_main():
        check_output(output, force=force, inputs=inputs)
    codes = load_codes(codes_path)
    ds = load_dataset(data)
    if codes.item_ids != ds.catalogue.item_ids:
        raise DataError(f"--codes {codes_path} cover {len(codes.item_ids):,} items but {items_path} lists "
                        f"{len(ds.catalogue):,} (or another order); run assign-codes with this --data")
    if dist.is_main():
        report_split(ds.split)
    available = codes.vocab.modalities
    if config.decode_modality not in available:
        raise UsageError(f"--decode {config.decode_modality}: the codes hold {', '.join(available)}; choose one "
                         "of those")
    config = replace(config, vocabulary=codes.vocab.to_json(), modalities=parse_modalities(modalities, available))
    item_content, content_inputs = None, {}
    if dense_content:
        import torch

        from mscg.training.content_map import content_features, load_contents

        contents = load_contents(dense_content, "--dense-content", ds.catalogue, items_path)
        item_content = torch.from_numpy(content_features(contents, codes.item_ids)).float()  # (N, F)
        config = replace(config, dense_content_dim=item_content.shape[1])
        content_inputs = {f"dense_content_{e.modality}": p for p, e in zip(dense_content, contents)}
    dev = dist.resolve_device(device)
    prov = provenance({"items": items_path, "interactions": interactions_path, "codes": codes_path,
                       **content_inputs}, loop.seed)

    setup: dict = {}
    if dist.is_main():
        resume_finished_run(output, resume)

    def announce(found: dict) -> None:
        setup.update(found)
        if dist.is_main():
            windows, per_step = found["samples"], found["samples_per_step"]
            what = (f"{found['targets']:,} targets in {windows:,} windows "
                    + ("(all in one step)" if per_step >= windows else f"({per_step:,} windows a step)")
                    if config.samples == "window" else f"{found['samples']:,} samples")
            info(f"train: {what}, {found['parameters'] / 1e6:.2f}M parameters, inputs "
                 f"{'+'.join(config.modalities)} -> {config.decode_modality} codes, constraint {config.constraint}, "
                 + (f"a dense head over {', '.join(k.removeprefix('dense_content_') for k in content_inputs)}, "
                    if content_inputs else "")
                 + f"validation on {found['valid_users']:,} users")

    with main_rank_output(output, main=dist.is_main(), force=force, inputs=inputs, resumable=True,
                          resume=resume) as tmp:
        events = fit_generator(config, loop, codes, ds, device=dev, valid_users=valid_users, beam_size=beam_size,
                               window_stride=window_stride, item_content=item_content,
                               checkpoint_dir=tmp, resume=resume, fingerprint={"inputs": prov["inputs"]})
        model, result = render(events, "train (generator)", quiet=not dist.is_main(), on_info=announce)
        if dist.is_main():
            from mscg.artifacts.modeldir import copy_codes_into, save_item_keys
            from mscg.popularity import train_counts

            # the model directory carries its codes (named relatively) and its training popularity
            own_codes = copy_codes_into(tmp, codes_path, prov["inputs"]["codes"]["sha256"])
            save_model_dir(tmp, "model", model.cpu(), config.to_json(), item_ids=codes.item_ids,
                           codes=own_codes, beam_size=beam_size, parameters=setup["parameters"],
                           training=result.summary(), provenance=prov,
                           train_item_counts=train_counts(ds.split, len(ds.catalogue)).tolist())
            if model.item_key_table is not None:
                save_item_keys(tmp, model.item_key_table)
            if not keep_checkpoint:
                (tmp / RESUME_FILE).unlink(missing_ok=True)  # last: a failed save keeps the checkpoint
    dist.barrier()
    return TrainResult(samples=setup["samples"], best_epoch=result.best_epoch, valid=result.best_scores(),
                       parameters=setup["parameters"], seconds=result.seconds,
                       samples_per_second=result.samples_per_second, targets_per_second=result.targets_per_second)


MODEL = GeneratorConfig()  # the defaults of the flags below


@user_errors
def train_cli(
    data: DataOpt,
    codes: Annotated[Path, typer.Option(help="Codes directory from assign-codes.", show_default=False)],
    output: OutputOpt,
    modalities: Annotated[str | None, typer.Option(help="Input modalities, comma-separated (default: all in the "
                                                        "codes).")] = None,
    decode: Annotated[Literal[MODALITIES], typer.Option(
        help="Modality whose codes are generated: collab, text or image.")
    ] = MODEL.decode_modality,
    constraint: Annotated[Literal[CONSTRAINTS], typer.Option(
        help="Constrained sequence learning: trie (softmax over valid "
             "continuations), level, or off.")] = MODEL.constraint,
    max_history: Annotated[int, typer.Option(help="History items the encoder reads.")] = MODEL.max_history,
    d_model: Annotated[int, typer.Option(help="Model width.")] = MODEL.d_model,
    n_layers: Annotated[int, typer.Option(help="Encoder layers.")] = MODEL.n_layers,
    n_decoder_layers: Annotated[int | None, typer.Option(help="Decoder layers (default: --n-layers).")] = None,
    n_heads: Annotated[int, typer.Option(help="Attention heads.")] = MODEL.n_heads,
    d_ff: Annotated[int, typer.Option(help="Feed-forward width.")] = MODEL.d_ff,
    dropout: Annotated[float, typer.Option(help="Dropout rate.")] = MODEL.dropout,
    mask_prob: Annotated[float, typer.Option(help="Probability of masking a history item's modality in "
                                                  "training.")] = MODEL.modality_mask_prob,
    dual_positions: Annotated[bool, typer.Option(help="Add item-position and code-slot embeddings.")
                              ] = MODEL.dual_positions,
    history_encoding: Annotated[Literal[HISTORY_ENCODINGS], typer.Option(
        help="items: one encoder position per history item (the sum "
             "of its code-token embeddings); tokens: one per code "
             "token (the paper's reading, ~8x the compute).")
    ] = MODEL.history_encoding,
    label_smoothing: Annotated[float, typer.Option(help="Share of each target spread evenly over the tokens "
                                                        "the constraint permits (0: plain cross-entropy).")
                               ] = MODEL.label_smoothing,
    train_trie: Annotated[Literal[TRAIN_TRIES], typer.Option(
        help="Items whose codes the trie constraint of the training loss "
             "covers: all (the paper), or trained (those with training "
             "interactions: an item training never meets, new or withheld, "
             "is then no negative, and stays decodable).")
    ] = MODEL.train_trie,
    dense_content: Annotated[list[Path] | None, typer.Option(
        "--dense-content", help="Beyond the paper (LIGER-style): also train a dense head that scores every item by "
        "these text/image embeddings (from `mscg embed`; repeat per modality), for `mscg fuse` to re-rank the beam "
        "with, and that scores items training never met.", show_default=False)] = None,
    dense_loss_weight: Annotated[float, typer.Option(help="Weight of the dense head's loss next to the codes' "
                                                          "loss.")] = MODEL.dense_loss_weight,
    dense_negatives: Annotated[int, typer.Option(help="Items each step's dense softmax runs over (a uniform "
                                                      "sample plus the batch's targets in larger catalogues).")
                               ] = MODEL.dense_negatives,
    dense_temperature: Annotated[float, typer.Option(help="Temperature of the dense head's cosine scores.")
                                 ] = MODEL.dense_temperature,
    samples: Annotated[Literal[SAMPLES], typer.Option(
        help="prefix: one training prefix per sample, a bidirectional encoder "
             "(the paper's model); window: every target of a history window in "
             "one pass, a causal encoder.")] = MODEL.samples,
    window_stride: Annotated[int | None, typer.Option(help="--samples window: a window starts every this many "
                                                           "items and trains on its last this many targets "
                                                           "(default: half of --max-history).")] = None,
    epochs: EpochsOpt = GENERATOR_LOOP.epochs,
    batch_size: Annotated[int, typer.Option(help="Targets per step (with --samples window: as many windows as "
                                                 "hold about this many targets).")] = GENERATOR_LOOP.batch_size,
    lr: LrOpt = GENERATOR_LOOP.lr,
    weight_decay: WeightDecayOpt = GENERATOR_LOOP.weight_decay,
    patience: PatienceOpt = GENERATOR_LOOP.patience,
    validate_every: ValidateEveryOpt = GENERATOR_LOOP.validate_every,
    log_every: LogEveryOpt = GENERATOR_LOOP.log_every,
    warmup_steps: WarmupStepsOpt = warmup_text(GENERATOR_LOOP.warmup_steps),
    valid_users: Annotated[int, typer.Option(help="Users validated after each epoch (a seeded sample when there "
                                                  "are more).")] = DEFAULT_VALID_USERS,
    beam_size: Annotated[int, typer.Option(help="Beam size for validation (and the default for evaluate).")
                         ] = DEFAULT_BEAM_SIZE,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = GENERATOR_LOOP.precision,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    keep_checkpoint: KeepCheckpointOpt = False,
) -> None:
    """Train the generator: read each history item's multimodal code, generate the next item's codes
    in one modality (collab by default) with constrained sequence learning.

    Reads DATA (training split only; validation targets for early stopping) and the codes; writes
    OUTPUT/config.json + model.safetensors + meta.json. Runs under torchrun for multi-GPU training.

    [bold]Examples[/bold]

      mscg train -d data/ml-100k --codes work/codes -o work/generator

      mscg train -d data/ml-100k --codes work/codes -o work/tiger --modalities text --decode text
    """
    config = GeneratorConfig(decode_modality=decode, constraint=constraint, max_history=max_history, d_model=d_model,
                             n_layers=n_layers, n_decoder_layers=n_decoder_layers, n_heads=n_heads, d_ff=d_ff,
                             dropout=dropout, modality_mask_prob=mask_prob, dual_positions=dual_positions,
                             history_encoding=history_encoding, samples=samples, label_smoothing=label_smoothing,
                             train_trie=train_trie, dense_loss_weight=dense_loss_weight,
                             dense_negatives=dense_negatives, dense_temperature=dense_temperature)
    loop = replace(GENERATOR_LOOP, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                   patience=patience, validate_every=validate_every, warmup_steps=parse_warmup(warmup_steps),
                   precision=precision, seed=seed, log_every=log_every)
    r = train(data, codes, output, config=config, loop=loop, modalities=modalities, valid_users=valid_users,
              beam_size=beam_size, window_stride=window_stride, dense_content=dense_content, device=device,
              force=force, resume=resume,
              keep_checkpoint=keep_checkpoint)
    from mscg.training import distributed as dist

    if dist.is_main():
        info(f"wrote {output}: best epoch {r.best_epoch} (valid {valid_summary(r.valid)}); "
             f"{r.targets_per_second:,.0f} targets/s")
