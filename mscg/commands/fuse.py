"""`mscg fuse`: one model that re-ranks a generator's beam and SASRec's best items together
(mscg/recommenders/fused.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from mscg.commands._common import DataOpt, DeviceOpt, ForceOpt, NoVerifyOpt, OutputOpt, SeedOpt, user_errors
from mscg.console import info
from mscg.recommenders.defaults import EVAL_BATCH_SIZE, FUSE_CANDIDATES
from mscg.training.defaults import DEFAULT_VALID_USERS


@dataclass
class FuseResult:
    weights: list[float]  # one per part, the generator's first
    chosen: bool  # chosen on validation (not given)
    parts: list[str] = field(default_factory=list)  # "generator", then each dense scorer's kind
    ranked_by: list[str] = field(default_factory=list)  # the parts with a weight above 0: what the model ranks by
    validation: list[dict[str, Any]] = field(default_factory=list)
    users: int = 0


PART_NAMES = {"generator": "the generator", "sasrec": "SASRec", "head": "the dense head"}


def weighting_text(parts: list[str], weights: list[float], how: str) -> str:
    """The weights in words, saying plainly which parts get none: "weights 0 on the generator, 1 on SASRec (best on
    validation): the fused model ranks by SASRec alone"."""
    shown = ", ".join(f"{w:g} on {PART_NAMES[p]}" for p, w in zip(parts, weights))
    text = f"weights {shown} ({how})"
    used = [PART_NAMES[p] for p, w in zip(parts, weights) if w > 0]
    unused = [PART_NAMES[p] for p, w in zip(parts, weights) if w <= 0]
    if len(used) == 1:
        return f"{text}: the fused model ranks by {used[0]} alone"
    if unused:
        return f"{text}: {' and '.join(unused)} gets no weight; the fused model ranks by {' and '.join(used)}"
    return text


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


def fuse(generator: Path, dense: Path | None, data: Path, output: Path, *, weight: float | None = None,
         weights: list[float] | None = None, head: bool | None = None, candidates: int = FUSE_CANDIDATES,
         valid_users: int = DEFAULT_VALID_USERS, batch_size: int = EVAL_BATCH_SIZE, seed: int = 0, device: str = "auto",
         force: bool = False, verify: bool = True) -> FuseResult:
    """Validate every weighting on DATA's validation targets (a seeded sample of `valid_users`), keep the best
    NDCG@10 (or the given `weight` / `weights`) and write the fused model directory. The dense scorers: the SASRec
    model `dense`, and/or the generator's own dense head (`head`; by default, when no `dense` is given). With one
    dense scorer the weightings are the generator's WEIGHTS (`weight`), with two a 0.1 grid (`weights`)."""

    from mscg.artifacts.atomic import AtomicDir, check_output
    from mscg.artifacts.meta import meta_inputs, new_meta, provenance, write_json
    from mscg.artifacts.modelcard import write_model_card
    from mscg.artifacts.modeldir import CONFIG_FILE
    from mscg.data.split import load_dataset
    from mscg.errors import DataError, UsageError
    from mscg.recommenders.dense_head import DenseHead
    from mscg.recommenders.fused import DENSE_DIR, GENERATOR_DIR, WEIGHTS, FusedRecommender, weight_grid
    from mscg.metrics import add_sums, means, metric_sums, ranks_from_lists
    from mscg.popularity import COUNTS_KEY
    from mscg import recommenders
    from mscg.devices import resolve_device
    from mscg.evaluation import user_batches, validation_users

    head = dense is None if head is None else head
    kinds = (["sasrec"] if dense is not None else []) + (["head"] if head else [])
    if not kinds:
        raise UsageError("nothing to fuse the generator with: pass a SASRec model directory as DENSE, or --dense-head")
    if weight is not None and not 0 <= weight <= 1:
        raise UsageError(f"--weight {weight} must be from 0 (the dense model alone) to 1 (the generator alone)")
    if weight is not None and len(kinds) > 1:
        raise UsageError("with two dense scorers give --weights W_GENERATOR,W_SASREC,W_HEAD instead of --weight")
    if weights is not None and (len(weights) != len(kinds) + 1 or any(not 0 <= w <= 1 for w in weights)
                                or abs(sum(weights) - 1) > 1e-6):
        raise UsageError(f"--weights must be {len(kinds) + 1} numbers from 0 to 1 summing to 1 (the generator's, "
                         f"then {', '.join(kinds)})")
    if min(candidates, valid_users, batch_size) < 1:
        raise UsageError("--candidates, --valid-users and --batch-size must be at least 1")
    dense_paths = [] if dense is None else [Path(dense)]
    inputs = [Path(generator), *dense_paths, Path(data), *meta_inputs(generator),
              *(q for p in dense_paths for q in meta_inputs(p))]
    check_output(output, force=force, inputs=inputs)
    dev = resolve_device(device)
    loaded = [recommenders.load(p, dev, verify=verify) for p in [Path(generator), *dense_paths]]
    for path, part, wanted, flag in zip([generator, *dense_paths], loaded, ("mscg-generator", "sasrec"),
                                        ("GENERATOR", "DENSE")):
        if part.kind != wanted:
            raise UsageError(f"{flag} {path} holds a {part.kind} model; pass a {wanted} model directory "
                             f"({'`mscg train`' if wanted == 'mscg-generator' else '`mscg collab --model-out`'})")
    if head and not loaded[0].has_dense_head:
        raise UsageError(f"GENERATOR {generator} has no dense head: pass a SASRec model directory as DENSE, or train "
                         "the generator with --dense-content")
    scorers = [loaded[1] if kind == "sasrec" else DenseHead(loaded[0]) for kind in kinds]
    fused = FusedRecommender(loaded[0], scorers, [1.0] + [0.0] * len(scorers), candidates=candidates)
    ds = load_dataset(data)
    if fused.item_ids != ds.catalogue.item_ids:
        raise DataError(f"the models were trained on another catalogue than {ds.catalogue.path}; fuse them on the "
                        "data they were trained with")
    grid = [(w, round(1 - w, 10)) for w in WEIGHTS] if len(kinds) == 1 else weight_grid(len(kinds) + 1)
    users = validation_users(len(ds.split), valid_users, seed).tolist()
    sums: list[dict[str, float]] = [{} for _ in grid]
    for batch in user_batches(ds.split, users, "valid", batch_size):
        items, part_scores = fused.candidates(batch.histories, 10)
        # the weights are chosen on the items every part knows (see mscg/recommenders/fused.py's NOTE)
        unknown = None if fused.untrained is None else fused.untrained[items.clamp(min=0)]  # (B, M)
        for n, ws in enumerate(grid):
            scores = fused.combine(items, part_scores, ws)
            if unknown is not None:
                scores = scores.masked_fill(unknown, float("-inf"))
            top, _ = fused.order(items, scores, 10)
            add_sums(sums[n], metric_sums(ranks_from_lists(top, batch.targets)))
    key = "weight" if len(kinds) == 1 else "weights"
    validation = [{key: ws[0] if len(kinds) == 1 else list(ws), **{k: round(v, 6) for k, v in means(s).items()}}
                  for ws, s in zip(grid, sums)]
    chosen = weight is None and weights is None
    if chosen:  # the best NDCG@10; ties go to the weighting listed first
        best = max(range(len(grid)), key=lambda n: validation[n]["ndcg@10"])
        final = list(grid[best])
    else:
        final = [weight, round(1 - weight, 10)] if weight is not None else list(weights)
    gen_meta = loaded[0].meta
    parts = ["generator", *kinds]
    ranked_by = [part for part, w in zip(parts, final) if w > 0]  # with one part: that part's ranking, no fusion
    meta_fields: dict[str, Any] = {
        "item_ids": list(fused.item_ids), "weight_chosen_on": "valid" if chosen else "given", "ranked_by": ranked_by,
        "validation": validation, "valid_users": len(users),
        "provenance": provenance({"generator": Path(generator), **({"dense": Path(dense)} if dense else {}),
                                  "interactions": ds.interactions_path, "items": ds.items_path}, seed),
    }
    if COUNTS_KEY in gen_meta:  # training popularity (--fallback popular, --by-popularity)
        meta_fields[COUNTS_KEY] = gen_meta[COUNTS_KEY]
    config: dict[str, Any] = {"model_type": "fused", "candidates": candidates}
    if len(kinds) == 1:
        config.update(weight=final[0], dense=kinds[0])
    else:
        config.update(weights=final, dense=kinds)
    with AtomicDir(output, force=force, inputs=inputs) as tmp:
        copy_model_dir(generator, tmp / GENERATOR_DIR)
        if dense is not None:
            copy_model_dir(dense, tmp / DENSE_DIR)
        write_json(tmp / CONFIG_FILE, config)
        write_json(tmp / "meta.json", new_meta("model", model_type="fused", **meta_fields))
        write_model_card(tmp)
    return FuseResult(weights=[float(w) for w in final], chosen=chosen, parts=parts, ranked_by=ranked_by,
                      validation=validation, users=len(users))


def parse_weights(text: str | None) -> list[float] | None:
    from mscg.errors import UsageError

    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise UsageError(f"--weights {text!r}: give comma-separated numbers, e.g. 0.5,0.3,0.2") from None


@user_errors
def fuse_cli(
    generator: Annotated[Path, typer.Argument(help="Generator model directory (from `mscg train`).",
                                              show_default=False)],
    data: DataOpt,
    output: OutputOpt,
    dense: Annotated[Path | None, typer.Argument(help="SASRec model directory (from `mscg collab --model-out`); "
                                                 "omitted: the generator's own dense head (`train --dense-content`).",
                                                 show_default=False)] = None,
    weight: Annotated[float | None, typer.Option(help="Weight of the generator's score, 0 to 1 (default: the best "
                                                      "validation NDCG@10 of 0, 0.1, ..., 1).")] = None,
    weights: Annotated[str | None, typer.Option(help="With two dense scorers: the weights of the generator, SASRec "
                                                     "and the dense head, comma-separated, summing to 1 (default: "
                                                     "the best on validation of a 0.1 grid).")] = None,
    dense_head: Annotated[bool | None, typer.Option("--dense-head/--no-dense-head", help="Also score with the "
                                                    "generator's own dense head (`train --dense-content`); default: "
                                                    "when no DENSE is given.", show_default=False)] = None,
    candidates: Annotated[int, typer.Option(help="Each dense scorer's best items added to the generator's beam.")
                          ] = FUSE_CANDIDATES,
    valid_users: Annotated[int, typer.Option(help="Validation users the weight is chosen on (a seeded sample when "
                                                  "there are more).")] = DEFAULT_VALID_USERS,
    batch_size: Annotated[int, typer.Option(help="Users per batch.")] = EVAL_BATCH_SIZE,
    no_verify: NoVerifyOpt = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Fuse a generator and dense scorers of the same data into one model (beyond the paper): the union of the
    generator's beam and each dense scorer's best --candidates items, re-ranked by weight * generator
    log-probability + (1 - weight) * dense log-probability. The dense scorer is a SASRec model (DENSE) and/or the
    generator's own dense head (--dense-head, the default without DENSE; trained with `train --dense-content`, it
    scores items by content, so new items can be recommended); with both, one weight each (--weights). The
    weights are chosen on the validation split unless given. A part given weight 0 is left out: with one part left
    the model ranks as that part alone (fuse says so; meta.json's ranked_by lists the parts it ranks by).

    Writes OUTPUT, a model directory holding copies of the models; `evaluate`, `recommend`, `serve` and
    `mscg.load` use it like any model (metrics name it model_type "fused"). With the head, the generator and
    SASRec abstain on items without training interactions: the head alone scores them.

    [bold]Examples[/bold]

      mscg fuse work/mscgrec work/sasrec -d data/ml-100k -o work/fused

      mscg evaluate work/fused -d data/ml-100k -o work/eval_fused.json

      mscg fuse work/mscgrec_dense -d data/ml-100k -o work/fused_head

      mscg fuse work/mscgrec_dense work/sasrec --dense-head -d data/ml-100k -o work/fused_all
    """
    r = fuse(generator, dense, data, output, weight=weight, weights=parse_weights(weights), head=dense_head,
             candidates=candidates, valid_users=valid_users, batch_size=batch_size, seed=seed, device=device,
             force=force, verify=not no_verify)
    if len(r.parts) == 2:
        cells = ", ".join(f"{row['weight']:g}: {row['ndcg@10']:.4f}" for row in r.validation)
        info(f"validation NDCG@10 by the generator's weight on {r.users:,} users ({cells})")
    else:
        best = sorted(r.validation, key=lambda row: -row["ndcg@10"])[:3]
        cells = ", ".join(f"{'/'.join(f'{w:g}' for w in row['weights'])}: {row['ndcg@10']:.4f}" for row in best)
        info(f"validation NDCG@10 of {len(r.validation)} weightings on {r.users:,} users, best: {cells}")
    info(f"wrote {output}: {weighting_text(r.parts, r.weights, 'best on validation' if r.chosen else 'given')}")
