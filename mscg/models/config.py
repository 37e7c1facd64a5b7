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
