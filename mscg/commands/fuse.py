"""`mscg fuse`: one model that re-ranks a generator's beam and SASRec's best items together (mscg/fused.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from mscg.commands._common import DataOpt, DeviceOpt, ForceOpt, NoVerifyOpt, OutputOpt, SeedOpt, user_errors
from mscg.console import info
from mscg.training.defaults import DEFAULT_VALID_USERS, FUSE_CANDIDATES


@dataclass
class FuseResult:
    weight: float
    chosen: bool  # chosen on validation (not given)
    validation: list[dict[str, Any]] = field(default_factory=list)
    users: int = 0


def copy_model_dir(source: Path, dest: Path) -> None:
    """A model directory's visible files and its codes folder (what loading it reads), not its checkpoints."""
    import shutil

    from mscg.artifacts.atomic import CHECKPOINT_FILE

    dest.mkdir()
    for child in sorted(Path(source).iterdir()):
        if child.name.startswith(".") or child.name == CHECKPOINT_FILE or child.is_symlink():
            continue
        if child.is_file():
            shutil.copyfile(child, dest / child.name)
        elif child.is_dir():
            copy_model_dir(child, dest / child.name)


def fuse(generator: Path, dense: Path, data: Path, output: Path, *, weight: float | None = None,
         candidates: int = FUSE_CANDIDATES, valid_users: int = DEFAULT_VALID_USERS, batch_size: int = 256,
         seed: int = 0, device: str = "auto", force: bool = False, verify: bool = True) -> FuseResult:
    """Validate every weight in WEIGHTS on DATA's validation targets (a seeded sample of `valid_users`), keep
    the best NDCG@10 (or the given `weight`) and write the fused model directory."""
    import torch

    from mscg.artifacts.atomic import AtomicDir, check_output
    from mscg.artifacts.meta import meta_inputs, new_meta, provenance, write_json
    from mscg.artifacts.modeldir import CONFIG_FILE
    from mscg.data.split import load_dataset
    from mscg.errors import DataError, UsageError
    from mscg.fused import DENSE_DIR, GENERATOR_DIR, WEIGHTS, FusedRecommender, fused_scores
    from mscg.metrics import add_sums, means, metric_sums, ranks_from_lists
    from mscg.popularity import COUNTS_KEY
    from mscg.recommenders import load_recommender
    from mscg.training.distributed import resolve_device
    from mscg.training.generator import validation_users

    if weight is not None and not 0 <= weight <= 1:
        raise UsageError(f"--weight {weight} must be from 0 (the dense model alone) to 1 (the generator alone)")
    if min(candidates, valid_users, batch_size) < 1:
        raise UsageError("--candidates, --valid-users and --batch-size must be at least 1")
    inputs = [Path(generator), Path(dense), Path(data), *meta_inputs(generator), *meta_inputs(dense)]
    check_output(output, force=force, inputs=inputs)
    dev = resolve_device(device)
    parts = [load_recommender(Path(generator), dev, verify=verify), load_recommender(Path(dense), dev, verify=verify)]
    for (path, part), wanted, flag in zip(((generator, parts[0]), (dense, parts[1])), ("mscg-generator", "sasrec"),
                                          ("GENERATOR", "DENSE")):
        if part.kind != wanted:
            raise UsageError(f"{flag} {path} holds a {part.kind} model; pass a {wanted} model directory "
                             f"({'`mscg train`' if wanted == 'mscg-generator' else '`mscg collab --model-out`'})")
    fused = FusedRecommender(*parts, weight=1.0, candidates=candidates)
    ds = load_dataset(data)
    if fused.item_ids != ds.catalogue.item_ids:
        raise DataError(f"the models were trained on another catalogue than {ds.catalogue.path}; fuse them on the "
                        "data they were trained with")
    users = validation_users(len(ds.split), valid_users, seed).tolist()
    sums: dict[float, dict[str, float]] = {w: {} for w in WEIGHTS}
    for start in range(0, len(users), batch_size):
        chunk = users[start:start + batch_size]
        histories = [ds.split.history(u, "valid") for u in chunk]
        targets = torch.tensor([ds.split.target(u, "valid") for u in chunk])
        items, gen_scores, dense_scores = fused.candidates(histories, 10)
        for w in WEIGHTS:
            top, _ = fused.order(items, fused_scores(gen_scores, dense_scores, w), 10)
            add_sums(sums[w], metric_sums(ranks_from_lists(top, targets)))
    validation = [{"weight": w, **{k: round(v, 6) for k, v in means(s).items()}} for w, s in sums.items()]
    chosen = weight is None
    if chosen:  # the best NDCG@10; ties go to the weight listed first
        weight = max(validation, key=lambda row: row["ndcg@10"])["weight"]
    gen_meta = parts[0].meta
    meta_fields: dict[str, Any] = {
        "item_ids": list(fused.item_ids), "weight_chosen_on": "valid" if chosen else "given",
        "validation": validation, "valid_users": len(users),
        "provenance": provenance({"generator": Path(generator), "dense": Path(dense),
                                  "interactions": ds.interactions_path, "items": ds.items_path}, seed),
    }
    if COUNTS_KEY in gen_meta:  # training popularity (--fallback popular, --by-popularity)
        meta_fields[COUNTS_KEY] = gen_meta[COUNTS_KEY]
    with AtomicDir(output, force=force, inputs=inputs) as tmp:
        copy_model_dir(generator, tmp / GENERATOR_DIR)
        copy_model_dir(dense, tmp / DENSE_DIR)
        write_json(tmp / CONFIG_FILE, {"model_type": "fused", "weight": weight, "candidates": candidates})
        write_json(tmp / "meta.json", new_meta("model", model_type="fused", **meta_fields))
    return FuseResult(weight=float(weight), chosen=chosen, validation=validation, users=len(users))


@user_errors
def fuse_cli(
    generator: Annotated[Path, typer.Argument(help="Generator model directory (from `mscg train`).",
                                              show_default=False)],
    dense: Annotated[Path, typer.Argument(help="SASRec model directory (from `mscg collab --model-out`).",
                                          show_default=False)],
    data: DataOpt,
    output: OutputOpt,
    weight: Annotated[float | None, typer.Option(help="Weight of the generator's score, 0 to 1 (default: the best "
                                                      "validation NDCG@10 of 0, 0.1, ..., 1).")] = None,
    candidates: Annotated[int, typer.Option(help="Dense model's best items added to the generator's beam.")
                          ] = FUSE_CANDIDATES,
    valid_users: Annotated[int, typer.Option(help="Validation users the weight is chosen on (a seeded sample when "
                                                  "there are more).")] = DEFAULT_VALID_USERS,
    batch_size: Annotated[int, typer.Option(help="Users per batch.")] = 256,
    no_verify: NoVerifyOpt = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Fuse a generator and a SASRec model of the same data into one model (beyond the paper): the union of the
    generator's beam and SASRec's best --candidates items, re-ranked by weight * generator log-probability +
    (1 - weight) * SASRec log-probability. The weight is chosen on the validation split unless given.

    Writes OUTPUT, a model directory holding copies of both models; `evaluate`, `recommend`, `serve` and
    `mscg.load` use it like any model (metrics name it model_type "fused").

    [bold]Examples[/bold]

      mscg fuse work/mscgrec work/sasrec -d data/ml-100k -o work/fused

      mscg evaluate work/fused -d data/ml-100k -o work/eval_fused.json
    """
    r = fuse(generator, dense, data, output, weight=weight, candidates=candidates, valid_users=valid_users,
             batch_size=batch_size, seed=seed, device=device, force=force, verify=not no_verify)
    cells = ", ".join(f"{row['weight']:g}: {row['ndcg@10']:.4f}" for row in r.validation)
    info(f"validation NDCG@10 by weight on {r.users:,} users ({cells})")
    info(f"wrote {output}: weight {r.weight:g} " + ("(best on validation)" if r.chosen else "(given)"))
