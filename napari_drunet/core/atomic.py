"""Crash-safe file writes (temp file in the same folder, fsync, atomic rename), the check that
an output would not replace an input, and a lock shared by threads and processes."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .errors import DataError, InputError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path``; on success fsync it and rename it over ``path``.

    If the block raises, the temporary file is removed and ``path`` is untouched, so readers
    never see a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _default_permissions(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def temp_prefix(name: str) -> str:
    """``.NAME.`` for a temporary file beside ``NAME``, cut so that the temporary name stays
    within the 255-byte limit of file names however long ``NAME`` is (the random part and the
    suffix need about 25 bytes)."""
    cut = name.encode("utf-8")[:200].decode("utf-8", errors="ignore")
    return f".{cut}."


def atomic_temp_path(path: str | os.PathLike) -> tuple[Path, Path]:
    """Return ``(tmp, final)`` for writers (nibabel, tifffile) that need a file name.

    Use with :func:`commit_temp` after the writer has closed the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    # the writer picks the format from the extension; other dots of the name do not matter
    suffix = ".nii.gz" if name.endswith(".nii.gz") else path.suffix[:16] or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name[: len(path.name) - len(suffix)]),
                               suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp), path


def commit_temp(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """fsync ``tmp`` and atomically rename it to ``final``."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    _default_permissions(tmp)
    os.replace(tmp, final)
    _fsync_dir(Path(final).parent)
    return Path(final)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write with any library; commit it on success, delete on error."""
    tmp, final = atomic_temp_path(path)
    try:
        yield tmp
        commit_temp(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file or folder (links and ``..`` resolved)."""
    return bool(_file_keys(a) & _file_keys(b))


def _file_keys(path: str | os.PathLike) -> set:
    # the resolved path, plus (device, inode) so that a hard link to an input counts too
    keys: set = {os.path.realpath(path)}
    try:
        st = os.stat(path)
    except OSError:  # does not exist yet
        return keys
    keys.add((st.st_dev, st.st_ino))
    return keys


def refuse_overwrite(targets: Iterable[str | os.PathLike],
                     sources: Iterable[str | os.PathLike | None], what: str = "output") -> None:
    """Raise :class:`InputError` when writing one of ``targets`` would replace one of ``sources``.

    The one check used by the CLI (before any work), the writers of :mod:`.io` and so the
    napari writer: a mask saved over the image it was computed from destroys the only copy of
    the scan.
    """
    owner: dict = {}
    for src in sources:
        if src is not None:
            owner.update(dict.fromkeys(_file_keys(src), src))
    for target in targets:
        hit = next((owner[k] for k in _file_keys(target) if k in owner), None)
        if hit is not None:
            raise InputError(f"refusing to write the {what} {target}: it is the input image "
                             f"{hit}; choose another file or folder")


def check_writable(target: str | os.PathLike, what: str = "output") -> None:
    """Fail early (before any work) when ``target`` cannot be written.

    ``what == "folder"`` means ``target`` is a folder to write into. The nearest existing
    ancestor must be a folder in which a file can be created (tried for real: permission bits
    do not stop root, and /proc-like folders refuse only on creation).
    """
    target = Path(target)
    if target.is_dir() and what != "folder":
        raise InputError(f"cannot write {what} {target}: it is a folder; give a file name")
    probe = target if what == "folder" else target.parent
    while not probe.exists():
        if probe.is_symlink():  # dangling link: creating folders through it fails later
            raise InputError(f"cannot write {target}: {probe} is a broken symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot write {target}: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".drunet-write-test.", dir=probe)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc} ({probe})") from None
    os.close(fd)
    os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as strict JSON: NaN and infinities (undefined metrics) become ``null``,
    since ``NaN``/``Infinity`` are not JSON and other tools refuse the file."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, default=_json_default,
                      allow_nan=False)
    return atomic_write_text(path, text)


def _finite(obj: Any) -> Any:
    import math

    import numpy as np

    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        return _finite(obj.tolist())
    return obj


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _default_permissions(path: str | os.PathLike) -> None:
    """mkstemp creates 0600 files; give the final file the usual umask-based mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SharedLock:
    """Re-entrant lock held by one thread of one process at a time (an OS lock on ``path``).

    ``on_acquire`` runs each time the outermost holder gets the lock: a project re-reads its
    manifest there, so that two windows or processes never write back stale copies over each
    other's changes. Waits up to ``timeout`` seconds for another process, then raises
    :class:`DataError`.
    """

    def __init__(self, path: str | os.PathLike, on_acquire: Callable[[], None] | None = None,
                 timeout: float = 30.0):
        self.path = Path(path)
        self._on_acquire = on_acquire
        self._timeout = timeout
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> SharedLock:
        self._thread_lock.acquire()
        try:
            if self._depth == 0:
                self._fd = _os_lock(self.path, self._timeout)
                try:
                    if self._on_acquire is not None:
                        self._on_acquire()
                except BaseException:
                    self._release_os()
                    raise
            self._depth += 1
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._release_os()
        self._thread_lock.release()

    def _release_os(self) -> None:
        if self._fd is not None:
            _os_unlock(self._fd)
            self._fd = None


def _os_lock(path: Path, timeout: float) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise DataError(f"cannot lock {path.parent}: {exc.strerror or exc}") from None
    deadline = time.monotonic() + timeout
    while True:
        try:
            _try_lock(fd)
            return fd
        except OSError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise DataError(f"{path.parent} is busy in another window or process "
                                f"(waited {timeout:.0f} s); try again") from None
            time.sleep(0.05)


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _os_unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        os.close(fd)
else:
    import fcntl

    def _try_lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _os_unlock(fd: int) -> None:
        # closing the descriptor releases the flock
        os.close(fd)
