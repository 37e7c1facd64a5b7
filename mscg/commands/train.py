"""`mscg train`: the MSCGRec generator (T5 encoder-decoder over multimodal codes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from mscg.artifacts.atomic import check_output, main_rank_output
from mscg.artifacts.meta import provenance
from mscg.commands._common import (DataOpt, DeviceOpt, ForceOpt, OutputOpt, PrecisionOpt, ResumeOpt, SeedOpt,
                                   report_split, user_errors)
from mscg.console import info
from mscg.data.split import dataset_files, load_dataset
from mscg.errors import DataError, UsageError

CONSTRAINTS = ("trie", "level", "off")


@dataclass
class TrainResult:
    samples: int
    best_epoch: int | None
    valid: dict[str, float] = field(default_factory=dict)
    parameters: int = 0
    seconds: float = 0.0
    samples_per_second: float = 0.0


def parse_modalities(text: str | None, available: list[str]) -> list[str]:
    if text is None:
        return list(available)
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in available]
    if unknown or not chosen:
        raise UsageError(f"--modalities {text!r}: the codes hold {', '.join(available)}; choose among those")
    return [m for m in available if m in chosen]


def train(data: Path, codes_path: Path, output: Path, *, modalities: str | None = None, decode: str = "collab",
          constraint: str = "trie", max_history: int = 20, d_model: int = 128, n_layers: int = 2,
          n_decoder_layers: int | None = None, n_heads: int = 4, d_ff: int = 512, dropout: float = 0.1,
          mask_prob: float = 0.1, dual_positions: bool = True, history_encoding: str = "items", epochs: int = 30, batch_size: int = 256,
          lr: float = 2e-3, weight_decay: float = 0.01, patience: int = 5, valid_users: int = 10_000,
          beam_size: int = 20, device: str = "auto", precision: str = "fp32", seed: int = 0,
          force: bool = False, resume: bool = False) -> TrainResult:
    import torch

    from mscg.artifacts.codes import load_codes
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.data.samples import GeneratorSamples
    from mscg.generator_recommender import GeneratorRecommender, generator_parts
    from mscg.metrics import add_sums, metric_sums
    from mscg.models.generator import Generator, GeneratorConfig
    from mscg.training import distributed as dist
    from mscg.training.loop import RESUME_FILE, LoopConfig, LoopResult, train_loop
    from mscg.training.render import render

    dist.init_from_env()
    if constraint not in CONSTRAINTS:
        raise UsageError(f"--constraint {constraint!r} must be one of: {', '.join(CONSTRAINTS)}")
    if history_encoding not in ("tokens", "items"):
        raise UsageError(f"--history-encoding {history_encoding!r} must be tokens or items")
    if min(d_model, n_heads, d_ff) < 1 or (n_decoder_layers is not None and n_decoder_layers < 1):
        raise UsageError("--d-model, --n-heads, --d-ff and --n-decoder-layers must be at least 1")
    if d_model % n_heads:
        raise UsageError(f"--d-model {d_model} must be divisible by --n-heads {n_heads}")
    if not 0 <= dropout < 1:
        raise UsageError(f"--dropout {dropout} must be in [0, 1)")
    if not 0 <= mask_prob < 1:
        raise UsageError("--mask-prob must be in [0, 1)")
    if min(max_history, n_layers, beam_size, valid_users) < 1:
        raise UsageError("--max-history, --n-layers, --beam-size and --valid-users must be at least 1")
    if beam_size < 10:
        raise UsageError("--beam-size must be at least 10: early stopping watches validation NDCG@10")
    loop = LoopConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                      seed=seed, precision=precision)
    loop.check()  # flags first: nothing is read or written for a command that cannot run
    items_path, interactions_path = dataset_files(data)
    inputs = [Path(data), items_path, interactions_path, codes_path]  # never write into DATA
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
    if decode not in available:
        raise UsageError(f"--decode {decode}: the codes hold {', '.join(available)}; choose one of those")
    config = GeneratorConfig(
        vocabulary=codes.vocab.to_json(), modalities=parse_modalities(modalities, available), decode_modality=decode,
        max_history=max_history, d_model=d_model, n_layers=n_layers, n_decoder_layers=n_decoder_layers or n_layers,
        n_heads=n_heads, d_ff=d_ff, dropout=dropout, dual_positions=dual_positions,
        history_encoding=history_encoding, constraint=constraint,
        modality_mask_prob=mask_prob,
    )
    torch.manual_seed(seed)
    model = Generator(config)
    history_tokens, target_codes, trie = generator_parts(codes, config)
    vocab = codes.vocab
    samples = GeneratorSamples(
        ds.split, history_tokens, target_codes=target_codes, trie=trie, slot_modality=model.slot_modality,
        mask_tokens=torch.tensor([vocab.mask_token(m) for m in config.modalities]), mask_prob=mask_prob,
    )
    if len(samples) == 0:
        raise DataError(f"no training sample has a target with {decode} codes; check --decode and the codes")
    dev = dist.resolve_device(device)
    recommender = GeneratorRecommender(model, codes, dev, beam_size)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(ds.split))[:valid_users])
    mine = chosen[list(dist.shard(len(chosen)))]

    def validate(core) -> dict:
        recommender.model = core
        total: dict[str, float] = {}
        for start in range(0, len(mine), 256):
            users = mine[start:start + 256]
            histories = [ds.split.history(u, "valid") for u in users]
            targets = torch.tensor([ds.split.target(u, "valid") for u in users])
            add_sums(total, metric_sums(recommender.rank(histories, targets)))
        return total

    prov = provenance({"items": items_path, "interactions": interactions_path, "codes": codes_path}, seed)
    result = LoopResult()
    n_params = sum(p.numel() for p in model.parameters())
    if dist.is_main():
        info(f"train: {len(samples):,} samples, {n_params / 1e6:.2f}M parameters, inputs {'+'.join(config.modalities)}"
             f" -> {decode} codes, constraint {constraint}, validation on {len(chosen):,} users")
    with main_rank_output(output, main=dist.is_main(), force=force, inputs=inputs, resumable=True,
                          resume=resume) as tmp:
        events = train_loop(model, samples, loop, device=dev, validate=validate, checkpoint_dir=tmp, resume=resume,
                            fingerprint={"model": config.to_json(), "inputs": prov["inputs"],
                                         "valid_users": valid_users, "beam_size": beam_size}, result=result)
        render(events, "train (generator)", quiet=not dist.is_main())
        if dist.is_main():
            (tmp / RESUME_FILE).unlink(missing_ok=True)
            save_model_dir(tmp, "model", model.cpu(), config.to_json(), item_ids=codes.item_ids,
                           codes=str(Path(codes_path).resolve()), beam_size=beam_size, parameters=n_params,
                           training=result.summary(), provenance=prov)
    dist.barrier()
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), {})
    return TrainResult(samples=len(samples), best_epoch=result.best_epoch,
                       valid={k: v for k, v in best.items() if k != "epoch"}, parameters=n_params,
                       seconds=result.seconds, samples_per_second=result.samples_per_second)


@user_errors
def train_cli(
    data: DataOpt,
    codes: Annotated[Path, typer.Option(help="Codes directory from assign-codes.", show_default=False)],
    output: OutputOpt,
    modalities: Annotated[str | None, typer.Option(help="Input modalities, comma-separated (default: all in the "
                                                        "codes).")] = None,
    decode: Annotated[str, typer.Option(help="Modality whose codes are generated: collab, text or image.")] = "collab",
    constraint: Annotated[str, typer.Option(help="Constrained sequence learning: trie (softmax over valid "
                                                 "continuations), level, or off.")] = "trie",
    max_history: Annotated[int, typer.Option(help="History items the encoder reads.")] = 20,
    d_model: Annotated[int, typer.Option(help="Model width.")] = 128,
    n_layers: Annotated[int, typer.Option(help="Encoder layers.")] = 2,
    n_decoder_layers: Annotated[int | None, typer.Option(help="Decoder layers (default: --n-layers).")] = None,
    n_heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    d_ff: Annotated[int, typer.Option(help="Feed-forward width.")] = 512,
    dropout: Annotated[float, typer.Option(help="Dropout rate.")] = 0.1,
    mask_prob: Annotated[float, typer.Option(help="Probability of masking a history item's modality in "
                                                  "training.")] = 0.1,
    dual_positions: Annotated[bool, typer.Option(help="Add item-position and code-slot embeddings.")] = True,
    history_encoding: Annotated[str, typer.Option(help="tokens: one encoder position per code token (paper; "
                                                       "~8x the compute); items: one per history item (sum of "
                                                       "its code-token embeddings).")] = "items",
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping on validation NDCG@10).")] = 30,
    batch_size: Annotated[int, typer.Option(help="Samples per step.")] = 256,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up + cosine).")] = 2e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.01,
    patience: Annotated[int, typer.Option(help="Epochs without a better validation NDCG@10 before stopping.")] = 5,
    valid_users: Annotated[int, typer.Option(help="Users validated after each epoch (a seeded sample when there "
                                                  "are more).")] = 10_000,
    beam_size: Annotated[int, typer.Option(help="Beam size for validation (and the default for evaluate).")] = 20,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
) -> None:
    """Train the generator: read each history item's multimodal code, generate the next item's codes
    in one modality (collab by default) with constrained sequence learning.

    Reads DATA (training split only; validation targets for early stopping) and the codes; writes
    OUTPUT/config.json + model.safetensors + meta.json. Runs under torchrun for multi-GPU training.

    [bold]Examples[/bold]

      mscg train -d data/ml-100k --codes work/codes -o work/generator

      mscg train -d data/ml-100k --codes work/codes -o work/tiger --modalities text --decode text
    """
    r = train(data, codes, output, modalities=modalities, decode=decode, constraint=constraint,
              max_history=max_history, d_model=d_model, n_layers=n_layers, n_decoder_layers=n_decoder_layers,
              n_heads=n_heads, d_ff=d_ff, dropout=dropout, mask_prob=mask_prob, dual_positions=dual_positions,
              history_encoding=history_encoding, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
              valid_users=valid_users, beam_size=beam_size, device=device, precision=precision, seed=seed, force=force,
              resume=resume)
    from mscg.training import distributed as dist

    if dist.is_main():
        valid = ", ".join(f"{k} {v:.4f}" for k, v in r.valid.items())
        info(f"wrote {output}: best epoch {r.best_epoch} (valid {valid}); {r.samples_per_second:,.0f} samples/s")
