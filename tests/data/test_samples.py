"""Training samples built from the split."""

from __future__ import annotations

from mscg.data.samples import SASRecWindows
from mscg.data.split import load_dataset


def test_windows_cover_every_training_transition_once(tiny_data):
    ds = load_dataset(tiny_data)
    windows = SASRecWindows(ds.split, max_history=3)
    expected = sum(max(len(ds.split.train_sequence(u)) - 1, 0) for u in range(len(ds.split)))
    assert int((windows.targets >= 0).sum()) == expected
    # inputs are shifted targets: every real target's input is the item before it (+1)
    real = windows.targets >= 0
    assert (windows.inputs[real] > 0).all()
