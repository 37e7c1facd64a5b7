"""mscg's vectorised beam search against the reference: HF `generate(num_beams, prefix_allowed_tokens_fn)`
on the same T5 weights; and the trie's two layouts (dense tables, CSR) give the same search."""

import sys

import numpy as np
import pytest
import torch

from mscg.artifacts.codes import Vocabulary, collision_level
from mscg.decoding import beam as beam_module
from mscg.decoding.beam import IncrementalDecoder, beam_search, top_width
from mscg.decoding.trie import CodeTrie
from mscg.models.generator import Generator, GeneratorConfig
from tests.conftest import REPO

sys.path.insert(0, str(REPO))
from benchmarks._common import agreement, hf_beam_search, prefix_table, quiet_transformers  # noqa: E402


def make_model(constraint="off", n_items=120, seed=0, collab_sizes=(8, 5)):
    rng = np.random.default_rng(seed)

    def codes(sizes):
        base = np.stack([rng.integers(0, s, n_items) for s in sizes], axis=1)
        suffix, c = collision_level(base)
        return torch.from_numpy(np.concatenate([base, suffix[:, None]], axis=1)), list(sizes) + [c]

    text, text_sizes = codes((6, 4))
    collab, collab_sizes = codes(collab_sizes)
    vocab = Vocabulary.build({"text": text_sizes, "collab": collab_sizes})
    config = GeneratorConfig(vocabulary=vocab.to_json(), modalities=["text", "collab"], decode_modality="collab",
                             max_history=5, d_model=32, n_layers=2, n_heads=2, d_ff=64, dropout=0.0,
                             constraint=constraint, history_encoding="items", samples="prefix")
    torch.manual_seed(seed)
    model = Generator(config).eval()
    tokens = torch.cat([text, collab], dim=1) + torch.tensor([s.offset for s in vocab.slots])
    return model, tokens, collab, collab_sizes


@pytest.mark.parametrize("beam", [5, 12])
def test_beam_search_agrees_with_hf_generate_and_a_trie_prefix_function(beam):
    quiet_transformers()
    model, tokens, collab, sizes = make_model("off")
    trie = CodeTrie(collab, sizes)
    history = tokens[torch.randint(0, 120, (6, 5), generator=torch.Generator().manual_seed(1))]
    history[0, :3] = 0  # a short history
    items, scores = beam_search(model, history, trie, beam)
    hf_items, hf_scores = hf_beam_search(model, history, trie, beam)
    assert ((hf_items >= 0) & (hf_items < 120)).all()
    assert torch.equal(items, hf_items)
    assert torch.allclose(scores, hf_scores, atol=1e-4)
    assert agreement(items, hf_items, beam) == {"identical_lists": 1.0, "identical_sets": 1.0, "overlap": 1.0}


def test_prefix_table_lists_exactly_the_valid_continuations():
    model, tokens, collab, sizes = make_model()
    trie = CodeTrie(collab, sizes)
    table = prefix_table(model, trie)
    offsets = model.level_offsets
    full = {tuple(int(c) + o for c, o in zip(code, offsets)) for code in collab.tolist()}
    for prefix, allowed in table.items():
        assert allowed == sorted({code[len(prefix)] for code in full if code[: len(prefix)] == prefix})
    assert sum(1 for p in table if len(p) == trie.depth - 1) == len({c[:-1] for c in full})


@pytest.mark.parametrize("constraint", ["trie", "off"])
def test_dense_and_csr_tries_give_the_same_search(constraint):
    model, tokens, collab, sizes = make_model(constraint)
    dense, csr = CodeTrie(collab, sizes), CodeTrie(collab, sizes, dense_max_bytes=0, dense_ratio=0)
    assert all(dense.layout(j) == "dense" for j in range(dense.depth))
    assert all(csr.layout(j) == "csr" for j in range(csr.depth))
    for j in range(dense.depth):
        nodes = torch.arange(-1, dense.n_nodes[j]).view(-1, 1).repeat(1, 2)  # includes "no node"
        assert torch.equal(dense.children(j, nodes), csr.children(j, nodes))
        assert torch.equal(dense.children(j, nodes, as_long=False), csr.children(j, nodes, as_long=False))
    assert torch.equal(dense.allowed_along(torch.arange(120)), csr.allowed_along(torch.arange(120)))
    history = tokens[torch.randint(0, 120, (4, 5), generator=torch.Generator().manual_seed(2))]
    a, b = beam_search(model, history, dense, 10), beam_search(model, history, csr, 10)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_a_sparse_collision_level_is_stored_as_csr():
    # 2,000 items on 1,001 distinct codes, one of them shared by 1,000 items: a dense collision level
    # would hold 1,001 x 1,000 entries for 2,000 edges.
    codes = np.stack([np.arange(2000) % 1001, np.zeros(2000, dtype=np.int64)], axis=1)
    codes[1001:, 0] = 0
    suffix, c = collision_level(codes[:, :1])
    full = torch.from_numpy(np.concatenate([codes[:, :1], suffix[:, None]], axis=1))
    trie = CodeTrie(full, [1001, c], dense_max_bytes=2**20)
    assert c == 1000 and trie.layout(0) == "dense" and trie.layout(1) == "csr"
    assert trie.memory_bytes() < 1001 * 1000 * 4 / 10
    node = trie.children(0, torch.tensor([0]))[0, full[:, 0]]  # every item's depth-1 node
    assert torch.equal(trie.children(1, node).gather(1, full[:, 1:]).view(-1), torch.arange(2000))


def test_top_width_is_the_head_of_a_stable_descending_sort():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        m = int(torch.randint(2, 60, (1,), generator=g))
        c = torch.randint(-3, 3, (5, m), generator=g).float()  # many ties
        c[torch.rand(5, m, generator=g) < 0.2] = float("-inf")
        width = int(torch.randint(1, m + 1, (1,), generator=g))
        values, index = top_width(c, width)
        expected_values, expected_index = torch.sort(c, dim=1, descending=True, stable=True)
        assert torch.equal(index, expected_index[:, :width]) and torch.equal(values, expected_values[:, :width])


def test_last_level_runs_the_decoder_only_where_a_prefix_has_several_items(monkeypatch):
    # 120 items on 16 x 16 prefixes: most last-level nodes hold one item (log-probability exactly 0)
    model, tokens, collab, sizes = make_model("trie", collab_sizes=(16, 16))
    trie = CodeTrie(collab, sizes)
    history = tokens[torch.randint(0, 120, (5, 5), generator=torch.Generator().manual_seed(3))]
    calls = []
    step = IncrementalDecoder.step

    def spy(self, tokens, rows=None):
        calls.append(None if rows is None else len(rows))
        return step(self, tokens, rows)

    monkeypatch.setattr(IncrementalDecoder, "step", spy)
    items, scores = beam_search(model, history, trie, 20)
    assert len(calls) == trie.depth and calls[:-1] == [None] * (trie.depth - 1)
    assert calls[-1] is not None and 0 < calls[-1] <= 5 * 20 // 4  # a few beams of the 5 x 20
    # the reference: the last level through the full batched step
    monkeypatch.setattr(beam_module, "last_level_log_probs", lambda model, decoder, tokens, allowed, level:
                        model.level_log_probs(decoder.step(tokens).reshape(-1, model.config.d_model), level,
                                              allowed.reshape(-1, allowed.shape[-1])))
    ref_items, ref_scores = beam_search(model, history, trie, 20)
    assert torch.equal(items, ref_items)
    assert torch.allclose(scores, ref_scores, atol=1e-5)


@pytest.mark.parametrize("constraint", ["trie", "off"])
def test_excluded_items_take_no_beam_and_keep_their_scores(constraint):
    """With every item searched (beam = catalogue), banning some leaves exactly the unrestricted list less
    them, scores unchanged; with a narrow beam, no excluded item comes back and the beam is still full."""
    model, tokens, collab, sizes = make_model(constraint)
    trie = CodeTrie(collab, sizes)
    history = tokens[torch.randint(0, 120, (4, 5), generator=torch.Generator().manual_seed(2))]
    everything, all_scores = beam_search(model, history, trie, 120)
    excluded = torch.zeros(4, 120, dtype=torch.bool)
    excluded[torch.arange(4)[:, None], everything[:, :30:2]] = True  # every other of each user's top 30
    items, scores = beam_search(model, history, trie, 120, excluded=excluded)
    for row in range(4):
        kept = ~excluded[row, everything[row]]
        assert torch.equal(items[row, :int(kept.sum())], everything[row][kept])
        assert torch.allclose(scores[row, :int(kept.sum())], all_scores[row][kept], atol=1e-5)
    narrow, _ = beam_search(model, history, trie, 10, excluded=excluded)
    assert (narrow >= 0).all() and not excluded.gather(1, narrow).any()


@pytest.mark.parametrize("constraint", ["off", "trie"])
def test_nan_scores_are_the_worst_not_the_best(constraint):
    """A model whose log-probabilities are NaN (weights broken by a diverged run) gets no item from the search:
    a NaN candidate never outranks a real one (top-k takes NaN as the largest value), and the search still
    returns (B, beam) with -1 where no item has a score."""
    model, tokens, collab, sizes = make_model(constraint)
    trie = CodeTrie(collab, sizes)
    history = tokens[torch.randint(0, 120, (4, 5), generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    items, scores = beam_search(model, history, trie, 6)
    assert items.shape == (4, 6) and (items == -1).all() and not scores.isnan().any()
