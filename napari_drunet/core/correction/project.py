"""Correction projects: a crash-safe folder holding cases, corrections and model versions.

Layout of a project folder::

    project.json                 manifest (schema version, cases, model versions, active version)
    cases/<case>/image.npz       copy of the image: array (C, *spatial), spacing, affine
    cases/<case>/prediction.npz  model labels (+ probabilities when given)
    cases/<case>/correction.npz  corrected labels and the edited-pixel map
    models/vNNN.safetensors      one file per model version, never overwritten

Every file is written with :mod:`napari_drunet.core.atomic` (temporary file, fsync, rename), so a
crash mid-write leaves the previous version of that file intact; temporary files are ignored on
open. The image is always copied so that a project stays restorable when the source file moves.
Model-version bookkeeping lives in :mod:`napari_drunet.core.correction.versions`, and what the
corrections feed back into training (training / replay cases, hold-out split, fix statistics) in
:mod:`napari_drunet.core.correction.feedback` (both mixins).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import SharedLock, atomic_write, atomic_write_json
from ..errors import DataError
from .feedback import CorrectionRoundsMixin
from .versions import ModelVersionsMixin, label_dice, now_iso

SCHEMA_VERSION = 1
MANIFEST = "project.json"
LOCK_FILE = ".project.lock"
__all__ = ["MANIFEST", "SCHEMA_VERSION", "CaseRecord", "Project", "label_dice"]


def _compact(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"label maps must be integer arrays, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise DataError("label maps must not contain negative values")
    top = int(labels.max()) if labels.size else 0
    return labels.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32)


def _save_npz(path: Path, **arrays: Any) -> None:
    with atomic_write(path) as fh:
        np.savez_compressed(fh, **{k: v for k, v in arrays.items() if v is not None})


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read project file {path}: {exc}") from exc


@dataclass
class CaseRecord:
    """Everything stored for one case (returned by :meth:`Project.load_case`)."""

    name: str
    image: Any  # core.io.ImageData
    prediction: np.ndarray
    correction: np.ndarray
    edited: np.ndarray
    reviewed_slices: list[int]
    reviewed_all: bool
    probabilities: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def reviewed_map(self) -> np.ndarray:
        """Bool map of the pixels the user has looked at (reviewed slices along axis 0)."""
        out = np.zeros(self.correction.shape, dtype=bool)
        if self.reviewed_all:
            out[...] = True
        else:
            for s in self.reviewed_slices:
                if 0 <= s < out.shape[0]:
                    out[s] = True
        return out


class Project(ModelVersionsMixin, CorrectionRoundsMixin):
    """A correction project folder. Use :meth:`create` or :meth:`open`, not the constructor.

    Thread- and process-safe: every change re-reads the manifest and writes it back under a
    lock shared by threads and processes (:class:`~napari_drunet.core.atomic.SharedLock` on
    ``.project.lock``), so an autosave thread, a fine-tuning worker and a second window or
    ``drunet`` process on the same folder keep each other's cases, corrections and versions.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> p = Project.create(tempfile.mkdtemp() + "/proj")
    >>> _ = p.add_case("a", np.zeros((1, 4, 4)), np.zeros((4, 4), int))
    >>> p.save_correction("a", np.eye(4, dtype=int))["changed_fraction"]
    0.25
    """

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder = Path(folder)
        self._m = manifest
        self._seen: tuple[int, int, int] | None = _stat_key(self.folder / MANIFEST)
        self._lock = SharedLock(self.folder / LOCK_FILE, on_acquire=self._reload)

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, folder: str | Path) -> Project:
        """Create a new project in an empty (or missing) folder."""
        folder = Path(folder).expanduser()
        if (folder / MANIFEST).exists():
            raise DataError(f"{folder} already holds a project; open it instead")
        if folder.exists() and any(p for p in folder.iterdir() if not p.name.startswith(".")):
            raise DataError(f"{folder} is not empty; choose an empty folder for a new project")
        (folder / "cases").mkdir(parents=True, exist_ok=True)
        (folder / "models").mkdir(exist_ok=True)
        now = now_iso()
        manifest = {"schema_version": SCHEMA_VERSION, "created": now, "modified": now, "cases": {},
                    "versions": [], "active_version": None, "holdout": [], "settings": {}}
        project = cls(folder, manifest)
        project._write_manifest()
        return project

    @classmethod
    def open(cls, folder: str | Path) -> Project:
        """Open an existing project (temporary files left by a crash are ignored)."""
        folder = Path(folder).expanduser()
        path = folder / MANIFEST
        if not path.is_file():
            raise DataError(f"no project found in {folder} (missing {MANIFEST})")
        return cls(folder, _read_manifest(path))

    def _reload(self) -> None:
        """Take the manifest as another process (or Project object) last wrote it.

        Runs when the lock is taken; between two locked changes the copy in memory equals the
        file, so reading the newer file loses nothing.
        """
        path = self.folder / MANIFEST
        key = _stat_key(path)
        if key is not None and key != self._seen:
            self._m = _read_manifest(path)
            self._seen = key

    def _write_manifest(self) -> None:
        with self._lock:
            self._m["modified"] = now_iso()
            atomic_write_json(self.folder / MANIFEST, self._m)
            self._seen = _stat_key(self.folder / MANIFEST)

    # ------------------------------------------------------------------ settings
    def get_setting(self, key: str, default: Any = None) -> Any:
        """Return a persisted free-form setting (e.g. the GUI's current case)."""
        return self._m["settings"].get(key, default)

    def set_setting(self, key: str, value: Any) -> None:
        """Persist a JSON-serialisable setting."""
        with self._lock:
            self._m["settings"][key] = value
            self._write_manifest()

    # ------------------------------------------------------------------ cases
    def cases(self) -> list[str]:
        """Case names in insertion order."""
        return list(self._m["cases"])

    def case_meta(self, name: str) -> dict[str, Any]:
        """A copy of the manifest entry of ``name`` (statistics, model version, timestamps)."""
        return dict(self._entry(name))

    def _entry(self, name: str) -> dict[str, Any]:
        try:
            return self._m["cases"][name]
        except KeyError:
            raise DataError(f"no case named {name!r} in project {self.folder}") from None

    def _case_dir(self, name: str) -> Path:
        return self.folder / "cases" / self._entry(name)["folder"]

    def unique_case_name(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``... whichever is not taken yet."""
        base = base.strip() or "case"
        name, i = base, 1
        while name in self._m["cases"]:
            i += 1
            name = f"{base}-{i}"
        return name

    def add_case(self, name: str, image: Any, prediction: np.ndarray,
                 probabilities: np.ndarray | None = None, model_version: str | None = None,
                 meta: dict[str, Any] | None = None) -> CaseRecord:
        """Store a new case: image copy, prediction, and a correction initialised to it.

        Parameters
        ----------
        image : ImageData or ndarray
            Channel-first ``(C, *spatial)`` image, or ``(*spatial)`` for one channel.
        prediction : ndarray
            Integer label map ``(*spatial)``.
        meta : dict, optional
            Extra JSON-serialisable information kept with the case (e.g. display settings).
        """
        pred = _compact(prediction)
        array = np.asarray(getattr(image, "array", image))
        if array.ndim == pred.ndim:
            array = array[None]
        if array.ndim != pred.ndim + 1 or array.shape[1:] != pred.shape:
            raise DataError(f"image shape {array.shape} does not match prediction {pred.shape}")
        spacing = np.asarray(getattr(image, "spacing", None) or (1.0,) * pred.ndim, float)
        affine = getattr(image, "affine", None)
        with self._lock:
            if name in self._m["cases"]:
                raise DataError(f"a case named {name!r} already exists")
            folder = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "case"
            taken = {e["folder"] for e in self._m["cases"].values()}
            stem, i = folder, 1
            while folder in taken or (self.folder / "cases" / folder).exists():
                i += 1
                folder = f"{stem}-{i}"
            cdir = self.folder / "cases" / folder
            cdir.mkdir(parents=True)
            _save_npz(cdir / "image.npz", array=array, spacing=spacing,
                      affine=None if affine is None else np.asarray(affine, float))
            prob = None if probabilities is None else np.asarray(probabilities, np.float16)
            _save_npz(cdir / "prediction.npz", labels=pred, probabilities=prob)
            _save_npz(cdir / "correction.npz", labels=pred, edited=np.zeros(pred.shape, bool))
            geometry = image.to_source() if hasattr(image, "to_source") else {}
            geometry.pop("affine", None)
            now = now_iso()
            self._m["cases"][name] = {
                "folder": folder, "source": geometry.get("path"), "image": geometry,
                "shape": list(pred.shape),
                "channels": int(array.shape[0]), "created": now, "modified": now,
                "model_version": model_version, "reviewed_slices": [], "reviewed_all": False,
                "fix_dice": 1.0, "changed_fraction": 0.0, "edited_fraction": 0.0,
                "history": [], "meta": dict(meta or {})}
            self._write_manifest()
        return self.load_case(name)

    def load_case(self, name: str) -> CaseRecord:
        """Read a case back (a damaged correction file falls back to the prediction)."""
        from ..image.io import ImageData

        entry = self._entry(name)
        cdir = self._case_dir(name)
        img = _load_npz(cdir / "image.npz")
        geo = entry.get("image") or {}
        image = ImageData(array=img["array"], spacing=tuple(float(s) for s in img["spacing"]),
                          affine=img.get("affine"), path=geo.get("path"),
                          format=geo.get("format", "tiff"), is_rgb=bool(geo.get("is_rgb")),
                          meta=dict(geo.get("meta") or {}))
        pred = _load_npz(cdir / "prediction.npz")
        try:
            corr = _load_npz(cdir / "correction.npz")
        except DataError:
            corr = {"labels": pred["labels"], "edited": np.zeros(pred["labels"].shape, bool)}
        prob = pred.get("probabilities")
        return CaseRecord(name=name, image=image, prediction=pred["labels"],
                          correction=corr["labels"], edited=corr["edited"].astype(bool),
                          reviewed_slices=list(entry["reviewed_slices"]),
                          reviewed_all=bool(entry["reviewed_all"]),
                          probabilities=None if prob is None else prob.astype(np.float32),
                          meta=dict(entry))

    def uncertainty_ranking(self) -> list[tuple[str, float]]:
        """Cases not yet reviewed, most uncertain first: ``[(name, score)]`` where ``score`` is
        the mean predictive entropy (0 = certain, 1 = p 0.5 everywhere) of the stored
        probabilities; cases stored without probabilities are left out."""
        ranking = []
        for name in self.cases():
            entry = self._entry(name)
            if entry["reviewed_all"]:
                continue
            prob = _load_npz(self._case_dir(name) / "prediction.npz").get("probabilities")
            if prob is not None:
                ranking.append((name, mean_entropy(np.asarray(prob, np.float32))))
        return sorted(ranking, key=lambda item: -item[1])

    def save_correction(self, name: str, mask: np.ndarray, edited: np.ndarray | None = None,
                        reviewed_slices: Iterable[int] | None = None) -> dict[str, float]:
        """Atomically store the corrected mask of ``name`` and update its statistics.

        The edited map accumulates: pixels that differ from the prediction, pixels flagged in
        ``edited`` (e.g. painted with the same label) and pixels already marked before.
        Returns the updated statistics (``fix_dice``, ``changed_fraction``, ``edited_fraction``).
        """
        mask = _compact(mask)
        with self._lock:
            entry = self._entry(name)
            if list(mask.shape) != entry["shape"]:
                raise DataError(f"mask shape {mask.shape} does not match case {name!r} "
                                f"{tuple(entry['shape'])}")
            cdir = self._case_dir(name)
            pred = _load_npz(cdir / "prediction.npz")["labels"]
            try:
                old_edited = _load_npz(cdir / "correction.npz")["edited"].astype(bool)
            except (DataError, KeyError):
                old_edited = np.zeros(mask.shape, bool)
            changed = mask != pred
            new_edited = old_edited | changed
            if edited is not None:
                new_edited |= np.asarray(edited, bool)
            _save_npz(cdir / "correction.npz", labels=mask, edited=new_edited)
            stats = {"fix_dice": label_dice(pred, mask),
                     "changed_fraction": float(changed.mean()) if mask.size else 0.0,
                     "edited_fraction": float(new_edited.mean()) if mask.size else 0.0}
            entry.update(stats, modified=now_iso())
            if reviewed_slices is not None:
                entry["reviewed_slices"] = sorted(set(entry["reviewed_slices"])
                                                  | {int(s) for s in reviewed_slices})
            self._write_manifest()
        return stats

    def mark_reviewed(self, name: str, slices: Sequence[int] | str = "all") -> None:
        """Record that the user checked ``slices`` (indices along axis 0) or the whole case."""
        with self._lock:
            entry = self._entry(name)
            if isinstance(slices, str):
                if slices != "all":
                    raise DataError(f"slices must be a list of indices or 'all', not {slices!r}")
                entry["reviewed_all"] = True
            else:
                n = entry["shape"][0]
                bad = [s for s in slices if not 0 <= int(s) < n]
                if bad:
                    raise DataError(f"slice index {bad[0]} outside 0..{n - 1}")
                entry["reviewed_slices"] = sorted(set(entry["reviewed_slices"]) | set(map(int, slices)))
            entry["modified"] = now_iso()
            self._write_manifest()

    def is_corrected(self, name: str) -> bool:
        """True when the user edited or reviewed any part of ``name``."""
        e = self._entry(name)
        return bool(e["edited_fraction"] > 0 or e["reviewed_all"] or e["reviewed_slices"])

    def update_prediction(self, name: str, prediction: np.ndarray,
                          probabilities: np.ndarray | None = None,
                          model_version: str | None = None, force: bool = False) -> None:
        """Replace the prediction of an uncorrected case (re-prediction by a newer model).

        The previous round's statistics move to the case history. Refused for corrected cases
        unless ``force`` (their edits would be lost).
        """
        pred = _compact(prediction)
        with self._lock:
            entry = self._entry(name)
            if list(pred.shape) != entry["shape"]:
                raise DataError(f"prediction shape {pred.shape} does not match case {name!r}")
            if self.is_corrected(name) and not force:
                raise DataError(f"case {name!r} has corrections; re-predicting would discard them")
            cdir = self._case_dir(name)
            prob = None if probabilities is None else np.asarray(probabilities, np.float16)
            _save_npz(cdir / "prediction.npz", labels=pred, probabilities=prob)
            _save_npz(cdir / "correction.npz", labels=pred, edited=np.zeros(pred.shape, bool))
            entry["history"].append({k: entry[k] for k in ("model_version", "fix_dice",
                                                           "changed_fraction", "modified")})
            entry.update(model_version=model_version, fix_dice=1.0, changed_fraction=0.0,
                         edited_fraction=0.0, reviewed_slices=[], reviewed_all=False,
                         modified=now_iso())
            self._write_manifest()


_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_VERSION_FILE = re.compile(r"v\d{3,}\.safetensors")


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    # an atomic rename gives the manifest a new inode: inode + mtime + size tell a new version
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _read_manifest(path: Path) -> dict[str, Any]:
    import json

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


def mean_entropy(prob: np.ndarray) -> float:
    """Mean normalised predictive entropy of probabilities ``(K, *spatial)`` (K=1: binary)."""
    p = np.clip(prob, 1e-6, 1 - 1e-6)
    if p.shape[0] == 1:
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    else:
        h = -(p * np.log(p)).sum(axis=0) / np.log(p.shape[0])
    return float(h.mean())
