"""The token vocabulary of multimodal codes: special tokens, then one id range per (modality, level) slot.

Token 0 = pad, 1 = decoder start, then one mask token per modality (in modality order), then the slots.
A slot is one (modality, level); each modality has its quantizer levels plus one collision level.
The codes artifact (`mscg.artifacts.codes`) stores this layout in its meta.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mscg.errors import DataError

PAD, BOS = 0, 1


@dataclass(frozen=True)
class Slot:
    modality: str
    level: int  # 0..n_levels-1 are quantizer levels; n_levels is the collision level
    offset: int  # first token id of this slot's range
    size: int


@dataclass
class Vocabulary:
    """Token-id layout: specials, then one contiguous range per (modality, level) slot."""

    modalities: list[str]
    slots: list[Slot]

    @classmethod
    def build(cls, sizes: dict[str, list[int]]) -> Vocabulary:
        """`sizes[modality]` lists the size of every slot of that modality, collision level last."""
        modalities = list(sizes)
        offset = 2 + len(modalities)
        slots = []
        for m in modalities:
            for level, size in enumerate(sizes[m]):
                slots.append(Slot(m, level, offset, int(size)))
                offset += int(size)
        return cls(modalities, slots)

    @property
    def size(self) -> int:
        last = self.slots[-1]
        return last.offset + last.size

    def mask_token(self, modality: str) -> int:
        return 2 + self.modalities.index(modality)

    def slots_of(self, modality: str) -> list[Slot]:
        return [s for s in self.slots if s.modality == modality]

    def columns_of(self, modality: str) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s.modality == modality]

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "special": {"pad": PAD, "decoder_start": BOS, "mask": {m: self.mask_token(m) for m in self.modalities}},
            "slots": [{"modality": s.modality, "level": s.level, "offset": s.offset, "size": s.size}
                      for s in self.slots],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Vocabulary:
        slots = [Slot(s["modality"], int(s["level"]), int(s["offset"]), int(s["size"])) for s in obj["slots"]]
        if not slots or not all(0 <= s.level < 2**31 and 0 <= s.offset < 2**31 and 0 < s.size < 2**31 for s in slots):
            raise DataError("the vocabulary in meta.json has no slots, or slots of impossible sizes; "
                            "re-run assign-codes")
        modalities = list(dict.fromkeys(s.modality for s in slots))
        vocab = cls(modalities, slots)
        if vocab.to_json() != obj:
            raise DataError("the vocabulary in meta.json is not the layout mscg derives from its slots; "
                            "re-run assign-codes")
        return vocab
