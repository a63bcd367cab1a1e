"""Model versions of a correction project (``project.versions``, a :class:`Versions`).

Versions are files ``models/vNNN.safetensors`` that are never overwritten; the manifest records
parent, metrics, training data and which version is active. Promotion is guarded by
:meth:`Versions.compare` on held-back corrected cases.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError
from ..progress import Progress, mapped, run_to_end
from .store import ManifestStore, now_iso

if TYPE_CHECKING:
    from ..models.model import Model
    from .cases import CaseRecord

_VERSION_RE = re.compile(r"^v(\d{3,})\.safetensors$")


def label_dice(pred: np.ndarray, truth: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Dice between two label maps (mean over foreground classes present in either; 1.0 if none).

    ``weight`` (bool, same shape) restricts the comparison to the pixels where it is true.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise DataError(f"label shapes differ: {pred.shape} vs {truth.shape}")
    if weight is not None:
        sel = np.asarray(weight, dtype=bool)
        pred, truth = pred[sel], truth[sel]
    classes = np.union1d(np.unique(pred), np.unique(truth))
    classes = classes[classes != 0]
    if classes.size == 0:
        return 1.0
    scores = []
    for c in classes:
        p, t = pred == c, truth == c
        scores.append(2.0 * np.count_nonzero(p & t) / (np.count_nonzero(p) + np.count_nonzero(t)))
    return float(np.mean(scores))


def _within(gen: Generator[Progress, None, Any], step: int, total: int, what: str
            ) -> Generator[Progress, None, Any]:
    """Re-label an inner job's progress as one step of an outer job."""
    return (yield from mapped(gen, lambda rec: Progress(step, total,
                                                        f"{what}: {rec.message}".rstrip(": "))))


class Versions:
    """The model versions of one project: files ``models/vNNN.safetensors`` and their
    manifest entries (``project.versions``).

    Parameters
    ----------
    store : ManifestStore
        The project's manifest.
    load_case : callable
        ``load_case(name)`` returns a stored case (``.image``, ``.correction``); the
        comparison predicts on it.
    """

    def __init__(self, store: ManifestStore,
                 load_case: Callable[[str], CaseRecord]) -> None:
        self._store = store
        self._load_case = load_case

    @property
    def folder(self) -> Path:
        """The folder holding the version files."""
        return self._store.folder / "models"

    def entries(self) -> list[dict[str, Any]]:
        """Model versions (id, file, parent, created, metrics, data, source), oldest first."""
        return [dict(v) for v in self._store.manifest["versions"]]

    def __call__(self) -> list[dict[str, Any]]:
        """Deprecated: ``project.versions()`` is :meth:`entries`."""
        warnings.warn("project.versions() is deprecated; use project.versions.entries()",
                      DeprecationWarning, stacklevel=2)
        return self.entries()

    def get(self, version_id: str) -> dict[str, Any]:
        """The manifest entry of one version (:class:`DataError` when there is none)."""
        for v in self._store.manifest["versions"]:
            if v["id"] == version_id:
                return dict(v)
        raise DataError(f"no model version {version_id!r} in project {self._store.folder}")

    def path(self, version_id: str) -> Path:
        """Path of the weights file of ``version_id``."""
        return self.folder / self.get(version_id)["file"]

    @property
    def active(self) -> str | None:
        """Id of the version used for prediction (None before any is added)."""
        return self._store.manifest["active_version"]

    def add(self, model: Model, parent: str | None = None,
            metrics: dict[str, Any] | None = None, data: Sequence[str] = (),
            source: str | None = None, activate: bool | None = None) -> str:
        """Save ``model`` as a new version ``vNNN`` (never overwriting a file); return its id.

        ``activate`` defaults to True for the first version only; later versions become active
        through :meth:`set_active` after the regression check. The id is allocated under the
        project lock, so two processes adding versions get different ones.
        """
        from ..atomic import atomic_path

        if parent is not None:
            self.get(parent)
        with self._store.edit() as m:
            used = [int(v["id"][1:]) for v in m["versions"]]
            used += [int(found.group(1)) for p in self.folder.glob("v*.safetensors")
                     if (found := _VERSION_RE.match(p.name))]
            vid = f"v{max(used, default=0) + 1:03d}"
            fname = f"{vid}.safetensors"
            created = now_iso()
            parent_sha = None
            if parent is not None:
                from ..models.checkpoint import file_sha256

                parent_sha = file_sha256(self.path(parent))
            provenance = {"created": created, "parent": parent_sha, "parent_name": parent,
                          "data": list(data), "command": "napari-drunet project",
                          "project_version": vid, "source": source}
            with atomic_path(self.folder / fname) as tmp:
                model.save(tmp, provenance=provenance, metrics=dict(metrics or {}))
            m["versions"].append({"id": vid, "file": fname, "parent": parent,
                                  "created": created, "metrics": dict(metrics or {}),
                                  "data": list(data), "source": source})
            if activate or (activate is None and m["active_version"] is None):
                m["active_version"] = vid
        return vid

    def set_active(self, version_id: str) -> None:
        """Make ``version_id`` the active model (revert = ``set_active(parent)``)."""
        self.get(version_id)
        with self._store.edit() as m:
            m["active_version"] = version_id

    def load(self, version_id: str, device: str = "auto") -> Model:
        """Load the :class:`~napari_drunet.core.models.model.Model` of one version."""
        from ..models.model import load_model

        return load_model(self.path(version_id), device)

    def load_active(self, device: str = "auto") -> Model:
        """Load the active version (raises ``DataError`` when the project has none)."""
        if self.active is None:
            raise DataError("the project has no model version yet")
        return self.load(self.active, device)

    def compare_iter(self, new: Model | str, old: Model | str,
                     cases: Sequence[str] | None = None, device: str = "auto",
                     tolerance: float = 0.005, **predict_opts: Any
                     ) -> Generator[Progress, None, dict[str, Any]]:
        """Dice of two versions on held-back corrected cases (progress generator).

        ``new`` / ``old`` are version ids or loaded models; ``cases`` defaults to the
        project's held-back cases. Promotion is recommended only if the new mean Dice is not
        lower than the old one by more than ``tolerance``; with no held-back case the
        recommendation is ``None`` (cannot tell).
        """
        names = list(self._store.manifest["holdout"] if cases is None else cases)
        models = {}
        for key, m in (("new", new), ("old", old)):
            models[key] = self.load(m, device) if isinstance(m, str) else m
        per_case: dict[str, dict[str, float]] = {}
        total = 2 * len(names)
        step = 0
        for name in names:
            rec = self._load_case(name)
            per_case[name] = {}
            for key, model in models.items():
                pred = yield from _within(model.predict_iter(rec.image, **predict_opts), step,
                                          total, f"{key} version on {name}")
                per_case[name][key] = label_dice(pred.mask, rec.correction)
                step += 1
                yield Progress(step, total, f"compared {key} version on {name}")
        result: dict[str, Any] = {"cases": per_case, "new": None, "old": None, "recommend": None,
                                  "reason": "no held-back corrected case to compare on"}
        if names:
            result["new"] = float(np.mean([d["new"] for d in per_case.values()]))
            result["old"] = float(np.mean([d["old"] for d in per_case.values()]))
            result["recommend"] = bool(result["new"] >= result["old"] - tolerance)
            verdict = "not worse" if result["recommend"] else "worse"
            result["reason"] = (f"new {result['new']:.3f} vs previous {result['old']:.3f} Dice on "
                                f"{len(names)} held-back case(s): {verdict}")
        return result

    def compare(self, new: Model | str, old: Model | str, cases: Sequence[str] | None = None,
                **kw: Any) -> dict[str, Any]:
        """Run :meth:`compare_iter` to the end."""
        return run_to_end(self.compare_iter(new, old, cases, **kw))
