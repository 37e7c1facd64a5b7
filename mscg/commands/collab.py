"""`mscg collab`: SASRec on the training split -> the collaborative modality (+ the SASRec baseline)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from mscg.artifacts.atomic import AtomicDir, check_output, main_rank_output
from mscg.artifacts.meta import provenance
from mscg.commands._common import (DataOpt, DeviceOpt, ForceOpt, OutputOpt, PrecisionOpt, ResumeOpt, SeedOpt,
                                   report_split, user_errors)
from mscg.console import info
from mscg.data.split import Split, dataset_files, load_dataset
from mscg.errors import DataError, UsageError


@dataclass
class CollabResult:
    users: int
    items: int
    best_epoch: int | None
    valid: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    samples_per_second: float = 0.0


def validation_sums(recommender, split: Split, users: range, batch_size: int = 512) -> dict:
    """Metric sums of a recommender on the validation targets of `users` (full ranking)."""
    import torch

    from mscg.metrics import add_sums, metric_sums

    total: dict[str, float] = {}
    users = list(users)
    for start in range(0, len(users), batch_size):
        chunk = users[start:start + batch_size]
        histories = [split.history(u, "valid") for u in chunk]
        targets = torch.tensor([split.target(u, "valid") for u in chunk])
        add_sums(total, metric_sums(recommender.rank(histories, targets)))
    return total


def content_start(emb, item_ids: list[str], d_model: int, seed: int):
    """Another modality's embeddings as SASRec's starting item table.

    Returns (vectors (N, d_model), known (N,) bool): the artifact's rows for the catalogue's items,
    reduced to d_model dimensions by PCA (fitted on those rows; fewer components leave the last
    columns zero); items the artifact lacks are not known and keep a random start.
    """
    import numpy as np
    import torch
    from sklearn.decomposition import PCA

    row_of = emb.row_of()
    rows = [row_of.get(i, -1) for i in item_ids]
    known = torch.tensor([r >= 0 for r in rows], dtype=torch.bool)
    if int(known.sum()) < 2:
        raise DataError(f"{emb.path}: the embeddings cover {int(known.sum())} of the dataset's {len(item_ids)} "
                        "items; --init-embeddings needs embeddings of the same catalogue (item ids as in "
                        "items.jsonl)")
    source = emb.vectors[[r for r in rows if r >= 0]].double().numpy()  # (n_known, D)
    n_components = min(d_model, source.shape[0], source.shape[1])
    reduced = PCA(n_components=n_components, random_state=seed).fit_transform(source)  # (n_known, n_components)
    vectors = torch.zeros(len(item_ids), d_model)
    vectors[known, :n_components] = torch.from_numpy(reduced.astype(np.float32))
    return vectors, known


def collab(data: Path, output: Path, *, model_out: Path | None = None, max_history: int = 50, d_model: int = 64,
           n_layers: int = 2, n_heads: int = 2, dropout: float = 0.2, epochs: int = 200, batch_size: int = 128,
           lr: float = 1e-3, weight_decay: float = 0.0, patience: int = 10, device: str = "auto",
           precision: str = "fp32", seed: int = 0, init_embeddings: Path | None = None,
           force: bool = False, resume: bool = False) -> CollabResult:
    import torch

    from mscg.artifacts.embeddings import Embeddings, load_embeddings, save_embeddings
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.data.samples import SASRecWindows
    from mscg.models.sasrec import SASRec, SASRecConfig
    from mscg.recommenders import SASRecRecommender
    from mscg.training import distributed as dist
    from mscg.training.loop import RESUME_FILE, LoopConfig, LoopResult, train_loop
    from mscg.training.render import render

    dist.init_from_env()
    if min(max_history, d_model, n_layers, n_heads) < 1:
        raise UsageError("--max-history, --d-model, --n-layers and --n-heads must be at least 1")
    if d_model % n_heads:
        raise UsageError(f"--d-model {d_model} must be divisible by --n-heads {n_heads}")
    if not 0 <= dropout < 1:
        raise UsageError(f"--dropout {dropout} must be in [0, 1)")
    loop = LoopConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                      seed=seed, precision=precision)
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
    windows = SASRecWindows(ds.split, max_history)
    if len(windows) == 0:
        raise DataError(f"{interactions_path}: no user has a training transition (every user has exactly 3 "
                        "interactions); SASRec needs longer sequences")
    dev = dist.resolve_device(device)
    config = SASRecConfig(n_items=len(ds.catalogue), max_history=max_history, d_model=d_model, n_layers=n_layers,
                          n_heads=n_heads, dropout=dropout)
    torch.manual_seed(seed)
    model = SASRec(config)
    if start is not None:
        vectors, known = content_start(start, ds.catalogue.item_ids, d_model, seed)
        model.init_item_table(vectors, known)
        if dist.is_main():
            info(f"item table starts from {init_embeddings} ({start.modality}, {start.dim}-d -> {d_model}-d by "
                 f"PCA) for {int(known.sum()):,} of {len(known):,} items")
    recommender = SASRecRecommender(model, ds.catalogue.item_ids, dev, {})

    def validate(core: SASRec) -> dict:
        recommender.model = core
        return validation_sums(recommender, ds.split, dist.shard(len(ds.split)))

    result = LoopResult()
    prov_inputs = {"items": items_path, "interactions": interactions_path}
    if start is not None:
        prov_inputs["init_embeddings"] = Path(init_embeddings)
    prov = provenance(prov_inputs, seed)
    fingerprint = {"model": config.to_json(), "inputs": prov["inputs"]}
    with main_rank_output(output, main=dist.is_main(), force=force, inputs=inputs, resumable=True,
                          resume=resume) as tmp:
        events = train_loop(model, windows, loop, device=dev, validate=validate, checkpoint_dir=tmp, resume=resume,
                            fingerprint=fingerprint, result=result)
        render(events, "collab (SASRec)", quiet=not dist.is_main())
        if dist.is_main():
            (tmp / RESUME_FILE).unlink(missing_ok=True)
            save_embeddings(tmp, Embeddings("collab", ds.catalogue.item_ids, model.item_table().detach().cpu()),
                            source={"encoder": "SASRec item embeddings", "split": "train",
                                    "best_epoch": result.best_epoch,
                                    "init": start.modality if start is not None else "random"},
                            provenance=prov)
            if model_out is not None:
                with AtomicDir(model_out, force=force, inputs=inputs) as mtmp:
                    save_model_dir(mtmp, "model", model, config.to_json(), item_ids=ds.catalogue.item_ids,
                                   training=result.summary(), provenance=prov)
    dist.barrier()
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), {})
    return CollabResult(users=len(ds.split), items=len(ds.catalogue), best_epoch=result.best_epoch,
                        valid={k: v for k, v in best.items() if k != "epoch"}, seconds=result.seconds,
                        samples_per_second=result.samples_per_second)


@user_errors
def collab_cli(
    data: DataOpt,
    output: OutputOpt,
    model_out: Annotated[Path | None, typer.Option(help="Also save the SASRec model here (a baseline that "
                                                        "`evaluate` and `recommend` can score).")] = None,
    max_history: Annotated[int, typer.Option(help="Items of history SASRec attends to.")] = 50,
    d_model: Annotated[int, typer.Option(help="Embedding width.")] = 64,
    n_layers: Annotated[int, typer.Option(help="Self-attention blocks.")] = 2,
    n_heads: Annotated[int, typer.Option(help="Attention heads.")] = 2,
    dropout: Annotated[float, typer.Option(help="Dropout rate.")] = 0.2,
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping on validation NDCG@10).")] = 200,
    batch_size: Annotated[int, typer.Option(help="Windows per step.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up + cosine).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    patience: Annotated[int, typer.Option(help="Epochs without a better validation NDCG@10 before stopping.")] = 10,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    init_embeddings: Annotated[Path | None, typer.Option(
        help="Start SASRec's item table from these embeddings (e.g. the text modality, PCA to --d-model) "
             "instead of noise; on Amazon-Scientific a clearly stronger SASRec (BENCHMARKS.md).")] = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
) -> None:
    """Train SASRec (full-softmax cross-entropy) on the training split and write its item-embedding
    table as the collaborative modality.

    Reads DATA/items.jsonl + DATA/interactions.jsonl; writes OUTPUT (embeddings, modality collab) and,
    with --model-out, the SASRec model. Validation items are only used for early stopping; test items
    are never seen. Runs under torchrun for multi-GPU / multi-node training.

    [bold]Examples[/bold]

      mscg collab -d data/ml-100k -o work/emb_collab --model-out work/sasrec

      torchrun --nproc_per_node 4 -m mscg collab -d data/big -o work/emb_collab --model-out work/sasrec
    """
    r = collab(data, output, model_out=model_out, max_history=max_history, d_model=d_model, n_layers=n_layers,
               n_heads=n_heads, dropout=dropout, epochs=epochs, batch_size=batch_size, lr=lr,
               weight_decay=weight_decay, patience=patience, device=device, precision=precision, seed=seed,
               init_embeddings=init_embeddings, force=force, resume=resume)
    from mscg.training import distributed as dist

    if dist.is_main():
        valid = ", ".join(f"{k} {v:.4f}" for k, v in r.valid.items())
        info(f"wrote {output}" + (f" and {model_out}" if model_out else "") +
             f": best epoch {r.best_epoch} (valid {valid}); {r.samples_per_second:,.0f} samples/s")
