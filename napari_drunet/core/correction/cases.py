"""The files of one case of a correction project and what is read back from them.

``cases/<case>/image.npz`` (the image copy), ``prediction.npz`` and ``correction.npz`` are
written with :func:`save_npz` (atomic) and read with :func:`load_npz`; :class:`CaseRecord` is
what :meth:`napari_drunet.core.correction.project.Project.load_case` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_write
from ..errors import DataError

if TYPE_CHECKING:
    from ..image.data import ImageData


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` in the smallest unsigned type that holds them (:class:`DataError` for
    non-integer or negative label maps)."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"label maps must be integer arrays, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise DataError("label maps must not contain negative values")
    top = int(labels.max()) if labels.size else 0
    return labels.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32)


def save_npz(path: Path, **arrays: Any) -> None:
    """Write the given arrays (None left out) as one compressed ``.npz``, atomically."""
    with atomic_write(path) as fh:
        np.savez_compressed(fh, **{k: v for k, v in arrays.items() if v is not None})


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of one ``.npz`` (no pickles); :class:`DataError` when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read project file {path}: {exc}") from exc


@dataclass
class CaseRecord:
    """Everything stored for one case (returned by :meth:`Project.load_case`)."""

    name: str
    image: ImageData
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


def mean_entropy(prob: np.ndarray) -> float:
    """Mean normalised predictive entropy of probabilities ``(K, *spatial)`` (K=1: binary)."""
    p = np.clip(prob, 1e-6, 1 - 1e-6)
    if p.shape[0] == 1:
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    else:
        h = -(p * np.log(p)).sum(axis=0) / np.log(p.shape[0])
    return float(h.mean())
