"""The trie of one modality's item codes, as per-level transition tables built once.

For depth j, every distinct code prefix of length j is a node (depth 0: the root). The step from
depth j to j+1 is a table `children(j, nodes)` -> (..., size_j): the node reached by appending local
code k to node n, or -1 when no item continues that way; at the last depth it gives the item index.
So "which tokens are allowed" is `children(j, nodes) >= 0` and a step of a search is one gather (or
one vectorised scatter): no Python walk per beam.

Each level is stored in one of two layouts, chosen at build time:
- dense `next_node[j]` (n_nodes_j, size_j) int32: one gather per step; used when the table is small
  (<= 64 MiB: every quantizer level of 3 x 256 codes, whatever the catalogue) or not too sparse;
- CSR (`child_ptr[j]`, `child_code[j]`, `child_next[j]`): memory linear in the number of edges; used
  for sparse levels, e.g. a collision level made wide by a few large groups of identical items,
  where a dense table would be (distinct prefixes x largest group) entries.
"""

from __future__ import annotations

import numpy as np
import torch


class CodeTrie:
    def __init__(self, codes: torch.Tensor, sizes: list[int], *, dense_max_bytes: int = 64 * 2**20,
                 dense_ratio: float = 16.0):
        """codes: (N_items, D) local codes of the decode modality (collision level last), rows of -1 for
        items without the modality (they are not in the trie). Full codes must be unique.

        A level is stored dense when its table takes at most `dense_max_bytes` or has at most
        `dense_ratio` entries per edge (item or child node); otherwise as CSR. Both 0: CSR everywhere."""
        codes_np = codes.cpu().numpy().astype(np.int64)
        present = (codes_np >= 0).all(axis=1)
        items = np.flatnonzero(present)
        rows = codes_np[items]
        D = codes_np.shape[1]
        self.sizes = [int(s) for s in sizes]
        self.n_items = int(codes_np.shape[0])
        node_of = np.full((codes_np.shape[0], D), -1, dtype=np.int32)  # node of each item at depth j
        prefix_node = np.zeros(len(items), dtype=np.int64)  # depth 0: everybody at the root
        n_nodes = 1
        self.n_nodes: list[int] = []
        self.next_node: list[torch.Tensor | None] = []
        self.child_ptr: list[torch.Tensor | None] = []
        self.child_code: list[torch.Tensor | None] = []
        self.child_next: list[torch.Tensor | None] = []
        for j in range(D):
            size = self.sizes[j]
            node_of[items, j] = prefix_node
            key = prefix_node * size + rows[:, j]  # edges ordered by (node, code)
            if j < D - 1:
                edge_key, child = np.unique(key, return_inverse=True)
                edge_next = np.arange(len(edge_key), dtype=np.int64)
                child = child.reshape(-1)
            else:
                order = np.argsort(key, kind="stable")
                edge_key, edge_next = key[order], items[order]
                assert len(edge_key) < 2 or bool((np.diff(edge_key) > 0).all()), "full codes must be unique"
            edge_node, edge_code = edge_key // size, edge_key % size
            self.n_nodes.append(n_nodes)
            entries = n_nodes * size
            if entries * 4 <= dense_max_bytes or entries <= dense_ratio * len(edge_key):
                table = np.full((n_nodes, size), -1, dtype=np.int32)
                table[edge_node, edge_code] = edge_next
                self.next_node.append(torch.from_numpy(table))
                self.child_ptr.append(None), self.child_code.append(None), self.child_next.append(None)
            else:
                ptr = np.zeros(n_nodes + 1, dtype=np.int64)
                np.cumsum(np.bincount(edge_node, minlength=n_nodes), out=ptr[1:])
                self.next_node.append(None)
                self.child_ptr.append(torch.from_numpy(ptr))
                self.child_code.append(torch.from_numpy(edge_code.astype(np.int64)))
                self.child_next.append(torch.from_numpy(edge_next.astype(np.int32)))
            if j < D - 1:
                prefix_node, n_nodes = child, (int(child.max()) + 1 if len(child) else 1)
        self.node_of = torch.from_numpy(node_of)
        self.item_count = len(items)

    @property
    def depth(self) -> int:
        return len(self.sizes)

    def layout(self, level: int) -> str:
        return "dense" if self.next_node[level] is not None else "csr"

    def to(self, device: torch.device) -> CodeTrie:
        move = lambda ts: [t.to(device) if t is not None else None for t in ts]  # noqa: E731
        self.next_node, self.child_ptr = move(self.next_node), move(self.child_ptr)
        self.child_code, self.child_next = move(self.child_code), move(self.child_next)
        self.node_of = self.node_of.to(device)
        return self

    def children(self, level: int, nodes: torch.Tensor, *, as_long: bool = True) -> torch.Tensor:
        """nodes (...) long at depth `level` (-1: no node) -> (..., size_level): the node (item at the
        last level) each local code leads to, -1 where no item continues that way. Long, or int32 with
        as_long=False (half the memory traffic of a search step)."""
        size = self.sizes[level]
        table = self.next_node[level]
        if table is not None:
            out = table[nodes.clamp(min=0)]  # (..., size) int32
            out.masked_fill_((nodes < 0)[..., None], -1)
            return out.long() if as_long else out
        flat = nodes.reshape(-1)
        ptr = self.child_ptr[level]
        start = ptr[flat.clamp(min=0)]
        count = torch.where(flat >= 0, ptr[flat.clamp(min=0) + 1] - start, torch.zeros_like(start))  # (M,)
        out = torch.full((flat.shape[0], size), -1, dtype=torch.long if as_long else torch.int32, device=flat.device)
        row = torch.repeat_interleave(torch.arange(flat.shape[0], device=flat.device), count)  # (E',)
        first = torch.cumsum(count, 0) - count
        edge = start[row] + torch.arange(row.shape[0], device=flat.device) - first[row]  # (E',) edge ids
        out[row, self.child_code[level][edge]] = self.child_next[level][edge].to(out.dtype)
        return out.view(*nodes.shape, size)

    def excluded_nodes(self, excluded: torch.Tensor) -> list[torch.Tensor]:
        """excluded (B, n_items) bool, per user -> for every level j, (B, n_nodes at depth j+1) bool: the nodes
        (at the last level the items) all of whose items that user excludes. A search that drops them never
        spends a beam on a prefix leading only to excluded items."""
        present = self.node_of[:, 0] >= 0  # items in the trie
        out = []
        for depth in range(1, self.depth):
            n = self.n_nodes[depth]
            node = torch.where(present, self.node_of[:, depth].long(), torch.full_like(self.node_of[:, 0].long(), n))
            items = torch.bincount(node, minlength=n + 1)[:n]  # (n,) items under each node
            hit = torch.zeros(excluded.shape[0], n + 1, device=excluded.device).index_add_(1, node, excluded.float())
            out.append(hit[:, :n] >= items)
        out.append(excluded & present)
        return out

    def allowed_along(self, items: torch.Tensor) -> torch.Tensor:
        """For target items (B,), the allowed next codes at every depth given the item's own prefix:
        (B, D, max size) bool (False beyond a level's size). Items without the modality get all False."""
        width = max(self.sizes)
        nodes = self.node_of[items].long()  # (B, D)
        out = torch.zeros(len(items), self.depth, width, dtype=torch.bool, device=nodes.device)
        for j in range(self.depth):
            out[:, j, : self.sizes[j]] = self.children(j, nodes[:, j]) >= 0
        return out

    def memory_bytes(self) -> int:
        tensors = [*self.next_node, *self.child_ptr, *self.child_code, *self.child_next, self.node_of]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)
