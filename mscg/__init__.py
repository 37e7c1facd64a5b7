"""mscg: multimodal generative recommendation (MSCGRec) as composable command-line stages.

In Python: `model = mscg.load("work/mscgrec")`, then `model.recommend(["50", "172"], k=10)` (see mscg.api).
"""

from __future__ import annotations

__version__ = "0.1.0"


def load(path, device: str = "auto", *, beam_size: int | None = None, codes=None, verify: bool = True):
    """The model in directory `path` (from `mscg train`, `mscg collab --model-out` or `mscg fuse`) as an
    `mscg.api.Model`, on `device` (auto, as in the CLI: the GPU when present; or cpu, cuda, cuda:N):
    `recommend(history_item_ids, k=10, exclude_history=True)` -> [(item_id, score), ...], best first, and
    `recommend_batch(histories, k=10)`. torch is imported here, not by `import mscg`."""
    from mscg.api import load as load_model

    return load_model(path, device, beam_size=beam_size, codes=codes, verify=verify)
