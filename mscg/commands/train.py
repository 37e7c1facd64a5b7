"""`mscg train`: the MSCGRec generator (T5 encoder-decoder over multimodal codes)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from mscg import __version__
from mscg.artifacts.atomic import check_output, main_rank_output
from mscg.artifacts.meta import MODALITIES, meta_inputs, provenance
from mscg.commands._common import (DataOpt, DeviceOpt, ForceOpt, KeepCheckpointOpt, OutputOpt, ResumeOpt,
                                   report_split, resume_finished_run, tap, user_errors, valid_summary)
from mscg.commands.options import config_options
from mscg.configs import check_fields, configure, option, toml_text
from mscg.console import info, render
from mscg.data.split import dataset_files, load_dataset
from mscg.errors import DataError, UsageError
from mscg.models.generator_config import GeneratorConfig
from mscg.recommenders.defaults import DEFAULT_BEAM_SIZE
from mscg.training.defaults import GENERATOR_LOOP, LoopConfig, valid_users_option

RECORD = "train.toml"  # the options of the run, in every output (`mscg train --config OUTPUT/train.toml` reruns it)


@dataclass
class TrainOptions:
    """What `train` sets beyond the model (GeneratorConfig) and its training loop (LoopConfig)."""

    valid_users: int = valid_users_option()
    beam_size: int = option(DEFAULT_BEAM_SIZE, ge=10, help="Beam size for validation (and the default for evaluate); "
                            "at least 10, as early stopping watches NDCG@10.")
    window_stride: int | None = option(None, ge=1, help="--samples window: a window starts every this many items and "
                                       "trains on its last this many targets (default: half of --max-history).")
    pack: bool = option(True, flag="--pack/--no-pack", help="--samples window: pack short windows into shared rows so "
                        "that no compute goes to padding (the same loss).")

    def check(self, model: GeneratorConfig) -> None:
        check_fields(self)
        if self.window_stride is not None and self.window_stride > model.max_history:
            raise UsageError(f"--window-stride {self.window_stride} must be between 1 and --max-history "
                             f"({model.max_history})")


# Every option's default, each stated once: `mscg train`'s flags, train.toml and `mscg.train(...)` start from these.
CONFIGS = {"config": GeneratorConfig(), "loop": GENERATOR_LOOP, "options": TrainOptions()}


@dataclass
class TrainResult:
    samples: int
    best_epoch: int | None
    valid: dict[str, float] = field(default_factory=dict)
    parameters: int = 0
    seconds: float = 0.0
    samples_per_second: float = 0.0
    targets_per_second: float = 0.0


def parse_modalities(chosen: list[str], available: list[str]) -> list[str]:
    """The input modalities (all the codes hold, when none are chosen), in the codes' order."""
    if not chosen:
        return list(available)
    unknown = [m for m in chosen if m not in available]
    if unknown:
        raise UsageError(f"--modalities {','.join(chosen)!r}: the codes hold {', '.join(available)}; choose among "
                         "those")
    return [m for m in available if m in chosen]


def train(data: Path, codes_path: Path, output: Path, *, config: GeneratorConfig | None = None,
          loop: LoopConfig | None = None, options: TrainOptions | None = None, dense_content: list[Path] | None = None,
          device: str = "auto", force: bool = False, resume: bool = False, keep_checkpoint: bool = False,
          config_file: Path | None = None, on_event=None, **values: Any) -> TrainResult:
    """Train the generator over the codes and write OUTPUT, as `mscg train` does (`mscg.train` in Python).

    The options: `config` (the architecture; its vocabulary and input modalities are taken from the codes, its
    `modalities` choose among them), `loop` (the training regime; `loop.seed` seeds the run) and `options`
    (validation, windows), CONFIGS' by default; a TOML `config_file` (e.g. a trained folder's train.toml) and the
    keyword `values` set any option by its name (d_model=64, epochs=10, seed=1), the keywords over the file. With
    `dense_content` (text/image embeddings) the model also gets a dense head over the items' content.
    `on_event(event)` gets every training event (mscg.training.loop.Event) the progress display gets."""
    from mscg.artifacts.codes import load_codes
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.training import distributed as dist
    from mscg.training.generator import default_window_stride, fit_generator
    from mscg.training.loop import RESUME_FILE

    dist.init_from_env()
    config, loop, options = configure(CONFIGS, values, file=config_file, where="mscg train",
                                      given={"config": config, "loop": loop, "options": options}).values()
    config.check()
    loop.check()
    options.check(config)  # flags first: nothing is read or written for a command that cannot run
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
    config = replace(config, vocabulary=codes.vocab.to_json(), n_decoder_layers=config.decoder_layers,
                     modalities=parse_modalities(config.modalities, available))
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
        events = fit_generator(config, loop, codes, ds, device=dev, valid_users=options.valid_users,
                               beam_size=options.beam_size, window_stride=options.window_stride, pack=options.pack,
                               item_content=item_content, checkpoint_dir=tmp, resume=resume,
                               fingerprint={"inputs": prov["inputs"]})
        if on_event is not None:
            events = tap(events, on_event)
        model, result = render(events, "train (generator)", quiet=not dist.is_main(), on_info=announce)
        if dist.is_main():
            from mscg.artifacts.modeldir import copy_codes_into, save_item_keys
            from mscg.popularity import train_counts

            # the model directory carries its codes (named relatively) and its training popularity
            own_codes = copy_codes_into(tmp, codes_path, prov["inputs"]["codes"]["sha256"])
            save_model_dir(tmp, "model", model.cpu(), config.to_json(), item_ids=codes.item_ids,
                           codes=own_codes, beam_size=options.beam_size, parameters=setup["parameters"],
                           training=result.summary(), provenance=prov,
                           train_item_counts=train_counts(ds.split, len(ds.catalogue)).tolist())
            window = config.samples == "window"
            stride = options.window_stride or default_window_stride(config.max_history) if window else None
            (tmp / RECORD).write_text(toml_text(
                [config, loop, replace(options, window_stride=stride)], record_header(),
                leave_out=set() if window else {"window_stride"}), encoding="utf-8")
            if model.item_key_table is not None:
                save_item_keys(tmp, model.item_key_table)
            if not keep_checkpoint:
                (tmp / RESUME_FILE).unlink(missing_ok=True)  # last: a failed save keeps the checkpoint
    dist.barrier()
    return TrainResult(samples=setup["samples"], best_epoch=result.best_epoch, valid=result.best_scores(),
                       parameters=setup["parameters"], seconds=result.seconds,
                       samples_per_second=result.samples_per_second, targets_per_second=result.targets_per_second)


def record_header() -> str:
    return (f"The options of the `mscg train` run that wrote this folder (mscg {__version__}). To train it again:\n"
            f"  mscg train --config {RECORD} -d DATA --codes CODES -o OUTPUT [--dense-content EMB ...]\n"
            "(a flag given there overrides this file; the paths are not options).\n")


@user_errors
@config_options(CONFIGS, record=RECORD, flags={
    "decode_modality": {"choices": MODALITIES},  # (the models know no artifacts; the codes hold a subset)
    "batch_size": {"help": "Targets per step (with --samples window: as many windows as hold about this many "
                           "targets)."}})
def train_cli(
    data: DataOpt,
    codes: Annotated[Path, typer.Option(help="Codes directory from assign-codes.", show_default=False)],
    output: OutputOpt,
    config: GeneratorConfig = CONFIGS["config"],
    loop: LoopConfig = CONFIGS["loop"],
    options: TrainOptions = CONFIGS["options"],
    dense_content: Annotated[list[Path] | None, typer.Option(
        "--dense-content", help="Beyond the paper (LIGER-style): also train a dense head that scores every item by "
        "these text/image embeddings (from `mscg embed`; repeat per modality), for `mscg fuse` to re-rank the beam "
        "with, and that scores items training never met.", show_default=False)] = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    keep_checkpoint: KeepCheckpointOpt = False,
) -> None:
    """Train the generator: read each history item's multimodal code, generate the next item's codes
    in one modality (collab by default) with constrained sequence learning.

    Reads DATA (training split only; validation targets for early stopping) and the codes; writes
    OUTPUT/config.json + model.safetensors + meta.json, and OUTPUT/train.toml: the run's options, which
    --config reads back. Runs under torchrun for multi-GPU training.

    [bold]Examples[/bold]

      mscg train -d data/ml-100k --codes work/codes -o work/generator

      mscg train -d data/ml-100k --codes work/codes -o work/tiger --modalities text --decode text

      mscg train -d data/ml-100k --codes work/codes -o work/seed1 --config work/generator/train.toml --seed 1
    """
    r = train(data, codes, output, config=config, loop=loop, options=options, dense_content=dense_content,
              device=device, force=force, resume=resume, keep_checkpoint=keep_checkpoint)
    from mscg.training import distributed as dist

    if dist.is_main():
        info(f"wrote {output}: best epoch {r.best_epoch} (valid {valid_summary(r.valid)}); "
             f"{r.targets_per_second:,.0f} targets/s")
