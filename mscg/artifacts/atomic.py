"""Atomic outputs: every stage writes under a temporary sibling and renames it into place at the end.

A crash, Ctrl-C or kill leaves either the old output or none (plus, for resumable training stages,
a `.NAME.partial/` directory holding the resume checkpoint). An existing output is refused unless
`force`; an output is never written inside one of the stage's inputs.

Also, for every output:
- a lock: the writing process holds an exclusive lock (flock) on a `.NAME.lock` sibling from its first
  check of the output until the output is in place, so a second mscg process writing the same output
  stops at once;
- no special files: an existing FIFO, device or socket is never replaced, even with `force` (nor a
  directory by a one-file output);
- no symbolic links: the output and its `.NAME.partial`, `.NAME.old` and `.NAME.lock` siblings are
  never followed (a link there is refused), and a reused partial directory keeps only its checkpoint;
- a full disk is reported as such ("no space left on device while writing OUTPUT", whatever library
  raised it), after the partial output is removed (a resume checkpoint written before is kept);
- ordinary permissions: every file of an output is readable as the umask allows (0644 under the usual 022),
  also those that a library wrote owner-only (safetensors writes 0600).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import re
import resource
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from mscg.errors import DataError, MscgError, UsageError, WriteError

CHECKPOINT_FILE = "resume.pt"  # = mscg.training.loop.RESUME_FILE: what a failed resumable stage keeps
LOW_SPACE_BYTES = 16 << 20  # a write that failed without a reason, with less than this free: a full disk


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def old_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def check_output(path: Path, *, force: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse an existing output without --force, any output that lies inside an input, and symbolic links
    at the output or its siblings; then take the output's lock (held until the output is written)."""
    path = Path(path)
    target = path.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if target == source or source in target.parents:
            raise UsageError(f"output {path} would be written inside the input {source}; choose another output path")
        if target in source.parents:
            raise UsageError(f"output {path} contains the input {source}; choose another output path")
    for link, what in ((path, "output"), (partial_path(path), "partial output"), (old_path(path), "old output"),
                       (lock_path(path), "lock file")):
        if link.is_symlink():
            raise UsageError(f"the {what} {link} is a symbolic link, and mscg never writes through one; remove the "
                             "link or choose another output path")
    _refuse_special(path)
    if not path.parent.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _cannot_write(path, e) from None
    lock_output(path)
    if path.exists() and not force:
        release_output(path)
        raise UsageError(f"{path} already exists; pass --force to replace it or choose another output path")


def _refuse_special(path: Path, *, directory: bool = True) -> None:
    """An existing output that is not a regular file (nor, where `directory`, a directory) is never replaced:
    a FIFO, a device or a socket (`-o /dev/null --force` must not remove /dev/null)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode) or (directory and stat.S_ISDIR(mode)):
        return  # a link: check_output refuses it
    what = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, device or socket)"
    raise UsageError(f"the output {path} is {what}, and mscg never replaces one, even with --force; remove it "
                     "or choose another output path")


def check_file_output(path: Path, *, force: bool, inputs: Iterable[Path] = ()) -> None:
    """check_output for a one-file output, which never replaces a directory either."""
    _refuse_special(Path(path), directory=False)
    check_output(path, force=force, inputs=inputs)


# ---- the output lock ------------------------------------------------------------------------------

_held: dict[str, int] = {}  # absolute lock path -> open descriptor holding the flock


def lock_output(path: Path) -> None:
    """Take the exclusive lock of `path` (re-entrant in this process); refuse when another process holds it."""
    lock = lock_path(Path(path))
    key = os.path.abspath(lock)
    if key in _held:
        return
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UsageError(f"the lock file {lock} is a symbolic link, and mscg never writes through one; "
                                 "remove the link") from None
            raise _cannot_write(Path(path), e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise WriteError(f"another mscg process{holder} is writing {path}; wait for it to finish, or choose "
                             "another output path") from None
        try:  # the previous holder may have removed the file between our open and our lock: lock the new one
            same = os.path.samestat(os.lstat(lock), os.fstat(fd))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    with contextlib.suppress(OSError):  # for the message of a second process; a full disk may refuse it
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = fd


def release_output(path: Path) -> None:
    """Drop the lock of `path` (if this process holds it) and remove the lock file."""
    _release(os.path.abspath(lock_path(Path(path))))


@atexit.register
def release_all() -> None:
    """Drop every lock this process holds (the CLI calls it when a command ends, however it ends)."""
    for key in list(_held):
        _release(key)


def _forget_in_child() -> None:
    """A forked child does not hold its parent's locks (nor removes their files)."""
    for fd in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _release(key: str) -> None:
    fd = _held.pop(key, None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        if os.path.samestat(os.lstat(key), os.fstat(fd)):
            os.unlink(key)  # still locked: a process waiting on the old file sees it gone and retries
    os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


def _cannot_write(path: Path, e: OSError) -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return disk_full_error(path, reason=FILE_SIZE_LIMIT if e.errno == errno.EFBIG else NO_SPACE)
    where = f" ({e.filename})" if e.filename else ""
    return DataError(f"cannot write {path}: {e.strerror or e}{where}; check the path and its permissions, or "
                     "choose another output folder")


# ---- full disks -----------------------------------------------------------------------------------

_NO_SPACE = re.compile(r"no space left|os error 28|storagefull|disk quota|\benospc\b", re.IGNORECASE)
_TOO_LARGE = re.compile(r"file too large|os error 27|\befbig\b", re.IGNORECASE)
# What torch.save / numpy say when a write comes up short, without saying why.
_SHORT_WRITE = re.compile(r"unexpected pos|file write failed|failed writing|iostream error|requested and \d+ written",
                          re.IGNORECASE)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def free_bytes(path: Path) -> int:
    """Free bytes (for this user) on the file system of `path` or of its nearest existing parent."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 1 << 62


FILE_SIZE_LIMIT = "a file grew past the file-size limit (ulimit -f)"
NO_SPACE = "no space left on device"


def write_limit(exc: BaseException, where: Path) -> str | None:
    """What stopped a write under `where`, if it was the room to write: NO_SPACE (a full disk or quota) or
    FILE_SIZE_LIMIT (EFBIG: the process's file-size limit, as a quota may set), whichever library reported it
    (an OSError, or a safetensors/torch/numpy error wrapping one); None for any other failure."""
    if isinstance(exc, (KeyboardInterrupt, WriteError)):
        return None
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return NO_SPACE
        if isinstance(e, OSError) and e.errno == errno.EFBIG:
            return FILE_SIZE_LIMIT
        if not isinstance(e, MscgError) and _NO_SPACE.search(str(e)):
            return NO_SPACE
        if not isinstance(e, MscgError) and _TOO_LARGE.search(str(e)):
            return FILE_SIZE_LIMIT
    if any(_SHORT_WRITE.search(str(e)) for e in chain):  # a short write that does not say why
        if free_bytes(where) < LOW_SPACE_BYTES:
            return NO_SPACE
        if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
            return FILE_SIZE_LIMIT
    return None


def disk_full_error(path: Path, kept: Path | None = None, reason: str = NO_SPACE) -> WriteError:
    then = (f"rerun the same command with --resume (the last checkpoint is kept in {kept})" if kept is not None
            else "rerun the same command")
    room = ("free some space (or choose an output on another disk)" if reason == NO_SPACE
            else "raise the limit (or choose an output where files may be larger)")
    return WriteError(f"{reason} while writing {path}; nothing was written there: {room}, then {then}")


# ---- atomic outputs -------------------------------------------------------------------------------

class AtomicDir:
    """`with AtomicDir(out) as tmp:` write into `tmp`; on success it becomes `out`.

    `resumable=True` keeps the resume checkpoint (CHECKPOINT_FILE) of the partial directory when the body
    fails after writing one, and reuses it when `resume=True`; everything else in a partial directory is
    cleared, on entry and on failure.
    """

    def __init__(self, path: Path, *, force: bool = False, inputs: Iterable[Path] = (),
                 resumable: bool = False, resume: bool = False, keep_modes: Iterable[str] = ()):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.force = force
        self.inputs = list(inputs)
        self.resumable = resumable
        self.resume = resume
        self.keep_modes = list(keep_modes)  # folders of the output whose files keep the modes they were given

    def __enter__(self) -> Path:
        check_output(self.path, force=self.force, inputs=self.inputs)
        try:
            if self.partial.is_dir() and self.resumable and self.resume:
                checkpoint = self.partial / CHECKPOINT_FILE
                if checkpoint.is_symlink() or (checkpoint.exists() and not checkpoint.is_file()):
                    raise UsageError(f"{checkpoint} is not a checkpoint file mscg wrote (a link or a directory); "
                                     "remove it, or drop --resume to start afresh")
                self._clear(keep=CHECKPOINT_FILE)
            elif self.partial.exists():
                _remove(self.partial)
            self.partial.mkdir(exist_ok=True)
            if self.partial.is_symlink():  # planted between the check and the mkdir
                raise UsageError(f"the partial output {self.partial} is a symbolic link, and mscg never writes "
                                 "through one; remove the link")
        except BaseException:
            release_output(self.path)
            raise
        return self.partial

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                honour_umask(self.partial, keep=self.keep_modes)
                replace_path(self.partial, self.path)
            finally:
                release_output(self.path)
            return False
        full = write_limit(exc, self.partial)
        kept = None
        try:
            checkpoint = self.partial / CHECKPOINT_FILE
            if self.resumable and checkpoint.is_file() and not checkpoint.is_symlink():
                self._clear(keep=CHECKPOINT_FILE)
                kept = self.partial
            else:
                _remove(self.partial, missing_ok=True)
        except OSError:
            pass
        finally:
            release_output(self.path)
        if full:
            raise disk_full_error(self.path, kept, full) from None
        return False

    def _clear(self, *, keep: str) -> None:
        """Remove every entry of the partial directory but `keep` (links are removed, never followed)."""
        for entry in self.partial.iterdir():
            if entry.name != keep or entry.is_symlink():
                _remove(entry)


def current_umask() -> int:
    """This process's umask, read without changing it where Linux tells it (os.umask sets it to read it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(root: Path, *, keep: Iterable[str] = ()) -> None:
    """Give every regular file under `root` the mode a file created by `open` gets (0o666 less the umask):
    safetensors writes its files 0600, whatever the umask. Links are neither followed nor changed, nor is a file
    with another name elsewhere (a hard link: its mode is its source's), nor one in the folders `keep` (relative
    to `root`: files given their modes on purpose, e.g. copies no more readable than their sources)."""
    mode = 0o666 & ~current_umask()
    kept = [os.path.join(root, folder) for folder in keep]
    for folder, _, files in os.walk(root):  # os.walk does not descend into linked folders
        if any(folder == k or folder.startswith(k + os.sep) for k in kept):
            continue
        for name in files:
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):  # a file left 0600 is no reason to lose the output
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and stat.S_IMODE(st.st_mode) != mode:
                    try:
                        os.chmod(path, mode, follow_symlinks=False)
                    except NotImplementedError:  # no lchmod here; lstat saw a regular file
                        os.chmod(path, mode)


def replace_path(new: Path, target: Path) -> None:
    """Move `new` onto `target`, removing the old `target` only once `new` is in place."""
    if target.exists() or target.is_symlink():
        old = old_path(target)
        _remove(old, missing_ok=True)
        os.replace(target, old)
        os.replace(new, target)
        _remove(old)
    else:
        os.replace(new, target)


def _remove(path: Path, *, missing_ok: bool = False) -> None:
    """Remove a file, a link (not what it points to) or a directory tree."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    elif not missing_ok:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))


def write_text_atomic(path: Path, text: str, *, force: bool = False, inputs: Iterable[Path] = ()) -> None:
    """Write one file atomically (temporary sibling + rename), never through a link."""
    write_bytes_atomic(path, text.encode("utf-8"), force=force, inputs=inputs)


def write_bytes_atomic(path: Path, data: bytes, *, force: bool = False, inputs: Iterable[Path] = ()) -> None:
    """write_text_atomic for bytes (an image)."""
    path = Path(path)
    check_file_output(path, force=force, inputs=inputs)
    tmp = partial_path(path)
    try:
        _remove(tmp, missing_ok=True)  # a stale one (check_output refused a link there)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        replace_path(tmp, path)
    except Exception as e:
        reason = write_limit(e, tmp)
        if reason is not None:
            _remove(tmp, missing_ok=True)
            raise disk_full_error(path, reason=reason) from None
        raise
    finally:
        with contextlib.suppress(OSError):
            _remove(tmp, missing_ok=True)
        release_output(path)


@contextlib.contextmanager
def main_rank_output(path: Path, *, main: bool, **kwargs) -> Iterator[Path]:
    """AtomicDir on the writing rank; other ranks of a distributed run only get the partial path."""
    if main:
        with AtomicDir(path, **kwargs) as tmp:
            yield tmp
    else:
        yield partial_path(Path(path))
