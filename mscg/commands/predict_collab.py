"""`mscg predict-collab`: collab embeddings for the items SASRec never trained, predicted from their content."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from mscg.commands._common import DataOpt, ForceOpt, OutputOpt, SeedOpt, user_errors
from mscg.console import info, warn


@dataclass
class PredictResult:
    trained: int
    predicted: int
    without_content: int
    alpha: float
    quality: dict[str, Any] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # trained rows of items items.jsonl no longer lists


def untrained_items(collab, data: Path, catalogue, min_interactions: int) -> set[str]:
    """The catalogue items whose collab embedding is to be predicted: absent from `collab` (the catalogue grew
    after `collab` ran), listed by it as having no training interactions (for an artifact made before mscg
    recorded that: none in DATA's training split), and with `min_interactions` > 1 those with fewer in DATA's
    training split. DATA is read only when needed."""
    recorded = collab.meta.get("source", {}).get("untrained_item_ids")
    untrained = set(recorded) if isinstance(recorded, list) else set()
    if not isinstance(recorded, list) or min_interactions > 1:
        from mscg.data.split import load_dataset
        from mscg.popularity import items_below, train_counts

        ds = load_dataset(data)
        counts = train_counts(ds.split, len(ds.catalogue))
        untrained |= set(items_below(counts, ds.catalogue.item_ids, min_interactions))
    known = set(collab.item_ids)
    return untrained | {i for i in catalogue.item_ids if i not in known}


def predict_collab(data: Path, output: Path, *, collab: Path, contents: list[Path], min_interactions: int = 1,
                   seed: int = 0, force: bool = False) -> PredictResult:
    """Fit the content map on the items with a trained collab embedding and write OUTPUT: the trained rows as
    they are plus a predicted row for every untrained item that has content (catalogue order). With
    `min_interactions` > 1 the items with fewer training interactions count as untrained too: their SASRec rows,
    learnt from a handful of interactions, are replaced by the prediction (and the map is fitted without them)."""
    import numpy as np
    import torch

    from mscg.artifacts.atomic import AtomicDir, check_output
    from mscg.artifacts.embeddings import Embeddings, load_embeddings, save_embeddings
    from mscg.artifacts.meta import provenance
    from mscg.data.items import load_catalogue
    from mscg.data.split import dataset_files
    from mscg.errors import DataError, UsageError
    from mscg.training.content_map import content_features, fit_content_map, load_contents

    if min_interactions < 1:
        raise UsageError(f"--min-interactions {min_interactions} must be at least 1 (1: only items without any)")
    if not contents:
        raise UsageError("pass at least one --content embeddings artifact (e.g. the text embeddings from `mscg "
                         "embed`)")
    items_path, _ = dataset_files(data)
    inputs = [Path(data), items_path, Path(collab), *map(Path, contents)]
    check_output(output, force=force, inputs=inputs)
    catalogue = load_catalogue(items_path)
    trained_emb = load_embeddings(collab, "--collab")
    if trained_emb.modality != "collab":
        raise DataError(f"--collab {collab} holds {trained_emb.modality} embeddings; pass the output of `mscg collab`")
    content = load_contents(contents, "--content", catalogue, items_path)
    modalities = [e.modality for e in content]
    untrained = untrained_items(trained_emb, data, catalogue, min_interactions)
    collab_rows = trained_emb.row_of()
    dropped = [i for i in trained_emb.item_ids if i not in catalogue.index]  # items gone from items.jsonl
    with_content = set().union(*(e.item_ids for e in content))
    fit_ids = [i for i in catalogue.item_ids if i in collab_rows and i not in untrained and i in with_content]
    new_ids = [i for i in catalogue.item_ids if i in untrained and i in with_content]
    targets = trained_emb.vectors[[collab_rows[i] for i in fit_ids]].double().numpy()
    content_map = fit_content_map(content_features(content, fit_ids), targets, seed)
    predicted = content_map.predict(content_features(content, new_ids)) if new_ids else np.zeros((0, targets.shape[1]))
    predicted_rows = dict(zip(new_ids, range(len(new_ids))))
    ids, vectors = [], []
    for item_id in catalogue.item_ids:  # trained rows unchanged, predicted ones added, untrained ones dropped
        if item_id in predicted_rows:
            ids.append(item_id)
            vectors.append(torch.from_numpy(predicted[predicted_rows[item_id]]).float())
        elif item_id in collab_rows and item_id not in untrained:
            ids.append(item_id)
            vectors.append(trained_emb.vectors[collab_rows[item_id]])
    source = {"encoder": "SASRec item embeddings; untrained items predicted from content (ridge)",
              "collab": str(collab), "content_modalities": modalities, "predicted_item_ids": new_ids,
              "untrained_item_ids": [], "dropped_item_ids": dropped, "min_interactions": min_interactions,
              "map": {"method": "ridge", "alpha": content_map.alpha, **content_map.quality}}
    prov = provenance({"items": items_path, "collab": Path(collab),
                       **{f"content_{e.modality}": Path(p) for p, e in zip(contents, content)}}, seed)
    with AtomicDir(output, force=force, inputs=inputs) as tmp:
        save_embeddings(tmp, Embeddings("collab", ids, torch.stack(vectors)), source=source, provenance=prov)
    return PredictResult(trained=len(ids) - len(new_ids), predicted=len(new_ids),
                         without_content=sum(i in untrained and i not in with_content for i in catalogue.item_ids),
                         alpha=content_map.alpha, quality=content_map.quality, dropped=dropped)


@user_errors
def predict_collab_cli(
    data: DataOpt,
    output: OutputOpt,
    collab: Annotated[Path, typer.Option("--collab", help="Collab embeddings from `mscg collab`.",
                                         show_default=False)],
    content: Annotated[list[Path], typer.Option("--content", help="Text or image embeddings of the items (from "
                                                "`mscg embed` on the current items.jsonl); repeat per modality.",
                                                show_default=False)],
    min_interactions: Annotated[int, typer.Option(help="Also predict the items with fewer training interactions than "
                                                       "this (their SASRec rows are learnt from very little); 1: "
                                                       "only the items without any.")] = 1,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Give a collab embedding to every item SASRec never trained: items with no training interactions, and
    items added to items.jsonl after `collab` ran. A ridge map from content (text and/or image embeddings) to
    the SASRec embedding is fitted on the trained items and predicts the others; quantize OUTPUT like any collab
    embeddings, so every item gets collab codes.

    Writes OUTPUT (collab embeddings: the trained rows unchanged plus the predicted ones); its meta.json lists the
    predicted items and how well the map does on trained items it held out. Items with neither a trained
    embedding nor content stay without a collab embedding.

    [bold]Examples[/bold]

      mscg predict-collab -d data/ml-100k --collab work/emb_collab --content work/emb_text -o work/emb_collab_full

      mscg predict-collab -d data/shop --collab work/emb_collab --content work/emb_text --content work/emb_image \\
        -o work/emb_collab_full
    """
    r = predict_collab(data, output, collab=collab, contents=content, min_interactions=min_interactions, seed=seed,
                       force=force)
    q = r.quality
    info(f"content map (ridge, alpha {r.alpha:g}) on {q['fit_items']:,} trained items; on {q['holdout_items']:,} "
         f"held out: R² {q['holdout_r2']:.3f}, cosine {q['holdout_cosine']:.3f}, nearest is itself "
         f"{q['holdout_nearest_is_self']:.1%}")
    if r.dropped:
        warn(f"dropped {len(r.dropped):,} collab embeddings of items that {data}/items.jsonl no longer lists "
             f"(e.g. {r.dropped[0]!r}); meta.json names them (source.dropped_item_ids)")
    info(f"wrote {output}: {r.trained:,} trained + {r.predicted:,} predicted collab embeddings"
         + (f"; {r.without_content:,} untrained items have no content and stay without one" if r.without_content
            else ""))
