"""Atomic outputs: every stage writes under a temporary sibling and renames it into place at the end.

A crash, Ctrl-C or kill leaves either the old output or none (plus, for resumable training stages,
a `.NAME.partial/` directory holding the resume checkpoint). An existing output is refused unless
`force`; an output is never written inside one of the stage's inputs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from mscg.errors import UsageError


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def check_output(path: Path, *, force: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse an existing output without --force, and any output that lies inside an input."""
    target = path.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if target == source or source in target.parents:
            raise UsageError(f"output {path} would be written inside the input {source}; choose another output path")
        if target in source.parents:
            raise UsageError(f"output {path} contains the input {source}; choose another output path")
    if path.exists() and not force:
        raise UsageError(f"{path} already exists; pass --force to replace it or choose another output path")
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)


class AtomicDir:
    """`with AtomicDir(out) as tmp:` write into `tmp`; on success it becomes `out`.

    `resumable=True` keeps the partial directory when the body fails after writing something there
    (the resume checkpoint) and reuses it when `resume=True`; otherwise a stale partial directory is cleared.
    """

    def __init__(self, path: Path, *, force: bool = False, inputs: Iterable[Path] = (),
                 resumable: bool = False, resume: bool = False):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.force = force
        self.inputs = list(inputs)
        self.resumable = resumable
        self.resume = resume

    def __enter__(self) -> Path:
        check_output(self.path, force=self.force, inputs=self.inputs)
        if self.partial.exists() and not (self.resumable and self.resume):
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            if not self.resumable or not (self.partial.is_dir() and any(self.partial.iterdir())):
                shutil.rmtree(self.partial, ignore_errors=True)
            return False
        replace_path(self.partial, self.path)
        return False


def replace_path(new: Path, target: Path) -> None:
    """Move `new` onto `target`, removing the old `target` only once `new` is in place."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            _remove(old)
        os.replace(target, old)
        os.replace(new, target)
        _remove(old)
    else:
        os.replace(new, target)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def write_text_atomic(path: Path, text: str, *, force: bool = False, inputs: Iterable[Path] = ()) -> None:
    """Write one file atomically (temporary sibling + rename)."""
    path = Path(path)
    check_output(path, force=force, inputs=inputs)
    tmp = partial_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        replace_path(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def main_rank_output(path: Path, *, main: bool, **kwargs) -> Iterator[Path]:
    """AtomicDir on the writing rank; other ranks of a distributed run only get the partial path."""
    if main:
        with AtomicDir(path, **kwargs) as tmp:
            yield tmp
    else:
        yield partial_path(Path(path))
