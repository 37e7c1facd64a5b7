"""`mscg quantize` as a function: codebook sizes."""

from __future__ import annotations

from mscg.commands.quantize import auto_codebook_size


def test_auto_codebook_size():
    assert auto_codebook_size(30) == 8
    assert auto_codebook_size(1682) == 64
    assert auto_codebook_size(400_000) == 256
    assert auto_codebook_size(1) == 2
