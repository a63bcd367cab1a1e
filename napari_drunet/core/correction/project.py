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

A :class:`Project` is composed of parts that share one
:class:`~napari_drunet.core.correction.store.ManifestStore` (the only holder of the manifest):
the cases are its own methods, ``project.versions`` is a
:class:`~napari_drunet.core.correction.versions.Versions` (model versions) and
``project.feedback`` a :class:`~napari_drunet.core.correction.feedback.Feedback` (what the
corrections feed back into training: training / replay cases, hold-out split, fix statistics).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError
from .cases import CaseRecord, compact_labels, load_npz, mean_entropy, save_npz
from .feedback import Feedback
from .store import MANIFEST, SCHEMA_VERSION, ManifestStore, is_corrected, now_iso
from .versions import Versions, label_dice

if TYPE_CHECKING:
    from ..image.data import ImageData
    from ..models.model import Model
    from ..progress import Progress
    from ..train.dataset import Case

__all__ = ["MANIFEST", "SCHEMA_VERSION", "CaseRecord", "Project", "label_dice", "mean_entropy"]


class Project:
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

    def __init__(self, store: ManifestStore):
        self.folder = store.folder
        self.store = store
        self.versions = Versions(store, self.load_case)
        self.feedback = Feedback(store, self.load_case)

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
        return cls(ManifestStore.create(folder))

    @classmethod
    def open(cls, folder: str | Path) -> Project:
        """Open an existing project (temporary files left by a crash are ignored)."""
        folder = Path(folder).expanduser()
        return cls(ManifestStore.open(folder))

    # ------------------------------------------------------------------ settings
    def get_setting(self, key: str, default: Any = None) -> Any:
        """Return a persisted free-form setting (e.g. the GUI's current case)."""
        return self.store.manifest["settings"].get(key, default)

    def set_setting(self, key: str, value: Any) -> None:
        """Persist a JSON-serialisable setting."""
        with self.store.edit() as m:
            m["settings"][key] = value

    # ------------------------------------------------------------------ cases
    def cases(self) -> list[str]:
        """Case names in insertion order."""
        return list(self.store.manifest["cases"])

    def case_meta(self, name: str) -> dict[str, Any]:
        """A copy of the manifest entry of ``name`` (statistics, model version, timestamps)."""
        return dict(self._entry(name))

    def _entry(self, name: str) -> dict[str, Any]:
        try:
            return self.store.manifest["cases"][name]
        except KeyError:
            raise DataError(f"no case named {name!r} in project {self.folder}") from None

    def _case_dir(self, name: str) -> Path:
        return self.folder / "cases" / self._entry(name)["folder"]

    def unique_case_name(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``... whichever is not taken yet."""
        base = base.strip() or "case"
        name, i = base, 1
        while name in self.store.manifest["cases"]:
            i += 1
            name = f"{base}-{i}"
        return name

    def add_case(self, name: str, image: ImageData | np.ndarray, prediction: np.ndarray,
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
        pred = compact_labels(prediction)
        array = np.asarray(getattr(image, "array", image))
        if array.ndim == pred.ndim:
            array = array[None]
        if array.ndim != pred.ndim + 1 or array.shape[1:] != pred.shape:
            raise DataError(f"image shape {array.shape} does not match prediction {pred.shape}")
        spacing = np.asarray(getattr(image, "spacing", None) or (1.0,) * pred.ndim, float)
        affine = getattr(image, "affine", None)
        with self.store.edit() as m:
            if name in m["cases"]:
                raise DataError(f"a case named {name!r} already exists")
            folder = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "case"
            taken = {e["folder"] for e in m["cases"].values()}
            stem, i = folder, 1
            while folder in taken or (self.folder / "cases" / folder).exists():
                i += 1
                folder = f"{stem}-{i}"
            cdir = self.folder / "cases" / folder
            cdir.mkdir(parents=True)
            save_npz(cdir / "image.npz", array=array, spacing=spacing,
                      affine=None if affine is None else np.asarray(affine, float))
            prob = None if probabilities is None else np.asarray(probabilities, np.float16)
            save_npz(cdir / "prediction.npz", labels=pred, probabilities=prob)
            save_npz(cdir / "correction.npz", labels=pred, edited=np.zeros(pred.shape, bool))
            geometry = image.to_source() if hasattr(image, "to_source") else {}
            geometry.pop("affine", None)
            now = now_iso()
            m["cases"][name] = {
                "folder": folder, "source": geometry.get("path"), "image": geometry,
                "shape": list(pred.shape),
                "channels": int(array.shape[0]), "created": now, "modified": now,
                "model_version": model_version, "reviewed_slices": [], "reviewed_all": False,
                "fix_dice": 1.0, "changed_fraction": 0.0, "edited_fraction": 0.0,
                "history": [], "meta": dict(meta or {})}
        return self.load_case(name)

    def load_case(self, name: str) -> CaseRecord:
        """Read a case back (a damaged correction file falls back to the prediction)."""
        from ..image.io import ImageData

        entry = self._entry(name)
        cdir = self._case_dir(name)
        img = load_npz(cdir / "image.npz")
        geo = entry.get("image") or {}
        image = ImageData(array=img["array"], spacing=tuple(float(s) for s in img["spacing"]),
                          affine=img.get("affine"), path=geo.get("path"),
                          format=geo.get("format", "tiff"), is_rgb=bool(geo.get("is_rgb")),
                          meta=dict(geo.get("meta") or {}))
        pred = load_npz(cdir / "prediction.npz")
        try:
            corr = load_npz(cdir / "correction.npz")
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
            prob = load_npz(self._case_dir(name) / "prediction.npz").get("probabilities")
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
        mask = compact_labels(mask)
        with self.store.edit():
            entry = self._entry(name)
            if list(mask.shape) != entry["shape"]:
                raise DataError(f"mask shape {mask.shape} does not match case {name!r} "
                                f"{tuple(entry['shape'])}")
            cdir = self._case_dir(name)
            pred = load_npz(cdir / "prediction.npz")["labels"]
            try:
                old_edited = load_npz(cdir / "correction.npz")["edited"].astype(bool)
            except (DataError, KeyError):
                old_edited = np.zeros(mask.shape, bool)
            changed = mask != pred
            new_edited = old_edited | changed
            if edited is not None:
                new_edited |= np.asarray(edited, bool)
            save_npz(cdir / "correction.npz", labels=mask, edited=new_edited)
            stats = {"fix_dice": label_dice(pred, mask),
                     "changed_fraction": float(changed.mean()) if mask.size else 0.0,
                     "edited_fraction": float(new_edited.mean()) if mask.size else 0.0}
            entry.update(stats, modified=now_iso())
            if reviewed_slices is not None:
                entry["reviewed_slices"] = sorted(set(entry["reviewed_slices"])
                                                  | {int(s) for s in reviewed_slices})
        return stats

    def mark_reviewed(self, name: str, slices: Sequence[int] | str = "all") -> None:
        """Record that the user checked ``slices`` (indices along axis 0) or the whole case."""
        with self.store.edit():
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

    def is_corrected(self, name: str) -> bool:
        """True when the user edited or reviewed any part of ``name``."""
        return is_corrected(self._entry(name))

    def update_prediction(self, name: str, prediction: np.ndarray,
                          probabilities: np.ndarray | None = None,
                          model_version: str | None = None, force: bool = False) -> None:
        """Replace the prediction of an uncorrected case (re-prediction by a newer model).

        The previous round's statistics move to the case history. Refused for corrected cases
        unless ``force`` (their edits would be lost).
        """
        pred = compact_labels(prediction)
        with self.store.edit():
            entry = self._entry(name)
            if list(pred.shape) != entry["shape"]:
                raise DataError(f"prediction shape {pred.shape} does not match case {name!r}")
            if self.is_corrected(name) and not force:
                raise DataError(f"case {name!r} has corrections; re-predicting would discard them")
            cdir = self._case_dir(name)
            prob = None if probabilities is None else np.asarray(probabilities, np.float16)
            save_npz(cdir / "prediction.npz", labels=pred, probabilities=prob)
            save_npz(cdir / "correction.npz", labels=pred, edited=np.zeros(pred.shape, bool))
            entry["history"].append({k: entry[k] for k in ("model_version", "fix_dice",
                                                           "changed_fraction", "modified")})
            entry.update(model_version=model_version, fix_dice=1.0, changed_fraction=0.0,
                         edited_fraction=0.0, reviewed_slices=[], reviewed_all=False,
                         modified=now_iso())

    # ----------------------------------------------- deprecated names (before the composition)
    @property
    def active_version(self) -> str | None:
        """Deprecated: ``project.versions.active``."""
        _deprecated("active_version", "versions.active")
        return self.versions.active

    def version(self, version_id: str) -> dict[str, Any]:
        """Deprecated: ``project.versions.get(version_id)``."""
        _deprecated("version()", "versions.get()")
        return self.versions.get(version_id)

    def version_path(self, version_id: str) -> Path:
        """Deprecated: ``project.versions.path(version_id)``."""
        _deprecated("version_path()", "versions.path()")
        return self.versions.path(version_id)

    def add_model_version(self, model: Model, *args: Any, **kw: Any) -> str:
        """Deprecated: ``project.versions.add(model, ...)``."""
        _deprecated("add_model_version()", "versions.add()")
        return self.versions.add(model, *args, **kw)

    def set_active(self, version_id: str) -> None:
        """Deprecated: ``project.versions.set_active(version_id)``."""
        _deprecated("set_active()", "versions.set_active()")
        self.versions.set_active(version_id)

    def load_version(self, version_id: str, device: str = "auto") -> Model:
        """Deprecated: ``project.versions.load(version_id, device)``."""
        _deprecated("load_version()", "versions.load()")
        return self.versions.load(version_id, device)

    def load_active_model(self, device: str = "auto") -> Model:
        """Deprecated: ``project.versions.load_active(device)``."""
        _deprecated("load_active_model()", "versions.load_active()")
        return self.versions.load_active(device)

    def compare_versions_iter(self, *args: Any, **kw: Any
                              ) -> Generator[Progress, None, dict[str, Any]]:
        """Deprecated: ``project.versions.compare_iter(...)``."""
        _deprecated("compare_versions_iter()", "versions.compare_iter()")
        return self.versions.compare_iter(*args, **kw)

    def compare_versions(self, *args: Any, **kw: Any) -> dict[str, Any]:
        """Deprecated: ``project.versions.compare(...)``."""
        _deprecated("compare_versions()", "versions.compare()")
        return self.versions.compare(*args, **kw)

    def corrected_cases(self, *args: Any, **kw: Any) -> list[Case]:
        """Deprecated: ``project.feedback.corrected_cases(...)``."""
        _deprecated("corrected_cases()", "feedback.corrected_cases()")
        return self.feedback.corrected_cases(*args, **kw)

    def replay_cases(self, limit: int = 8) -> list[Case]:
        """Deprecated: ``project.feedback.replay_cases(limit)``."""
        _deprecated("replay_cases()", "feedback.replay_cases()")
        return self.feedback.replay_cases(limit)

    def uncorrected_cases(self) -> list[str]:
        """Deprecated: ``project.feedback.uncorrected_cases()``."""
        _deprecated("uncorrected_cases()", "feedback.uncorrected_cases()")
        return self.feedback.uncorrected_cases()

    def fix_stats(self) -> dict[str, list[dict[str, Any]]]:
        """Deprecated: ``project.feedback.fix_stats()``."""
        _deprecated("fix_stats()", "feedback.fix_stats()")
        return self.feedback.fix_stats()

    def split_holdout(self, k: int = 1, seed: int = 0) -> tuple[list[str], list[str]]:
        """Deprecated: ``project.feedback.split_holdout(k, seed)``."""
        _deprecated("split_holdout()", "feedback.split_holdout()")
        return self.feedback.split_holdout(k, seed)

    @property
    def holdout(self) -> list[str]:
        """Deprecated: ``project.feedback.holdout``."""
        _deprecated("holdout", "feedback.holdout")
        return self.feedback.holdout


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"Project.{old} is deprecated; use project.{new}", DeprecationWarning,
                  stacklevel=3)
