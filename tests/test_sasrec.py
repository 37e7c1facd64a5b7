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


def test_content_start_projects_by_pca_and_leaves_unknown_items_out():
    import numpy as np
    import pytest

    from mscg.artifacts.embeddings import Embeddings
    from mscg.commands.collab import content_start
    from mscg.errors import DataError

    rng = np.random.default_rng(0)
    # 3 informative directions in 10-d: PCA to 4 keeps them, the 4th component is small
    basis = rng.normal(size=(3, 10))
    vectors = torch.from_numpy((rng.normal(size=(20, 3)) @ basis + 1e-3 * rng.normal(size=(20, 10))).astype("float32"))
    emb = Embeddings("text", [f"i{k}" for k in range(20)], vectors)
    catalogue = ["i3", "new", "i0"] + [f"i{k}" for k in range(4, 20)]
    start, known = content_start(emb, catalogue, d_model=4, seed=0)
    assert start.shape == (len(catalogue), 4)
    assert known.tolist() == [True, False] + [True] * 17
    assert torch.equal(start[1], torch.zeros(4))
    # distances between known items survive the projection (the data is ~3-dimensional)
    rows = [3, 0] + list(range(4, 20))
    orig = torch.cdist(vectors[rows].double(), vectors[rows].double())
    proj = torch.cdist(start[known].double(), start[known].double())
    assert torch.allclose(orig, proj, atol=1e-2)
    # fewer components than the model width: the last columns stay zero
    wide, _ = content_start(emb, catalogue, d_model=32, seed=0)
    assert torch.count_nonzero(wide[:, 10:]) == 0 and torch.count_nonzero(wide[:, :10]) > 0
    with pytest.raises(DataError, match="cover 0 of"):
        content_start(emb, ["x", "y", "z"], d_model=4, seed=0)
