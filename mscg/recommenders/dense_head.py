"""A generator's own dense head (`mscg train --dense-content`, LIGER-style) as a dense scorer: it scores every item
by its content, so items that training never met can be recommended. It ranks as a part of a fused model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mscg.errors import DataError


class DenseHead:
    """A generator's own dense head as the dense scorer of a fused model."""

    kind = "dense-head"

    def __init__(self, generator):
        if not generator.has_dense_head:
            raise DataError("the generator has no dense head; train it with `mscg train --dense-content`, or fuse "
                            "it with a SASRec model directory")
        self.generator = generator
        self.item_ids = generator.item_ids

    def scores(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return self.generator.dense_scores(histories)

    def memory_bytes_per_item(self) -> float:
        keys = self.generator.model.item_key_table
        return keys.shape[1] * keys.element_size()
