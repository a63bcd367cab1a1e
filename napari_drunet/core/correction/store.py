"""The manifest of a correction project (``project.json``): the one place that holds it.

:class:`ManifestStore` owns the manifest dict. Readers look at :attr:`ManifestStore.manifest`;
every change goes through :meth:`ManifestStore.edit`, which takes the project lock (shared by
threads and processes), re-reads the file when another process or ``Project`` object wrote it
since, hands the dict to the caller and writes it back atomically. The project's cases, its
model versions (:mod:`napari_drunet.core.correction.versions`) and its training feedback
(:mod:`napari_drunet.core.correction.feedback`) are separate objects that all receive the same
store, so none of them shares attributes with another.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..atomic import SharedLock, atomic_write_json
from ..errors import DataError

SCHEMA_VERSION = 1
MANIFEST = "project.json"
LOCK_FILE = ".project.lock"

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_VERSION_FILE = re.compile(r"v\d{3,}\.safetensors")


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string (seconds), as the manifest records it."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class ManifestStore:
    """The manifest of the project in ``folder``, read and written under its shared lock.

    Use :meth:`create` or :meth:`open`. Between two locked changes the dict in memory equals
    the file, so the re-read done when the lock is taken loses nothing.

    Examples
    --------
    >>> import tempfile
    >>> store = ManifestStore.create(tempfile.mkdtemp())
    >>> with store.edit() as m:
    ...     m["settings"]["theme"] = "dark"
    >>> ManifestStore.open(store.folder).manifest["settings"]
    {'theme': 'dark'}
    """

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self._manifest = manifest
        self._seen = _stat_key(self.path)
        self._depth = 0
        self._lock = SharedLock(self.folder / LOCK_FILE, on_acquire=self._reload)

    @property
    def path(self) -> Path:
        """The manifest file."""
        return self.folder / MANIFEST

    @classmethod
    def create(cls, folder: str | Path) -> ManifestStore:
        """Write the manifest of a new, empty project into ``folder`` (which must exist)."""
        now = now_iso()
        manifest = {"schema_version": SCHEMA_VERSION, "created": now, "modified": now,
                    "cases": {}, "versions": [], "active_version": None, "holdout": [],
                    "settings": {}}
        store = cls(Path(folder), manifest)
        with store.edit():
            pass
        return store

    @classmethod
    def open(cls, folder: str | Path) -> ManifestStore:
        """Read the manifest of the project in ``folder`` (:class:`DataError` when there is
        none, or when it is damaged, newer than this package or points outside the folder)."""
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise DataError(f"no project found in {folder} (missing {MANIFEST})")
        return cls(Path(folder), read_manifest(path))

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as last read or written; change it only inside :meth:`edit`."""
        return self._manifest

    @contextmanager
    def edit(self) -> Iterator[dict[str, Any]]:
        """Lock, bring the manifest up to date, yield it for changes, then write it atomically.

        Nested edits write once, when the outermost one ends. When the body raises, nothing is
        written and the changes made so far are dropped (the file is read back).
        """
        with self._lock:
            self._depth += 1
            try:
                yield self._manifest
            except BaseException:
                if self._depth == 1:
                    self._seen = None
                    self._reload()
                raise
            finally:
                self._depth -= 1
            if self._depth == 0:
                self._manifest["modified"] = now_iso()
                atomic_write_json(self.path, self._manifest)
                self._seen = _stat_key(self.path)

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Lock and bring the manifest up to date without writing it (for a decision that may
        end in an :meth:`edit` nested inside, e.g. a hold-out split that is already chosen)."""
        with self._lock:
            yield self._manifest

    def _reload(self) -> None:
        key = _stat_key(self.path)
        if key is not None and key != self._seen:
            self._manifest = read_manifest(self.path)
            self._seen = key


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    # an atomic rename gives the manifest a new inode: inode + mtime + size tell a new version
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_manifest(path: Path) -> dict[str, Any]:
    """Parse and check one ``project.json`` (missing optional keys filled in)."""
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"project manifest {path} is unreadable: {exc}") from exc
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise DataError(f"unsupported project schema version {version!r} in {path}")
    for key, default in (("cases", {}), ("versions", []), ("holdout", []), ("settings", {})):
        manifest.setdefault(key, default)
    manifest.setdefault("active_version", None)
    _check_manifest_paths(manifest, path)
    return manifest


def _check_manifest_paths(manifest: dict[str, Any], path: Path) -> None:
    """Refuse a manifest whose case folders or model files are not plain names inside the
    project (a tampered ``project.json`` must not redirect reads or writes elsewhere)."""
    cases, versions = manifest.get("cases"), manifest.get("versions")
    if not isinstance(cases, dict) or not isinstance(versions, list):
        raise DataError(f"project manifest {path} is damaged (cases/versions)")
    for name, entry in cases.items():
        folder = entry.get("folder") if isinstance(entry, dict) else None
        if not isinstance(folder, str) or not _SAFE_NAME.fullmatch(folder):
            raise DataError(f"project manifest {path}: case {name!r} has an invalid folder "
                            f"{folder!r}")
    for entry in versions:
        file = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(file, str) or not _VERSION_FILE.fullmatch(file):
            raise DataError(f"project manifest {path}: invalid model file entry {file!r}")


def is_corrected(entry: dict[str, Any]) -> bool:
    """True when the case of manifest ``entry`` was edited or reviewed in any part."""
    return bool(entry["edited_fraction"] > 0 or entry["reviewed_all"] or entry["reviewed_slices"])
