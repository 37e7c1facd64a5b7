"""The generator: constrained loss, trie, beam search (every result is a real item), incremental decoding."""

import itertools
import sys

import numpy as np
import pytest
import torch

from mscg.artifacts.codes import BOS, Vocabulary, collision_level
from mscg.data.samples import HistoryTokens, mask_modalities
from mscg.decoding.beam import IncrementalDecoder, beam_search
from mscg.decoding.trie import CodeTrie
from mscg.models.generator import Generator, GeneratorConfig
from tests.conftest import REPO

sys.path.insert(0, str(REPO))
from benchmarks._common import transformers_t5  # noqa: E402


def make_codes(n_items=60, sizes=(4, 3), seed=0):
    rng = np.random.default_rng(seed)
    base = np.stack([rng.integers(0, s, n_items) for s in sizes], axis=1)
    suffix, c = collision_level(base)
    return torch.from_numpy(np.concatenate([base, suffix[:, None]], axis=1)), list(sizes) + [c]


def make_model(constraint="trie", encoding="tokens", seed=0):
    collab, collab_sizes = make_codes(seed=seed)
    text, text_sizes = make_codes(seed=seed + 1, sizes=(5, 2))
    vocab = Vocabulary.build({"text": text_sizes, "collab": collab_sizes})
    config = GeneratorConfig(vocabulary=vocab.to_json(), modalities=["text", "collab"], decode_modality="collab",
                             max_history=5, d_model=32, n_layers=2, n_heads=2, d_ff=64, dropout=0.0,
                             constraint=constraint, history_encoding=encoding, samples="prefix")
    torch.manual_seed(seed)
    model = Generator(config).eval()
    codes = torch.cat([text, collab], dim=1)
    offsets = torch.tensor([s.offset for s in vocab.slots])
    tokens = codes + offsets
    return model, vocab, tokens, CodeTrie(collab, collab_sizes), collab


def test_trie_tables_match_the_codes():
    codes, sizes = make_codes()
    trie = CodeTrie(codes, sizes)
    for item, code in enumerate(codes.tolist()):
        node = 0
        for level, c in enumerate(code):
            node = int(trie.next_node[level][node, c])
            assert node >= 0
        assert node == item
    valid = {tuple(c) for c in codes.tolist()}
    for prefix in itertools.product(*[range(s) for s in sizes[:2]]):
        allowed = (trie.next_node[1][trie.next_node[0][0, prefix[0]]] >= 0
                   if trie.next_node[0][0, prefix[0]] >= 0 else None)
        if allowed is not None:
            assert bool(allowed[prefix[1]]) == any(v[:2] == prefix for v in valid)


def test_trie_skips_items_without_the_modality():
    codes, sizes = make_codes(n_items=10)
    codes[3] = -1
    trie = CodeTrie(codes, sizes)
    assert trie.item_count == 9
    assert not trie.allowed_along(torch.tensor([3])).any()


@pytest.mark.parametrize("constraint", ["trie", "level", "off"])
def test_constrained_loss_equals_brute_force_renormalised_cross_entropy(constraint):
    model, vocab, tokens, trie, collab = make_model(constraint)
    history = tokens[torch.randint(0, 60, (6, 5))]
    targets = torch.randint(0, 60, (6,))
    allowed = trie.allowed_along(targets)
    loss = model(history, collab[targets], allowed)
    # brute force: full-vocabulary logits from transformers' T5 on the same weights, renormalised over the
    # permitted set of each step
    states, mask = model.encode(history)
    slots = vocab.slots_of("collab")
    target_tokens = torch.stack([collab[targets][:, j] + slots[j].offset for j in range(len(slots))], dim=1)
    decoder_input = torch.cat([torch.full((6, 1), BOS), target_tokens[:, :-1]], dim=1)
    out = transformers_t5(model)(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=decoder_input)
    logits = out.logits  # (B, D, V)
    expected = []
    for b in range(6):
        for j, slot in enumerate(slots):
            if constraint == "off":
                permitted = torch.arange(vocab.size)
            elif constraint == "level":
                permitted = torch.arange(slot.offset, slot.offset + slot.size)
            else:
                permitted = slot.offset + allowed[b, j, : slot.size].nonzero().flatten()
            assert target_tokens[b, j] in permitted
            expected.append(-(logits[b, j, target_tokens[b, j]] - logits[b, j, permitted].logsumexp(0)))
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-5)


def test_trie_training_puts_no_probability_on_invalid_continuations():
    model, vocab, tokens, trie, collab = make_model("trie")
    history = tokens[torch.randint(0, 60, (8, 5))]
    targets = torch.randint(0, 60, (8,))
    allowed = trie.allowed_along(targets)
    states, mask = model.encode(history)
    hidden = model.decode(torch.full((8, 1), BOS), states, mask)[:, 0]
    logp = model.level_log_probs(hidden, 0, allowed[:, 0, : model.level_sizes[0]])
    assert torch.isinf(logp[~allowed[:, 0, : model.level_sizes[0]]]).all()
    assert torch.allclose(logp.exp().sum(dim=1), torch.ones(8), atol=1e-5)


@pytest.mark.parametrize("encoding", ["tokens", "items"])
def test_incremental_decoder_matches_the_full_t5_decoder(encoding):
    model, vocab, tokens, trie, collab = make_model(encoding=encoding)
    history = tokens[torch.randint(0, 60, (3, 5))]
    history[0, :2] = 0  # a short history
    states, mask = model.encode(history)
    K = 4
    seq = torch.randint(4, vocab.size, (3, K, 3))
    seq[:, :, 0] = BOS
    decoder = IncrementalDecoder(model, states, mask)
    for t in range(3):
        step = decoder.step(seq[:, :, t])  # (3, K, C)
        full = model.decode(seq[:, :, : t + 1].reshape(3 * K, t + 1), states.repeat_interleave(K, 0),
                            mask.repeat_interleave(K, 0))[:, -1].view(3, K, -1)
        assert torch.allclose(step, full, atol=1e-5)


@pytest.mark.parametrize("constraint,samples", [("trie", "prefix"), ("level", "prefix"), ("off", "prefix"),
                                                ("trie", "window"), ("off", "window")])
@torch.no_grad()  # values only: no autograd graph (and no warning on float() of a graph tensor)
def test_beam_search_returns_only_real_items_sorted_by_exact_log_probability(constraint, samples):
    if samples == "window":
        model, tokens, trie, collab = window_model(constraint)
    else:
        model, vocab, tokens, trie, collab = make_model(constraint)
    history = tokens[torch.randint(0, 60, (4, 5))]
    items, scores = beam_search(model, history, trie, beam_size=10)
    assert items.shape == (4, 10)
    assert ((items >= 0) & (items < 60)).all()
    assert all(len(set(row)) == len(row) for row in items.tolist())
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    # the score is the model's log-probability of the item's full code, step by step
    states, mask = model.encode(history)
    for b in range(4):
        for item, score in zip(items[b, :3].tolist(), scores[b, :3].tolist()):
            code = collab[item]
            total, node = 0.0, 0
            prefix = torch.tensor([[BOS]])
            for j in range(len(code)):
                hidden = model.decode(prefix, states[b:b + 1], mask[b:b + 1])[:, -1]
                allowed = trie.next_node[j][node][None] >= 0
                total += float(model.level_log_probs(hidden, j, allowed)[0, code[j]])
                node = int(trie.next_node[j][node, code[j]])
                prefix = torch.cat([prefix, model.level_token[j][code[j]].view(1, 1)], dim=1)
            assert abs(total - score) < 1e-4
    # and the teacher-forced scoring of the same items gives the same numbers in one pass
    top = items[:, :3].reshape(-1)  # (12,)
    exact = model.item_log_probs(history.repeat_interleave(3, 0), collab[top].long(),
                                 trie.allowed_along(top))
    assert torch.allclose(exact, scores[:, :3].reshape(-1), atol=1e-4)


def test_beam_search_exhaustive_beam_ranks_every_item_like_brute_force():
    model, vocab, tokens, trie, collab = make_model("trie")
    history = tokens[torch.randint(0, 60, (1, 5))]
    items, scores = beam_search(model, history, trie, beam_size=60)
    assert sorted(items[0].tolist()) == list(range(60))


def test_beam_larger_than_catalogue_pads_with_minus_one():
    model, vocab, tokens, trie, collab = make_model("trie")
    items, scores = beam_search(model, tokens[torch.randint(0, 60, (2, 5))], trie, beam_size=70)
    assert (items[:, 60:] == -1).all() and torch.isinf(scores[:, 60:]).all()
    assert ((items[:, :60] >= 0)).all()


def test_modality_masking_keeps_shapes_and_touches_only_the_chosen_modality():
    tokens = torch.randint(10, 50, (64, 5, 6))
    tokens[0, :2] = 0  # padding items stay padding
    slot_modality = torch.tensor([0, 0, 0, 1, 1, 1])
    mask_tokens = torch.tensor([2, 3])
    out = mask_modalities(tokens, slot_modality, mask_tokens, prob=0.5, generator=torch.Generator().manual_seed(0))
    assert out.shape == tokens.shape
    assert (out[0, :2] == 0).all()
    changed = out != tokens
    assert changed.any()
    # a changed slot holds its modality's mask token, and a modality is masked as a whole
    assert (out[..., :3][changed[..., :3]] == 2).all() and (out[..., 3:][changed[..., 3:]] == 3).all()
    assert (changed[..., :3].all(-1) == changed[..., :3].any(-1)).all()
    assert (changed[..., 3:].all(-1) == changed[..., 3:].any(-1)).all()
    none = mask_modalities(tokens, slot_modality, mask_tokens, prob=0.0)
    assert torch.equal(none, tokens)


def test_history_tokens_right_align_and_pad():
    table = torch.arange(12).view(4, 3) + 10
    ht = HistoryTokens(table, max_history=3)
    out = ht([np.array([0, 1, 2, 3]), np.array([2])])
    assert out[0].tolist() == [[13, 14, 15], [16, 17, 18], [19, 20, 21]]
    assert out[1].tolist() == [[0, 0, 0], [0, 0, 0], [16, 17, 18]]


# ---- every target of a window in one pass (`samples="window"`) ----------------------------------------------

def window_model(constraint="trie", seed=0, dual_positions=True):
    model, vocab, tokens, trie, collab = make_model(constraint, encoding="items", seed=seed)
    config = GeneratorConfig.from_json({**model.config.to_json(), "samples": "window",
                                        "dual_positions": dual_positions})
    torch.manual_seed(seed)
    return Generator(config).eval(), tokens, trie, collab


def window_batch(tokens, trie, collab, seed=0):
    """4 left-padded windows of 5 positions (one shorter row, one target without codes) as GeneratorWindows
    builds them: history tokens, next-item codes, trie masks and validity per position."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(0, 60, (4, 6), generator=g)  # 5 inputs + the item after the last one
    items[1, :2] = -1  # a short user: two padding positions on the left
    pad_row = torch.zeros(1, tokens.shape[1], dtype=torch.long)
    table = torch.cat([tokens, pad_row])
    inputs, targets = items[:, :-1], items[:, 1:].clone()
    targets[1, 0] = -1  # the first real input of row 1 has its target padded away too
    valid = (targets >= 0) & (inputs >= 0)
    valid[2, 3] = False  # a target that lacks decode codes
    history = table[torch.where(inputs >= 0, inputs, len(tokens))]  # (4, 5, S)
    allowed = trie.allowed_along(targets.clamp(min=0).reshape(-1)).view(4, 5, *trie.allowed_along(
        torch.tensor([0])).shape[1:])
    return history, collab[targets.clamp(min=0)], allowed, valid


@pytest.mark.parametrize("constraint", ["trie", "off"])
def test_window_loss_is_the_mean_of_the_prefix_losses_of_the_same_targets(constraint):
    """One pass over a window == a brute-force loop that feeds each target's own prefix to the same causal
    model (the prefix path: the whole decoder over each prefix's encoder states)."""
    model, tokens, trie, collab = window_model(constraint)
    history, target, allowed, valid = window_batch(tokens, trie, collab)
    one_pass = model(history, target, allowed, valid)
    losses = []
    for b, t in valid.nonzero().tolist():
        prefix = history[b:b + 1, :t + 1]  # (1, t+1, S): the window up to position t, right-aligned
        losses.append(model(prefix, target[b:b + 1, t], allowed[b:b + 1, t]))
    assert torch.allclose(one_pass, torch.stack(losses).mean(), atol=1e-5)


@pytest.mark.parametrize("stride,dual_positions", [(None, True), (2, True), (None, False)])
def test_packed_windows_give_the_padded_loss(tmp_path, stride, dual_positions):
    """GeneratorWindows with `pack`: a batch's windows share rows (segments, positions per window), the same
    targets, the same loss as the padded batch; far fewer encoder positions."""
    from mscg.data.samples import GeneratorWindows
    from mscg.data.split import load_dataset
    from tests.conftest import synthetic_dataset

    split = load_dataset(synthetic_dataset(tmp_path, n_items=40, n_users=30)).split
    model, tokens, trie, collab = window_model(dual_positions=dual_positions)
    parts = dict(target_codes=collab, trie=trie, slot_modality=model.slot_modality,
                 mask_tokens=torch.zeros(2, dtype=torch.long), mask_prob=0.0, stride=stride)
    history_tokens = HistoryTokens(tokens, max_history=5)
    padded = GeneratorWindows(split, history_tokens, **parts)
    packed = GeneratorWindows(split, history_tokens, **parts, pack=True)
    rows = 0
    for indices in torch.randperm(len(padded), generator=torch.Generator().manual_seed(0)).split(12):
        a, b = padded.batch(indices), packed.batch(indices)
        assert torch.equal(a["item"][a["valid"]].sort().values, b["item"][b["valid"]].sort().values)
        assert torch.allclose(model(**a), model(**b), atol=1e-5)
        rows += b["history"].shape[0]
    assert rows < len(padded)  # short windows share rows


def test_no_window_target_sees_a_later_item():
    """Changing items t+1.. of a window leaves the decoder states (and so the logits) of target t unchanged."""
    from mscg.models.t5_passes import decoder_pass

    model, tokens, trie, collab = window_model()
    history, target, _, _ = window_batch(tokens, trie, collab)
    states = model.causal_states(history)
    changed = history.clone()
    changed[:, 3:] = tokens[torch.randint(0, 60, (4, 2))]
    changed_states = model.causal_states(changed)
    assert torch.allclose(states[:, :3], changed_states[:, :3], atol=1e-6)
    assert not torch.allclose(states[:, 3:], changed_states[:, 3:], atol=1e-3)
    dec_input = model.level_token.gather(1, target.reshape(-1, target.shape[-1]).T).T  # (20, D): 4 users x 5
    user, position = torch.arange(4).repeat_interleave(5), torch.arange(5).repeat(4)
    sees = torch.arange(5)[None] <= position[:, None]  # (20, 5)
    hidden = decoder_pass(model.t5, dec_input, states, user, sees).view(4, 5, *dec_input.shape[1:], -1)
    changed_hidden = decoder_pass(model.t5, dec_input, changed_states, user, sees).view(hidden.shape)
    assert torch.allclose(hidden[:, :3], changed_hidden[:, :3], atol=1e-6)
    assert not torch.allclose(hidden[:, 3:], changed_hidden[:, 3:], atol=1e-3)


def test_a_window_model_recommends_from_the_whole_history():
    """At inference a window model reads the whole history causally; its last position sees every item, and
    beam search returns real items."""
    model, tokens, trie, collab = window_model()
    history = tokens[torch.randint(0, 60, (3, 5), generator=torch.Generator().manual_seed(3))]
    items, scores = beam_search(model, history, trie, beam_size=10)
    assert bool((items >= 0).all()) and bool((scores[:, :-1] >= scores[:, 1:]).all())
    states, mask = model.encode(history)
    assert torch.allclose(states, model.causal_states(history)) and bool(mask.all())


@pytest.mark.parametrize("constraint", ["trie", "off"])
@torch.no_grad()  # values only: no autograd graph (and no warning on float() of a graph tensor)
def test_label_smoothing_spreads_its_share_over_the_permitted_tokens(constraint):
    model, vocab, tokens, trie, collab = make_model(constraint)
    history = tokens[torch.randint(0, 60, (6, 5), generator=torch.Generator().manual_seed(4))]
    targets = torch.randint(0, 60, (6,), generator=torch.Generator().manual_seed(5))
    allowed = trie.allowed_along(targets)
    plain = model(history, collab[targets], allowed)
    smoothed = Generator(GeneratorConfig.from_json({**model.config.to_json(), "label_smoothing": 0.2}))
    smoothed.load_state_dict(model.state_dict())
    smoothed.eval()
    # brute force: the permitted tokens of each step, their log-probabilities, the uniform share of each
    states, mask = model.encode(history)
    target_tokens = model.level_token.gather(1, collab[targets].T).T
    decoder_input = torch.cat([torch.full((6, 1), BOS), target_tokens[:, :-1]], dim=1)
    hidden = model.decode(decoder_input, states, mask)
    total = 0.0
    for b in range(6):
        for j in range(hidden.shape[1]):
            size = model.level_sizes[j]
            logits = model.level_logits(hidden[b, j][None], j)[0]
            if constraint == "off":
                full = (hidden[b, j] @ model.t5.lm_head.weight.T).float()
                logp_target = logits[collab[targets][b, j]] - full.logsumexp(0)
                uniform = -(full - full.logsumexp(0)).mean()
            else:
                ok = allowed[b, j, :size]
                logp = logits.masked_fill(~ok, float("-inf")).log_softmax(0)
                logp_target, uniform = logp[collab[targets][b, j]], -logp[ok].mean()
            total += 0.8 * -float(logp_target) + 0.2 * float(uniform)
    assert abs(float(smoothed(history, collab[targets], allowed)) - total / (6 * hidden.shape[1])) < 1e-4
    assert float(smoothed(history, collab[targets], allowed)) != pytest.approx(float(plain))


def dense_window_model(negatives=4096, seed=0):
    """A window model with a dense head over random (60, 6) content features, and the same model without it."""
    plain, tokens, trie, collab = window_model(seed=seed)
    config = GeneratorConfig.from_json({**plain.config.to_json(), "dense_content_dim": 6,
                                        "dense_negatives": negatives})
    torch.manual_seed(seed)
    model = Generator(config).eval()  # the head's layers come last: every other weight equals plain's
    model.item_content = torch.randn(60, 6, generator=torch.Generator().manual_seed(seed + 1))
    return model, plain, tokens, trie, collab


def test_the_dense_loss_is_the_cross_entropy_of_the_dense_scores_used_at_inference():
    """Training's dense term (window path) == brute force over each target's own prefix of -log softmax of
    `dense_scores`, the logits recommendation and fusion use: the head is trained on the scores it serves."""
    model, plain, tokens, trie, collab = dense_window_model()
    history, target, allowed, valid = window_batch(tokens, trie, collab)
    items = torch.randint(0, 60, valid.shape, generator=torch.Generator().manual_seed(5))
    dense_term = model(history, target, allowed, valid, items) - plain(history, target, allowed, valid)
    model.item_key_table = model.item_keys(model.item_content)
    losses = [-model.dense_scores(history[b:b + 1, :t + 1]).log_softmax(dim=1)[0, items[b, t]]
              for b, t in valid.nonzero().tolist()]
    assert torch.allclose(dense_term, torch.stack(losses).mean(), atol=1e-4)


def test_the_dense_loss_over_sampled_negatives_trains_the_head():
    model, _, tokens, trie, collab = dense_window_model(negatives=8)
    history, target, allowed, valid = window_batch(tokens, trie, collab)
    items = torch.randint(0, 60, valid.shape, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    loss = model.train()(history, target, allowed, valid, items)
    loss.backward()
    assert torch.isfinite(loss) and model.dense_key.weight.grad.abs().sum() > 0
    assert model.dense_query.weight.grad.abs().sum() > 0


def test_a_config_written_before_samples_existed_loads_as_the_per_prefix_model_it_was():
    model, *_ = make_model()
    written = {k: v for k, v in model.config.to_json().items() if k != "samples"}
    assert GeneratorConfig.from_json(written).samples == "prefix"
    assert GeneratorConfig().samples == "window"  # while a new model's default is the window path
    assert GeneratorConfig.from_json({**written, "samples": "window"}).samples == "window"
