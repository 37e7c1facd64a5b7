"""meta.json: what every artifact says about itself (kind, schema, provenance) and how it is checked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mscg import __version__
from mscg.errors import DataError

META_FILE = "meta.json"
MODALITIES = ("text", "image", "collab")  # also the fixed order of modalities in a code

# Bumped when a kind's on-disk layout changes; a newer artifact is refused with an upgrade hint.
SCHEMA_VERSIONS = {"embeddings": 1, "quantizer": 1, "codes": 1, "model": 1}

# What produces each kind: used in "wrong kind" errors.
PRODUCERS = {
    "embeddings": "`mscg embed`, `mscg collab` or `mscg import-embeddings`",
    "quantizer": "`mscg quantize`",
    "codes": "`mscg assign-codes`",
    "model": "`mscg collab --model-out` or `mscg train`",
}

_command_line: list[str] | None = None


def set_command_line(argv: list[str]) -> None:
    """The CLI records how it was invoked; artifacts then carry the command that made them."""
    global _command_line
    _command_line = list(argv)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_record(path: Path) -> dict[str, str]:
    """{path, sha256} for a file, or for an artifact directory (digest over its files, in name order)."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for child in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            h.update(child.name.encode())
            h.update(file_digest(child).encode())
        digest = h.hexdigest()
    else:
        digest = file_digest(path)
    return {"path": str(path.resolve()), "sha256": digest}


def provenance(inputs: dict[str, Path], seed: int | None) -> dict[str, Any]:
    return {
        "mscg_version": __version__,
        "command": _command_line if _command_line is not None else None,
        "seed": seed,
        "inputs": {name: input_record(p) for name, p in sorted(inputs.items())},
    }


def write_json(path: Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is missing; {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); re-create it with the stage that made it") from None


def with_article(word: str) -> str:
    """'an embeddings', 'a codes'."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def read_meta(path: Path, kind: str, flag: str) -> dict[str, Any]:
    """Open an artifact directory and check it is of `kind` and of a schema this mscg reads."""
    path = Path(path)
    producer = PRODUCERS[kind]
    if not path.exists():
        raise DataError(f"{flag} {path} does not exist; make it with {producer}")
    if not path.is_dir():
        raise DataError(f"{flag} {path} is a file, but {with_article(kind)} directory is expected; "
                        f"make one with {producer}")
    meta = read_json(path / META_FILE, f"{path} is not an mscg {kind} directory; make one with {producer}")
    found = meta.get("kind") if isinstance(meta, dict) else None
    if found != kind:
        found_text = f"{with_article(found)} directory" if isinstance(found, str) else "not an mscg artifact"
        raise DataError(f"{flag} {path} is {found_text}, but {with_article(kind)} directory is expected; "
                        f"make one with {producer}")
    version = meta.get("schema_version")
    if not isinstance(version, int):
        raise DataError(f"{path}/{META_FILE} has no integer schema_version; re-create it with {producer}")
    if version > SCHEMA_VERSIONS[kind]:
        raise DataError(
            f"{path} was written by a newer mscg (schema {version}, this mscg reads {SCHEMA_VERSIONS[kind]}); "
            "upgrade mscg (pip install -U mscg)"
        )
    return meta


def new_meta(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "schema_version": SCHEMA_VERSIONS[kind], **fields}
