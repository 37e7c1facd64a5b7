"""What every model config shares: a dataclass that round-trips through config.json."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

C = TypeVar("C", bound="JsonConfig")


class JsonConfig:
    """Mixin for config dataclasses: `to_json()` for config.json, `from_json()` that refuses unknown fields."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls: type[C], obj: dict[str, Any]) -> C:
        """The config of a config.json object; TypeError for fields this version does not know."""
        unknown = sorted(set(obj) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown {cls.__name__} fields {unknown}")
        return cls(**obj)


def check_attention(d_model: int, n_heads: int, dropout: float) -> None:
    """The options every transformer config shares, refused with the flag and the value named (before the ranges
    of `mscg.configs.check_fields`, which name the flag only)."""
    from mscg.errors import UsageError

    if isinstance(dropout, (int, float)) and not 0 <= dropout < 1:
        raise UsageError(f"--dropout {dropout} must be in [0, 1)")
    if isinstance(d_model, int) and isinstance(n_heads, int) and n_heads >= 1 and d_model % n_heads:
        raise UsageError(f"--d-model {d_model} must be divisible by --n-heads {n_heads}")
