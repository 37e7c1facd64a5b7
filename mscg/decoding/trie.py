"""The trie of one modality's item codes, as dense per-level transition tables built once.

For depth j, every distinct code prefix of length j is a node (depth 0: the root). `next_node[j]`
(n_nodes_j, size_j) int32 gives the node reached by appending local code k to node n, or -1 when no
item continues that way; at the last depth it gives the item index. So "which tokens are allowed" is
`next_node[j][node] >= 0` and a step of a search is one gather: no Python walk per beam.
"""

from __future__ import annotations

import numpy as np
import torch


class CodeTrie:
    def __init__(self, codes: torch.Tensor, sizes: list[int]):
        """codes: (N_items, D) local codes of the decode modality (collision level last), rows of -1 for
        items without the modality (they are not in the trie). Full codes must be unique."""
        codes_np = codes.cpu().numpy().astype(np.int64)
        present = (codes_np >= 0).all(axis=1)
        items = np.flatnonzero(present)
        rows = codes_np[items]
        D = codes_np.shape[1]
        self.sizes = list(sizes)
        self.n_items = int(codes_np.shape[0])
        node_of = np.full((codes_np.shape[0], D), -1, dtype=np.int64)  # node of each item at depth j
        prefix_node = np.zeros(len(items), dtype=np.int64)  # depth 0: everybody at the root
        n_nodes = 1
        self.next_node: list[torch.Tensor] = []
        for j in range(D):
            node_of[items, j] = prefix_node
            table = np.full((n_nodes, sizes[j]), -1, dtype=np.int32)
            if j < D - 1:
                _, child = np.unique(np.stack([prefix_node, rows[:, j]], axis=1), axis=0, return_inverse=True)
                child = child.reshape(-1)
                table[prefix_node, rows[:, j]] = child
                prefix_node, n_nodes = child, int(child.max()) + 1 if len(child) else 1
            else:
                table[prefix_node, rows[:, j]] = items
            self.next_node.append(torch.from_numpy(table))
        self.node_of = torch.from_numpy(node_of)
        assert len(items) == 0 or len(np.unique(rows, axis=0)) == len(items), "full codes must be unique"
        self.item_count = len(items)

    @property
    def depth(self) -> int:
        return len(self.sizes)

    def to(self, device: torch.device) -> CodeTrie:
        self.next_node = [t.to(device) for t in self.next_node]
        self.node_of = self.node_of.to(device)
        return self

    def allowed_along(self, items: torch.Tensor) -> torch.Tensor:
        """For target items (B,), the allowed next codes at every depth given the item's own prefix:
        (B, D, max size) bool (False beyond a level's size). Items without the modality get all False."""
        width = max(self.sizes)
        nodes = self.node_of[items]  # (B, D)
        out = torch.zeros(len(items), self.depth, width, dtype=torch.bool, device=nodes.device)
        for j, table in enumerate(self.next_node):
            valid = nodes[:, j] >= 0
            rows = table[nodes[:, j].clamp(min=0)] >= 0  # (B, size_j)
            out[:, j, : self.sizes[j]] = rows & valid[:, None]
        return out

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.next_node) + self.node_of.numel() * 8
