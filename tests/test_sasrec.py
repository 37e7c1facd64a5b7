import torch

from mscg.data.samples import SASRecWindows
from mscg.data.split import load_dataset
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


def test_windows_cover_every_training_transition_once(tiny_data):
    ds = load_dataset(tiny_data)
    windows = SASRecWindows(ds.split, max_history=3)
    expected = sum(max(len(ds.split.train_sequence(u)) - 1, 0) for u in range(len(ds.split)))
    assert int((windows.targets >= 0).sum()) == expected
    # inputs are shifted targets: every real target's input is the item before it (+1)
    real = windows.targets >= 0
    assert (windows.inputs[real] > 0).all()
