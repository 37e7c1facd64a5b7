import torch

from mscg.models.sasrec import SASRec, SASRecConfig


def test_shapes_and_loss_decreases():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=30, max_history=8, d_model=16, n_layers=1, n_heads=2, dropout=0.0))
    history = torch.randint(1, 31, (4, 8))
    history[0, :3] = 0  # left padding
    targets = torch.randint(0, 30, (4, 8))
    targets[0, :3] = -100
    assert model.hidden(history).shape == (4, 8, 16)
    assert model.score(history).shape == (4, 30)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model(history, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_attention_is_causal_and_ignores_padding():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=30, max_history=6, d_model=16, n_layers=2, n_heads=2, dropout=0.0)).eval()
    a = torch.tensor([[0, 0, 3, 4, 5, 6]])
    b = torch.tensor([[0, 0, 3, 4, 5, 9]])  # differs only in the last item
    ha, hb = model.hidden(a), model.hidden(b)
    assert torch.allclose(ha[:, :5], hb[:, :5], atol=1e-6)
    assert not torch.allclose(ha[:, 5], hb[:, 5])
    assert torch.isfinite(ha).all()


def test_init_item_table_takes_known_rows_at_the_random_init_scale():
    from mscg.models.sasrec import INIT_STD

    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=6, max_history=4, d_model=8, n_layers=1, n_heads=2, dropout=0.0))
    before = model.item_table().detach().clone()
    vectors = torch.randn(6, 8) * 5.0
    known = torch.tensor([True, True, False, True, True, False])
    model.init_item_table(vectors, known)
    table = model.item_table().detach()
    assert torch.equal(table[~known], before[~known])  # unknown items keep their random start
    scale = INIT_STD / vectors[known].pow(2).mean().sqrt()
    assert torch.allclose(table[known], vectors[known] * scale)
    assert torch.allclose(table[known].pow(2).mean().sqrt(), torch.tensor(INIT_STD))
    assert torch.equal(model.item_emb.weight[0], torch.zeros(8))  # padding row untouched




def test_sampled_softmax_over_every_item_is_full_softmax():
    import math

    import torch.nn.functional as F

    from mscg.models.sasrec import sampled_softmax_loss

    torch.manual_seed(0)
    n, n_items = 12, 30
    h, table = torch.randn(n, 8), torch.randn(n_items, 8)
    targets = torch.randint(0, n_items, (n,))
    full = F.cross_entropy(h @ table.T, targets)
    every = torch.arange(n_items)  # each row's target among them too: it must be masked, or it counts twice
    assert torch.allclose(sampled_softmax_loss(h, targets, table, every), full, atol=1e-6)
    uniform = torch.full((n_items,), -math.log(n_items))  # q uniform, given: log(N q) = 0
    assert torch.allclose(sampled_softmax_loss(h, targets, table, every, uniform), full, atol=1e-6)
    # logQ: every negative's logit less log(N q); the target's stays
    log_q = torch.log_softmax(torch.randn(n_items), dim=0)
    logits = h @ table.T - (math.log(n_items) + log_q)
    rows = torch.arange(n)
    logits[rows, targets] = (h @ table.T)[rows, targets]
    corrected = F.cross_entropy(logits, targets)
    assert torch.allclose(sampled_softmax_loss(h, targets, table, every, log_q), corrected, atol=1e-6)
    # fewer uniform negatives: each stands for n_items / N items
    some = torch.arange(0, n_items, 3)
    negative = h @ table[some].T + math.log(n_items / len(some))
    negative[some[None, :] == targets[:, None]] = float("-inf")
    logits = torch.cat([(h * table[targets]).sum(dim=1, keepdim=True), negative], dim=1)
    expected = F.cross_entropy(logits, torch.zeros_like(targets))
    assert torch.allclose(sampled_softmax_loss(h, targets, table, some), expected, atol=1e-6)
    # a row whose only negatives are its own target has nothing to tell apart: loss 0
    alone = sampled_softmax_loss(h[:1], targets[:1], table, targets[:1].repeat(5))
    assert float(alone) == 0.0


def test_forward_with_every_item_as_negative_is_the_full_softmax_loss():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=30, max_history=8, d_model=16, n_layers=1, n_heads=2, dropout=0.0)).eval()
    history = torch.randint(1, 31, (4, 8))
    history[0, :3] = 0
    targets = torch.randint(0, 30, (4, 8))
    targets[0, :3] = -100
    full = model(history, targets)
    assert torch.allclose(model(history, targets, negatives=torch.arange(30)), full, atol=1e-6)


def test_positions_count_from_the_right_so_trimmed_padding_changes_nothing():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=30, max_history=8, d_model=16, n_layers=2, n_heads=2, dropout=0.0)).eval()
    history = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5], [0, 0, 0, 7, 8, 9, 10, 11]])
    padded = model.hidden(history)
    assert torch.allclose(model.hidden(history[:, 3:]), padded[:, 3:], atol=1e-6)
    assert torch.allclose(model.score(history[:, 3:]), model.score(history), atol=1e-6)


def test_loss_and_packing_are_chosen_from_the_catalogue_size():
    from mscg.models.sasrec_config import DEFAULT_NEGATIVES, FULL_SOFTMAX_MAX_ITEMS, PACK_ABOVE_ITEMS

    def chosen(n_items, **given):
        c = SASRecConfig(n_items=0, **given).resolved(n_items)
        assert c.n_items == n_items and c.resolved(n_items) == c  # once chosen, kept
        return c.negatives, c.pack

    for n_items in (40, 1_585, 1_682, PACK_ABOVE_ITEMS):  # the tiny test catalogue, Scientific, ml-100k
        assert chosen(n_items) == (0, False)  # full softmax, padded windows: as before sampling existed
    assert chosen(PACK_ABOVE_ITEMS + 1) == chosen(11_924) == chosen(FULL_SOFTMAX_MAX_ITEMS) == (0, True)  # Toys
    assert chosen(FULL_SOFTMAX_MAX_ITEMS + 1) == chosen(1_000_000) == (DEFAULT_NEGATIVES, True)
    # what is given is kept; packing follows the loss and the size unless given
    assert chosen(100_000, negatives=0) == (0, True) and chosen(1_000, negatives=0) == (0, False)
    assert chosen(40, negatives=64) == (64, True)
    assert chosen(100_000, pack=False) == (DEFAULT_NEGATIVES, False)
    assert chosen(40, pack=True) == (0, True)
