import numpy as np

from mscg.artifacts.codes import Vocabulary, code_statistics, collision_level


def test_collision_level_numbers_shared_codes_in_row_order():
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 1]])
    suffix, size = collision_level(codes)
    assert suffix.tolist() == [0, 0, 1, 2, 0]
    assert size == 3
    full = np.concatenate([codes, suffix[:, None]], axis=1)
    assert len(np.unique(full, axis=0)) == len(codes)


def test_collision_level_without_collisions_has_size_one():
    suffix, size = collision_level(np.array([[0], [1], [2]]))
    assert suffix.tolist() == [0, 0, 0] and size == 1


def test_code_statistics():
    stats = code_statistics(np.array([[0, 1], [0, 1], [1, 0]]), [2, 4])
    assert stats["collision_rate"] == 2 / 3
    assert stats["codebook_usage"] == [1.0, 0.5]
    assert stats["unique_codes"] == 2


def test_vocabulary_layout_is_disjoint_and_round_trips():
    vocab = Vocabulary.build({"text": [8, 8, 3], "collab": [4, 4, 2]})
    ranges = [set(range(s.offset, s.offset + s.size)) for s in vocab.slots]
    assert all(a.isdisjoint(b) for i, a in enumerate(ranges) for b in ranges[i + 1:])
    assert min(min(r) for r in ranges) == 2 + 2  # after pad, decoder start and 2 mask tokens
    assert vocab.size == 4 + 8 + 8 + 3 + 4 + 4 + 2
    assert Vocabulary.from_json(vocab.to_json()) == vocab


