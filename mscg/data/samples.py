"""Training samples built from the training part of the leave-one-out split."""

from __future__ import annotations

import numpy as np
import torch

from mscg.data.split import Split

IGNORE = -100


class SASRecWindows:
    """Next-item windows for SASRec: every training transition appears once.

    A user's training sequence s is cut, from the end, into windows of `max_history` inputs
    (s[:-1]) and targets (s[1:]), left-padded: inputs with 0 (items are stored +1), targets with -100.
    With `stride` < max_history, windows start every `stride` items and each keeps only its last
    `stride` targets (the first window of a user keeps all of its own): every target then sees at least
    max_history - stride + 1 items (or all before it), and still appears once.

    With `pack`, a batch puts its windows' real items side by side in as few rows of max_history as they fit
    (first-fit decreasing), with their position ids and a segment number per window, so that the model
    spends nothing on padding (short histories: most of a padded window is padding) and computes the same loss.
    """

    def __init__(self, split: Split, max_history: int, device: torch.device = torch.device("cpu"),
                 stride: int | None = None, pack: bool = False):
        self.max_history, self.pack = max_history, pack
        stride = max_history if stride is None else stride
        inputs, targets = [], []
        for u in range(len(split)):
            s = split.train_sequence(u)
            x, y = s[:-1] + 1, s[1:]
            for end in range(len(y), 0, -stride):
                start = max(0, end - max_history)
                pad = max_history - (end - start)
                kept = y[start:end].copy()
                kept[: max(0, end - stride - start)] = IGNORE  # targets an earlier window keeps
                inputs.append(np.concatenate([np.zeros(pad, dtype=np.int64), x[start:end]]))
                targets.append(np.concatenate([np.full(pad, IGNORE, dtype=np.int64), kept]))
        shape = (len(inputs), max_history)
        self.inputs = torch.from_numpy(np.stack(inputs)) if inputs else torch.zeros(shape, dtype=torch.long)
        self.targets = torch.from_numpy(np.stack(targets)) if targets else torch.zeros(shape, dtype=torch.long)
        self.lengths = (self.inputs != 0).sum(dim=1).numpy()  # (N_w,) real inputs, at the right end
        self.inputs, self.targets = self.inputs.to(device), self.targets.to(device)  # batches: gathers there

    def __len__(self) -> int:
        return len(self.inputs)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.pack:
            return self.packed(indices)
        indices = indices.to(self.inputs.device)
        return {"history": self.inputs[indices], "targets": self.targets[indices]}

    def packed(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """The windows' real items packed into rows of max_history: history and targets (rows, L) as in a
        padded batch, plus positions (each item's column in its padded window) and segments (k + 1 for the
        k-th window of the batch, 0 for the padding left at the end of rows)."""
        p = PackedLayout(self.lengths, indices, self.max_history, self.inputs.device)
        return {"history": p.gather(self.inputs, 0), "targets": p.gather(self.targets, IGNORE), "positions": p.src,
                "segments": p.segments}


class PackedLayout:
    """Where a batch of right-aligned windows' real items go when packed into rows of L (first-fit decreasing):
    window b's item at column `src` of its padded window goes to row `dst_row`, column `dst`. `src`, `within`
    (its place counted from its window's first item) and `segments` (b + 1; 0 for the padding left at the end of
    rows) come as (rows, L) tensors on `device`."""

    def __init__(self, lengths: np.ndarray, indices: torch.Tensor, L: int, device: torch.device):
        lengths = lengths[indices.cpu().numpy()]  # (B,) real items of each window
        row, start = first_fit_decreasing(lengths, L)
        b = np.repeat(np.arange(len(lengths)), lengths)  # the window of every real item of the batch
        within = np.arange(len(b)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # its place in its window
        self.window = indices.to(device)[torch.from_numpy(b).to(device)]
        src, self.dst_row, self.dst = (torch.from_numpy(a).to(device)
                                       for a in (L - lengths[b] + within, row[b], start[b] + within))
        self.shape = (int(row.max()) + 1, L) if len(row) else (0, L)
        self.src_flat = src
        self.src = self.place(src, 0)  # (rows, L) each item's column in its padded window
        self.within = self.place(torch.from_numpy(within).to(device), 0)  # (rows, L)
        self.segments = self.place(torch.from_numpy(b + 1).to(device), 0)  # (rows, L)

    def place(self, values: torch.Tensor, fill: int) -> torch.Tensor:
        """(n_real,) values of the real items -> (rows, L), `fill` elsewhere."""
        out = torch.full(self.shape, fill, dtype=values.dtype, device=values.device)
        out[self.dst_row, self.dst] = values
        return out

    def gather(self, table: torch.Tensor, fill: int) -> torch.Tensor:
        """A (N_windows, L) table of padded windows, packed: (rows, L), `fill` where no item is."""
        return self.place(table[self.window, self.src_flat], fill)


def first_fit_decreasing(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin packing of lengths (each <= capacity), longest first, each into the first row with room.
    Returns (row, start) per length: its row and its first column there."""
    row = np.zeros(len(lengths), dtype=np.int64)
    start = np.zeros(len(lengths), dtype=np.int64)
    free = np.full(len(lengths), capacity, dtype=np.int64)  # never more rows than lengths
    for i in np.argsort(-lengths, kind="stable"):
        r = int(np.argmax(free >= lengths[i]))  # the first row with room: an open one, or the next fresh one
        row[i], start[i] = r, capacity - free[r]
        free[r] -= lengths[i]
    return row, start


class NextItemSamples:
    """(user, position) pairs of the training split: predict s[t] from s[:t], for t >= 1."""

    def __init__(self, split: Split):
        users, positions = [], []
        for u in range(len(split)):
            n = len(split.train_sequence(u))
            if n >= 2:
                users.append(np.full(n - 1, u, dtype=np.int64))
                positions.append(np.arange(1, n, dtype=np.int64))
        self.user = np.concatenate(users) if users else np.zeros(0, dtype=np.int64)
        self.position = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
        self.split = split

    def __len__(self) -> int:
        return len(self.user)

    def histories(self, indices: torch.Tensor) -> tuple[list[np.ndarray], np.ndarray]:
        """(histories, targets) of the chosen samples."""
        idx = indices.numpy()
        seqs = self.split.sequences
        histories = [seqs[u][:t] for u, t in zip(self.user[idx], self.position[idx])]
        targets = np.array([seqs[u][t] for u, t in zip(self.user[idx], self.position[idx])], dtype=np.int64)
        return histories, targets


class HistoryTokens:
    """Item-index histories -> encoder tokens (B, H, S): the last H items, right-aligned, PAD before."""

    def __init__(self, item_tokens: torch.Tensor, max_history: int):
        """item_tokens: (N_items, S) token ids of every item's input slots (mask tokens where missing)."""
        self.pad_item = item_tokens.shape[0]
        pad_row = torch.zeros(1, item_tokens.shape[1], dtype=torch.long)  # PAD == 0
        self.table = torch.cat([item_tokens, pad_row])  # (N+1, S)
        self.max_history = max_history

    def __call__(self, histories) -> torch.Tensor:
        from mscg.data.batching import left_pad

        index = left_pad(histories, self.max_history, pad=self.pad_item)  # (B, H)
        return self.table[index]  # (B, H, S)


class GeneratorSamples:
    """Training batches for the generator: masked multimodal histories, target codes, trie masks."""

    def __init__(self, split: Split, history_tokens: HistoryTokens, *, target_codes: torch.Tensor, trie,
                 slot_modality: torch.Tensor, mask_tokens: torch.Tensor, mask_prob: float):
        """target_codes: (N_items, D) decode-modality codes (-1 rows: item lacks the modality, never a target);
        slot_modality: (S,) modality index of each input slot; mask_tokens: (M,) mask token per modality."""
        self.samples = NextItemSamples(split)
        has_target = (target_codes >= 0).all(dim=1).numpy()
        keep = has_target[[split.sequences[u][t] for u, t in zip(self.samples.user, self.samples.position)]] \
            if len(self.samples) else np.zeros(0, dtype=bool)
        self.samples.user, self.samples.position = self.samples.user[keep], self.samples.position[keep]
        self.history_tokens = history_tokens
        self.target_codes = target_codes
        self.trie = trie
        self.slot_modality = slot_modality
        self.mask_tokens = mask_tokens
        self.mask_prob = mask_prob

    def __len__(self) -> int:
        return len(self.samples)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        histories, targets = self.samples.histories(indices)
        tokens = self.history_tokens(histories)  # (B, H, S)
        if self.mask_prob > 0:
            tokens = mask_modalities(tokens, self.slot_modality, self.mask_tokens, self.mask_prob)
        targets = torch.from_numpy(targets)
        return {"history": tokens, "target": self.target_codes[targets], "allowed": self.trie.allowed_along(targets),
                "item": targets}


class GeneratorWindows:
    """Window batches for the generator (`train --samples window`): each user's training sequence cut,
    from the end, into windows of `max_history` inputs whose every position predicts the next item, as
    SASRecWindows does, so that every training transition is a target exactly once per epoch.

    The tables live on `device` and a batch is a few gathers there (no Python per sample). A target
    without decode-modality codes, and every padding position, is not valid (no loss).
    """

    def __init__(self, split: Split, history_tokens: HistoryTokens, *, target_codes: torch.Tensor, trie,
                 slot_modality: torch.Tensor, mask_tokens: torch.Tensor, mask_prob: float,
                 device: torch.device = torch.device("cpu"), stride: int | None = None, pack: bool = False):
        windows = SASRecWindows(split, history_tokens.max_history, stride=stride)  # on the CPU: reshaped here
        self.lengths, self.max_history, self.pack = windows.lengths, history_tokens.max_history, pack
        pad_item = history_tokens.pad_item
        self.inputs = torch.where(windows.inputs > 0, windows.inputs - 1, pad_item).to(device)  # (N_w, L)
        targets = windows.targets  # (N_w, L), IGNORE where no target
        has_codes = (target_codes >= 0).all(dim=1)  # (N_items,)
        valid = (targets >= 0) & has_codes[targets.clamp(min=0)]
        self.targets = torch.where(valid, targets, -1).to(device)
        self.n_targets = int(valid.sum())
        self.table = history_tokens.table.to(device)  # (N_items + 1, S), the pad row last
        self.target_codes = target_codes.clamp(min=0).to(device)  # (N_items, D); invalid rows never used
        self.trie = trie.to(device)
        self.slot_modality = slot_modality.to(device)
        self.mask_tokens = mask_tokens.to(device)
        self.mask_prob = mask_prob
        self.device = device

    def __len__(self) -> int:
        return len(self.inputs)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        indices = indices.to(self.device)
        packed = {}
        if self.pack:
            p = PackedLayout(self.lengths, indices, self.max_history, self.device)
            inputs, targets = p.gather(self.inputs, len(self.table) - 1), p.gather(self.targets, -1)  # (rows, L)
            packed = {"positions": p.within, "segments": p.segments}
        else:
            inputs, targets = self.inputs[indices], self.targets[indices]  # (B, L)
        tokens = self.table[inputs]  # (B, L, S)
        if self.mask_prob > 0:
            tokens = mask_modalities(tokens, self.slot_modality, self.mask_tokens, self.mask_prob)
        items = targets.clamp(min=0)
        allowed = self.trie.allowed_along(items.reshape(-1))  # (B*L, D, W)
        return {"history": tokens, "target": self.target_codes[items], "valid": targets >= 0,
                "allowed": allowed.view(*targets.shape, *allowed.shape[1:]), "item": items, **packed}


def mask_modalities(tokens: torch.Tensor, slot_modality: torch.Tensor, mask_tokens: torch.Tensor,
                    prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace, with probability `prob` per (history item, modality), that modality's slots by its mask token.

    tokens: (B, H, S); padding items (all PAD) are left alone. Returns a new tensor.
    """
    B, H, _ = tokens.shape
    n_modalities = len(mask_tokens)
    drop = torch.rand(B, H, n_modalities, generator=generator, device=tokens.device) < prob  # (B, H, M)
    real = (tokens != 0).any(dim=2, keepdim=True)  # (B, H, 1)
    drop_slot = drop[:, :, slot_modality] & real  # (B, H, S)
    return torch.where(drop_slot, mask_tokens[slot_modality].expand_as(tokens), tokens)
