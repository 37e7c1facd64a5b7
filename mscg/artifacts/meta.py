"""meta.json: what every artifact says about itself (kind, schema, provenance) and how it is checked."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from mscg import __version__
from mscg.errors import DataError

META_FILE = "meta.json"
MODALITIES = ("text", "image", "collab")  # also the fixed order of modalities in a code
QUANTIZER_METHODS = ("rq-kmeans", "rq-vae", "rq-dino")  # `quantize --method`: the keys of mscg.quantizers.QUANTIZERS

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


def json_safe(obj: Any) -> Any:
    """`obj` with NaN and infinities as None (null), so that the JSON is valid for every reader."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps_json(obj: Any) -> str:
    """Strict JSON text (NaN written as null), indented, with a final newline."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"


def json_depth(obj: Any) -> int:
    """How deeply containers nest in `obj` (without recursion, so any depth can be measured)."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            todo += [(v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def write_json(path: Path, obj: Any) -> None:
    """`obj` as strict JSON (a NaN or infinite number as null: no NaN or Infinity ever reaches a file)."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def read_json(path: Path, what: str, *, fix: str = "re-create it with the stage that made it") -> Any:
    """The JSON in `path`; a DataError ends with `what` (to do) for a missing file, else with `fix`."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is missing; {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); {fix}") from None
    except RecursionError:
        raise DataError(f"{path} nests too deeply to be an mscg file; {fix}") from None
    except ValueError as e:  # an integer of thousands of digits
        raise DataError(f"{path} is not an mscg file ({str(e).splitlines()[0][:120]}); {fix}") from None


def recorded_digest(meta: dict[str, Any], name: str) -> str | None:
    """The SHA-256 that meta.json's provenance records for its input `name` (None when it records none)."""
    record = meta.get("provenance", {}) if isinstance(meta, dict) else {}
    record = record.get("inputs", {}) if isinstance(record, dict) else {}
    record = record.get(name) if isinstance(record, dict) else None
    digest = record.get("sha256") if isinstance(record, dict) else None
    return digest if isinstance(digest, str) else None


def verify_input(path: Path, meta: dict[str, Any], name: str, artifact: Path) -> None:
    """Refuse the input `path` when its digest differs from the one `artifact`'s meta.json records for `name`."""
    expected = recorded_digest(meta, name)
    if expected is None or not Path(path).exists():
        return
    if input_record(path)["sha256"] != expected:
        raise DataError(f"{path} is not the {name} {artifact} was made from: its SHA-256 differs from the one in "
                        f"{Path(artifact) / META_FILE} (changed or swapped since); pass the original, re-run the "
                        "stage that made it, or pass --no-verify to use it anyway")


def meta_inputs(path: Path) -> list[Path]:
    """The paths an artifact directory's meta.json says it was made from (provenance inputs, the codes of a
    generator, the embeddings of a quantizer; relative ones inside the directory); none when it has no readable
    meta.json."""
    try:
        meta = json.loads((Path(path) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    if not isinstance(meta, dict):
        return []
    found = []
    inputs = meta.get("provenance", {}).get("inputs", {}) if isinstance(meta.get("provenance"), dict) else {}
    if isinstance(inputs, dict):
        found += [r.get("path") for r in inputs.values() if isinstance(r, dict)]
    found.append(meta.get("codes"))
    if isinstance(meta.get("input"), dict):
        found += list(meta["input"].values())
    return [Path(path) / p for p in found if isinstance(p, str) and p]  # a relative path: inside the artifact


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
    if not isinstance(version, int) or isinstance(version, bool):
        raise DataError(f"{path}/{META_FILE} has no integer schema_version; re-create it with {producer}")
    if version > SCHEMA_VERSIONS[kind]:
        raise DataError(
            f"{path} was written by a newer mscg (schema {version}, this mscg reads {SCHEMA_VERSIONS[kind]}); "
            "upgrade mscg (pip install -U mscg)"
        )
    return meta


def new_meta(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "schema_version": SCHEMA_VERSIONS[kind], **fields}


def check_item_ids(path: Path, meta: dict[str, Any], n_items: int | None = None) -> list[str]:
    """meta.json's item_ids: distinct strings (as many as the model's items, when it has a count). No torch: `mscg
    recommend` checks its input against them before it loads the model."""
    ids = meta.get("item_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        raise DataError(f"{path}/{META_FILE}: item_ids must be a list of distinct strings; re-create the directory")
    if n_items is not None and len(ids) != n_items:
        raise DataError(f"{path}/{META_FILE} lists {len(ids):,} item ids but {path}/config.json has n_items "
                        f"{n_items:,}; re-create the directory")
    return ids
