"""How items share code prefixes and collision groups, by popularity: do rare items pile into the prefixes
of popular ones?

    python benchmarks/code_sharing.py --data data/scientific --codes work/codes --name amazon-scientific

Items are split into three groups of (nearly) equal size by how often they occur in the training split
(popular, middle, rare; items never seen in training count as rare). For one modality's codes (default
collab) and each group: how many distinct level-1 and level-1..2 prefixes its items use, the mean size of
the prefix group an item sits in, the share of popular items among the other members of that group, and
how often an item shares its full quantizer code (a collision group of two or more).

Writes benchmarks/results/code-sharing-NAME.json and the BENCHMARKS.md section code-sharing-NAME.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, stamp, write_section  # noqa: E402

GROUPS = ("popular", "middle", "rare")


def item_groups(counts: np.ndarray) -> np.ndarray:
    """(N,) 0/1/2 = popular/middle/rare: thirds of the items by training count, most popular first."""
    order = np.argsort(-counts, kind="stable")
    group = np.empty(len(counts), dtype=np.int64)
    for g, members in enumerate(np.array_split(order, 3)):
        group[members] = g
    return group


def sharing(codes: np.ndarray, group: np.ndarray, depth: int) -> list[dict]:
    """Per popularity group: distinct prefixes of `depth` levels, mean prefix-group size, share of popular
    items among an item's prefix-mates."""
    _, prefix_id = np.unique(codes[:, :depth], axis=0, return_inverse=True)
    prefix_id = prefix_id.reshape(-1)
    size = np.bincount(prefix_id)
    popular = np.bincount(prefix_id, weights=(group == 0).astype(float))
    rows = []
    for g in range(3):
        mine = group == g
        mates = size[prefix_id[mine]] - 1
        popular_mates = popular[prefix_id[mine]] - (g == 0)
        share = np.divide(popular_mates, mates, out=np.zeros(len(mates)), where=mates > 0)
        rows.append({"distinct": int(len(np.unique(prefix_id[mine]))),
                     "mean_group_size": float(size[prefix_id[mine]].mean()),
                     "popular_share_of_mates": float(share[mates > 0].mean()) if (mates > 0).any() else 0.0})
    return rows


def main() -> None:
    from mscg.artifacts.codes import load_codes
    from mscg.data.split import load_dataset
    from mscg.popularity import train_counts

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--codes", type=Path, action="append", required=True, help="codes directory (repeat to compare)")
    p.add_argument("--label", action="append", help="a name per --codes (default: the folder name)")
    p.add_argument("--modality", default="collab")
    p.add_argument("--name", required=True)
    args = p.parse_args()
    ds = load_dataset(args.data)
    counts = train_counts(ds.split, len(ds.catalogue))
    group = item_groups(counts)
    labels = args.label or [c.name for c in args.codes]
    results = {}
    for label, path in zip(labels, args.codes):
        codes = load_codes(path)
        columns = codes.vocab.columns_of(args.modality)
        quantizer = codes.codes[:, columns[:-1]].numpy()  # the quantizer levels, without the collision level
        has = (quantizer >= 0).all(axis=1)
        q, g = quantizer[has], group[has]
        _, full_id, full_size = np.unique(q, axis=0, return_inverse=True, return_counts=True)
        collided = full_size[full_id.reshape(-1)] > 1
        per_depth = {depth: sharing(q, g, depth) for depth in (1, 2)}
        results[label] = [{"group": GROUPS[k], "items": int((g == k).sum()),
                           "train_count": [int(counts[has][g == k].min()), int(counts[has][g == k].max())],
                           "level1": per_depth[1][k], "level12": per_depth[2][k],
                           "in_collision": float(collided[g == k].mean())} for k in range(3)]
    out = ROOT / "benchmarks" / "results" / f"code-sharing-{args.name}.json"
    out.write_text(json.dumps({"stamp": stamp("cpu"), "modality": args.modality, "results": results}, indent=2) + "\n")
    lines = [f"### Code prefixes and collisions by item popularity: {args.name} ({args.modality} codes)", "",
             stamp("cpu"), "",
             "| codes | items | training count | distinct L1 | L1 group size | popular share of L1 mates | "
             "distinct L1-2 | L1-2 group size | popular share of L1-2 mates | in a collision |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, rows in results.items():
        for r in rows:
            lines.append(f"| {label} | {r['group']} ({r['items']:,}) | {r['train_count'][0]}–{r['train_count'][1]} | "
                         f"{r['level1']['distinct']} | {r['level1']['mean_group_size']:.1f} | "
                         f"{r['level1']['popular_share_of_mates']:.1%} | {r['level12']['distinct']} | "
                         f"{r['level12']['mean_group_size']:.1f} | {r['level12']['popular_share_of_mates']:.1%} | "
                         f"{r['in_collision']:.1%} |")
    write_section(f"code-sharing-{args.name}", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
