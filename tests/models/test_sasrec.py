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


