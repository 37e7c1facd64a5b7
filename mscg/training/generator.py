"""Training the MSCGRec generator (`mscg train`): the constrained cross-entropy of the next item's codes,
early stopping on validation NDCG@10 of trie-constrained beam search. A sample is one training prefix
(`samples="prefix"`, the paper's model) or one window of a user's training sequence whose every position
is a target (`samples="window"`); either way every training transition is a target once per epoch."""

from __future__ import annotations

from collections.abc import Generator as GeneratorType
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mscg.artifacts.codes import Codes
from mscg.data.samples import GeneratorSamples, GeneratorWindows
from mscg.data.split import Dataset
from mscg.decoding.trie import CodeTrie
from mscg.errors import DataError
from mscg.recommenders.defaults import DEFAULT_BEAM_SIZE
from mscg.recommenders.generator import GeneratorRecommender, generator_parts
from mscg.models.generator import Generator, GeneratorConfig
from mscg.popularity import train_counts
from mscg.training import distributed as dist
from mscg.evaluation import validation_users
from mscg.training.defaults import DEFAULT_VALID_USERS
from mscg.training.defaults import GENERATOR_LOOP as GENERATOR_LOOP  # its home before defaults.py
from mscg.training.loop import Event, LoopConfig, LoopResult, train_loop, with_model
from mscg.training.validation import popularity_thirds, validation_sums


def default_window_stride(max_history: int) -> int:
    """Windows start every max_history / 2 items: each target sees at least half a window of history."""
    return max(1, max_history // 2)


def windows_per_step(batch_size: int, n_windows: int, n_targets: int) -> int:
    """Windows per step so that a step holds about `batch_size` targets, as a prefix step does (a window
    holds up to max_history targets: on long histories ~20, on short ones a few)."""
    return max(1, round(batch_size * n_windows / max(n_targets, 1)))


def fit_generator(config: GeneratorConfig, loop: LoopConfig, codes: Codes, ds: Dataset, *, device: torch.device,
                  valid_users: int = DEFAULT_VALID_USERS, beam_size: int = DEFAULT_BEAM_SIZE,
                  window_stride: int | None = None, pack: bool = True, item_content: torch.Tensor | None = None,
                  checkpoint_dir: Path | None = None, resume: bool = False, fingerprint: dict[str, Any] | None = None,
                  ) -> GeneratorType[Event, None, tuple[Generator, LoopResult]]:
    """Train the generator on the training prefixes of `ds` over the codes of its catalogue.

    Yields an "info" event (samples, targets, parameters), then the loop's events; returns (the model with
    its best validated weights, the loop's result, whose `targets_per_second` counts training targets).
    A model with a dense head (`config.dense_content_dim`) reads `item_content` (N, F), the catalogue's content
    features, in training (its softmax over the items with training interactions), and is returned with its
    item keys (`item_key_table`) computed from them.
    """
    torch.manual_seed(loop.seed)
    model = Generator(config)
    counts = train_counts(ds.split, len(ds.catalogue))  # (N,) training interactions per item
    if config.dense_content_dim:
        if item_content is None or tuple(item_content.shape) != (len(ds.catalogue), config.dense_content_dim):
            raise ValueError("a dense head needs item_content of shape (items, dense_content_dim)")
        model.item_content = item_content.float().to(device)
        model.dense_pool = torch.from_numpy(np.flatnonzero(counts > 0)).to(device)
    history_tokens, target_codes, trie = generator_parts(codes, config)
    if config.train_trie == "trained":  # the loss's constraint over items with training interactions only
        unseen = torch.from_numpy(counts == 0)
        trie = CodeTrie(target_codes.masked_fill(unseen[:, None], -1), trie.sizes)
    vocab = codes.vocab
    parts = dict(target_codes=target_codes, trie=trie, slot_modality=model.slot_modality,
                 mask_tokens=torch.tensor([vocab.mask_token(m) for m in config.modalities]),
                 mask_prob=config.modality_mask_prob)
    if config.samples == "window":  # batches are gathers on the training device
        stride = window_stride or default_window_stride(config.max_history)
        samples = GeneratorWindows(ds.split, history_tokens, **parts, device=device, stride=stride, pack=pack)
        n_targets = samples.n_targets
        loop = replace(loop, batch_size=windows_per_step(loop.batch_size, len(samples), n_targets))
    else:
        samples = GeneratorSamples(ds.split, history_tokens, **parts)
        n_targets = len(samples)
    if n_targets == 0:
        raise DataError(f"no training sample has a target with {config.decode_modality} codes; check --decode and "
                        "the codes")
    recommender = GeneratorRecommender(model, codes, device, beam_size)
    chosen = validation_users(len(ds.split), valid_users, loop.seed)
    mine = chosen[list(dist.shard(len(chosen)))]
    thirds = popularity_thirds(ds.split, chosen, len(ds.catalogue))

    def validate(core: Generator) -> dict[str, float]:
        recommender.model = core
        return validation_sums(recommender, ds.split, mine, batch_size=256, thirds=thirds)

    n_params = sum(p.numel() for p in model.parameters())
    yield Event("info", info={"samples": len(samples), "targets": n_targets, "parameters": n_params,
                              "valid_users": len(chosen), "samples_per_step": loop.batch_size})
    events = train_loop(model, samples, loop, device=device, validate=validate, checkpoint_dir=checkpoint_dir,
                        resume=resume, fingerprint={"model": config.to_json(), **(fingerprint or {}),
                                                    "valid_users": valid_users, "beam_size": beam_size,
                                                    "window_stride": window_stride})
    model, result = yield from with_model(events, model)
    if config.dense_content_dim:
        model.item_key_table = item_key_table(model, item_content.float())
        model.item_content = model.dense_pool = None
    result.targets_per_second = result.samples_per_second * n_targets / max(len(samples), 1)
    return model, result


@torch.no_grad()
def item_key_table(model: Generator, content: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """(N, F) content features -> (N, C) the dense head's unit-norm item keys (on the CPU), a chunk at a time."""
    device = next(model.parameters()).device
    return torch.cat([model.item_keys(content[i:i + chunk].to(device)).cpu() for i in range(0, len(content), chunk)])
