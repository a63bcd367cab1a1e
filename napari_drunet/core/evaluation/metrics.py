"""Segmentation metrics on numpy arrays (no torch needed).

Conventions
-----------
* ``mask`` (optional, same shape as the images) restricts *every* metric to the pixels where it
  is true, e.g. the field of view of DRIVE fundus images; pixels outside do not exist for the
  metric (they are neither true nor false negatives).
* Overlap metrics from the confusion counts ``tp, fp, fn, tn``::

      dice = 2tp / (2tp + fp + fn)          (= F1)
      iou = tp / (tp + fp + fn)
      sensitivity = tp / (tp + fn)           (recall)
      specificity = tn / (tn + fp)
      precision = tp / (tp + fp)
      accuracy = (tp + tn) / n
      mcc = (tp tn - fp fn) / sqrt((tp + fp)(tp + fn)(tn + fp)(tn + fn))

  Edge cases: a ratio ``0 / 0`` is ``1.0`` when prediction and truth agree everywhere
  (``fp == fn == 0``, e.g. both empty), otherwise ``nan`` (undefined, e.g. sensitivity when the
  truth is empty but the prediction is not). MCC with a zero denominator is ``1.0`` when
  ``fp == fn == 0`` and ``0.0`` otherwise (no correlation can be measured). An empty mask
  (``n == 0``) makes every metric ``nan``. So an empty truth with an empty prediction scores 1
  everywhere and an empty truth with a non-empty prediction gives dice = iou = precision = 0,
  sensitivity = nan.
* Hausdorff distances are in physical units (``spacing`` per axis, 1.0 by default) between the
  surface pixels of the two masks (pixels of the mask with a 1-connected neighbour outside it, the
  image border counting as outside). ``percentile < 100`` gives the MONAI convention
  (``monai.metrics.compute_hausdorff_distance``): the maximum of the two *directed* percentiles
  (linear interpolation), not medpy's percentile of the pooled distances. Both masks empty: 0;
  exactly one empty: ``inf``.
* :class:`PooledMetrics` counts the pixels of all cases together ("micro" average), the way
  retinal-vessel papers report F1, Se, Sp, Acc and AUC over a test set; :func:`summarize` gives
  the per-case mean beside it. Both are exact; they differ when cases differ in size.
* :func:`summarize` averages with ``nanmean`` and leaves infinite Hausdorff distances out of the
  mean, counting them in ``n_inf``. It and :func:`format_table` (results over many cases) live in
  :mod:`napari_drunet.core.evaluation.summary` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

from ..errors import MetricInputError
from .summary import format_table, summarize

__all__ = [
    "METRIC_NAMES",
    "MetricInputError",
    "PooledMetrics",
    "confusion_counts",
    "confusion_metrics",
    "evaluate_case",
    "format_table",
    "hausdorff_distance",
    "metrics_from_counts",
    "roc_auc",
    "summarize",
]

#: metrics :func:`evaluate_case` reports per class (``auc`` only with probabilities,
#: ``hd``/``hd95`` only with ``hd=True``).
METRIC_NAMES = (
    "dice", "iou", "sensitivity", "specificity", "precision", "accuracy", "mcc", "auc", "hd", "hd95"
)  # fmt: skip


def _check_shapes(ref: np.ndarray, **arrays: np.ndarray | None) -> None:
    for name, arr in arrays.items():
        if arr is not None and arr.shape != ref.shape:
            raise MetricInputError(f"{name} shape {arr.shape} does not match {ref.shape}")


def _masked_pair(pred, truth, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Boolean ``pred``, ``truth`` (zeroed outside ``mask``) and boolean ``mask``."""
    pred, truth = (np.asarray(a).astype(bool, copy=False) for a in (pred, truth))
    _check_shapes(truth, pred=pred)
    if mask is not None:
        mask = np.asarray(mask).astype(bool, copy=False)
        _check_shapes(truth, mask=mask)
        pred, truth = pred & mask, truth & mask
    return pred, truth, mask


def confusion_counts(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> tuple[int, int, int, int]:
    """Count true/false positives/negatives of two binary masks.

    Parameters
    ----------
    pred, truth : array_like of bool
        Binary masks of equal shape (non-zero = foreground).
    mask : array_like of bool, optional
        Only pixels where ``mask`` is true are counted.

    Returns
    -------
    tuple of int
        ``(tp, fp, fn, tn)``.
    """
    pred, truth, mask = _masked_pair(pred, truth, mask)
    n = truth.size if mask is None else int(np.count_nonzero(mask))
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(truth)) - tp
    return tp, fp, fn, n - tp - fp - fn


def metrics_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Overlap metrics from confusion counts (edge cases in the module docstring)."""
    n = tp + fp + fn + tn
    names = ("dice", "iou", "sensitivity", "specificity", "precision", "accuracy", "mcc")
    if n == 0:
        return dict.fromkeys(names, math.nan)
    agree = fp == 0 and fn == 0

    def ratio(num: int, den: int) -> float:
        if den == 0:
            return 1.0 if agree else math.nan
        return num / den

    mcc_den = float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn)
    if mcc_den == 0:
        mcc = 1.0 if agree else 0.0
    else:
        mcc = (float(tp) * float(tn) - float(fp) * float(fn)) / math.sqrt(mcc_den)
    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "precision": ratio(tp, tp + fp),
        "accuracy": (tp + tn) / n,
        "mcc": mcc,
    }


def confusion_metrics(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, float]:
    """Dice, IoU, sensitivity, specificity, precision, accuracy and MCC of binary masks.

    Parameters
    ----------
    pred, truth : array_like of bool
        Binary masks of equal shape.
    mask : array_like of bool, optional
        Region where the metrics are computed.

    Returns
    -------
    dict
        Metric name -> float; edge cases (empty masks) as in the module docstring.
    """
    return metrics_from_counts(*confusion_counts(pred, truth, mask))


def roc_auc(prob: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Exact area under the ROC curve (Mann-Whitney U statistic, ties count one half).

    Parameters
    ----------
    prob : array_like of float
        Scores (higher = more likely foreground).
    truth : array_like of bool
        Binary ground truth of the same shape.
    mask : array_like of bool, optional
        Only pixels where ``mask`` is true are used.

    Returns
    -------
    float
        AUC in ``[0, 1]``; ``nan`` when ``truth`` has no positive or no negative pixel.
    """
    prob = np.asarray(prob, dtype=np.float64)
    truth = np.asarray(truth).astype(bool, copy=False)
    _check_shapes(truth, prob=prob)
    if mask is not None:
        mask = np.asarray(mask).astype(bool, copy=False)
        _check_shapes(truth, mask=mask)
        prob, truth = prob[mask], truth[mask]
    else:
        prob, truth = prob.ravel(), truth.ravel()
    if not np.isfinite(prob).all():
        raise MetricInputError("probabilities must be finite")
    n_pos = int(np.count_nonzero(truth))
    n_neg = truth.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(prob, method="average")  # float64: exact for halves up to ~2**52
    u = float(ranks[truth].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (float(n_pos) * float(n_neg))


def _surface_distances(pred, truth, spacing, mask) -> tuple[np.ndarray, np.ndarray] | float:
    """Both directed surface-distance sets, or 0.0 / inf when one or both masks are empty."""
    pred, truth, _ = _masked_pair(pred, truth, mask)
    spacing = 1.0 if spacing is None else spacing
    sp = np.asarray(spacing, dtype=float)
    if sp.ndim > 1 or sp.size not in (1, truth.ndim) or not (sp > 0).all():
        raise MetricInputError(f"spacing needs 1 or {truth.ndim} positive values, got {spacing}")
    spacing = tuple(float(s) for s in np.broadcast_to(sp, truth.ndim))
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not (has_pred and has_truth):
        return math.inf if has_pred or has_truth else 0.0
    # cropping to the union's bounding box is exact: every surface pixel lies inside it, and a
    # foreground pixel on the box border has a background neighbour outside the box anyway
    box = tuple(slice(int(ix.min()), int(ix.max()) + 1) for ix in np.nonzero(pred | truth))
    # surface = pixels with a face-connected neighbour outside the mask (border = outside)
    sp, st = (m & ~ndimage.binary_erosion(m) for m in (pred[box], truth[box]))
    d_pt = ndimage.distance_transform_edt(~st, sampling=spacing)[sp]
    d_tp = ndimage.distance_transform_edt(~sp, sampling=spacing)[st]
    return d_pt, d_tp


def _hd(distances: tuple[np.ndarray, np.ndarray] | float, percentile: float) -> float:
    if not 0 <= percentile <= 100:
        raise MetricInputError(f"percentile must be in [0, 100], got {percentile}")
    if isinstance(distances, float):
        return distances
    return float(max(np.percentile(d, percentile) for d in distances))


def hausdorff_distance(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float] | None = None,
    percentile: float = 100.0,
    mask: np.ndarray | None = None,
) -> float:
    """Symmetric (percentile) Hausdorff distance between two binary masks, 2D or 3D.

    Parameters
    ----------
    pred, truth : array_like of bool
        Binary masks of equal shape.
    spacing : float or sequence of float, optional
        Pixel size per axis (default 1.0 everywhere); the result is in these units.
    percentile : float, default 100.0
        ``100`` gives the Hausdorff distance; ``95`` gives HD95 as MONAI computes it: the maximum
        of the 95th percentiles of the two directed surface-distance sets.
    mask : array_like of bool, optional
        Both masks are restricted to this region first.

    Returns
    -------
    float
        Distance; 0 when both masks are empty, ``inf`` when exactly one is.
    """
    _hd(0.0, percentile)  # validate before the expensive part
    return _hd(_surface_distances(pred, truth, spacing, mask), percentile)


def evaluate_case(
    pred: np.ndarray,
    truth: np.ndarray,
    prob: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    labels: Sequence[int] | None = None,
    hd: bool = True,
) -> dict:
    """All metrics of one case, per foreground class and averaged over classes.

    Parameters
    ----------
    pred, truth : array_like of int
        Label maps ``(*spatial)`` of class indices (0 = background).
    prob : array_like of float, optional
        Probabilities ``(K, *spatial)``: ``K == 1`` is the foreground probability of a binary
        model (only label 1 gets an AUC), otherwise ``prob[c]`` is the probability of class
        ``c``. A ``(*spatial)`` array is read as ``K == 1``.
    mask : array_like of bool, optional
        Evaluation region (e.g. a field of view).
    spacing : sequence of float, optional
        Pixel size per axis for the Hausdorff distances.
    labels : sequence of int, optional
        Classes to evaluate; default: the non-zero labels present in ``pred`` or ``truth``.
    hd : bool, default True
        Compute ``hd`` and ``hd95`` (the slowest metrics).

    Returns
    -------
    dict
        ``{"per_class": {label: {metric: value}}, "mean": {metric: value}}``; metrics are those
        of :func:`confusion_metrics` plus ``auc`` (with ``prob``) and ``hd``, ``hd95`` (with
        ``hd``). ``mean`` is the nan-mean over classes (for ``hd``/``hd95``: ``inf`` when any
        class is infinite).
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    _check_shapes(truth, pred=pred)
    if mask is not None:
        mask = np.asarray(mask).astype(bool, copy=False)
        _check_shapes(truth, mask=mask)
    if prob is not None:
        prob = np.asarray(prob, dtype=np.float32)
        if prob.shape == truth.shape:
            prob = prob[None]
        if prob.shape[1:] != truth.shape:
            raise MetricInputError(
                f"probabilities shape {prob.shape} does not match labels {truth.shape}"
            )
    if labels is None:
        present = np.union1d(np.unique(pred), np.unique(truth))
        labels = [int(v) for v in present if v != 0]
    per_class: dict[int, dict[str, float]] = {}
    for label in labels:
        label = int(label)
        p, t = pred == label, truth == label
        res = confusion_metrics(p, t, mask)
        if prob is not None:
            k = prob.shape[0]
            if k == 1 and label != 1:
                raise MetricInputError(f"a 1-channel probability map has no class {label}")
            if k > 1 and not 0 <= label < k:
                raise MetricInputError(f"probabilities have {k} classes, no class {label}")
            res["auc"] = roc_auc(prob[0] if k == 1 else prob[label], t, mask)
        if hd:
            distances = _surface_distances(p, t, spacing, mask)
            res["hd"], res["hd95"] = _hd(distances, 100.0), _hd(distances, 95.0)
        per_class[label] = res
    mean: dict[str, float] = {}
    for name in METRIC_NAMES:
        vals = np.array([r[name] for r in per_class.values() if name in r], dtype=float)
        if vals.size == 0:
            continue
        if np.isinf(vals).any():
            mean[name] = math.inf
        elif np.isnan(vals).all():
            mean[name] = math.nan
        else:
            mean[name] = float(np.nanmean(vals))
    return {"per_class": per_class, "mean": mean}


class PooledMetrics:
    """Confusion counts of all cases' pixels together, added one case at a time.

    Examples
    --------
    >>> pooled = PooledMetrics()
    >>> pooled.add(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    >>> pooled.add(np.array([0, 0]), np.array([1, 0]))
    >>> round(pooled.result()[1]["dice"], 3)  # 2*1 / (2*1 + 1 + 1)
    0.5
    """

    def __init__(self) -> None:
        self.n = self.cases = 0
        self.counts: dict[int, list[int]] = {}  # label -> [tp, fp, fn]
        self._scores: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None,
            prob: np.ndarray | None = None) -> None:
        """Add one case: label maps, optional region ``mask`` and, for the AUC of a binary
        model, its foreground probability ``prob`` (``(*spatial)`` or ``(1, *spatial)``)."""
        pred, truth = np.asarray(pred), np.asarray(truth)
        _check_shapes(truth, pred=pred)
        shape = truth.shape
        if mask is not None:
            mask = np.asarray(mask).astype(bool, copy=False)
            _check_shapes(truth, mask=mask)
            pred, truth = pred[mask], truth[mask]
        self.n, self.cases = self.n + truth.size, self.cases + 1
        for label in np.union1d(np.unique(pred), np.unique(truth)):
            if label != 0:
                tp, fp, fn, _ = confusion_counts(pred == label, truth == label)
                c = self.counts.setdefault(int(label), [0, 0, 0])
                c[0], c[1], c[2] = c[0] + tp, c[1] + fp, c[2] + fn
        if prob is not None:
            prob = np.asarray(prob, np.float32)
            if prob.shape == (1, *shape):
                prob = prob[0]
            if prob.shape == shape:  # multi-channel maps: no pooled AUC
                prob = prob[mask] if mask is not None else prob
                self._scores.append((prob.ravel(), truth.ravel() == 1))

    def result(self) -> dict[int, dict[str, float]]:
        """``{label: metrics}`` of :func:`metrics_from_counts`, plus ``auc`` for label 1 when
        every case came with a 1-channel probability map."""
        out = {label: metrics_from_counts(tp, fp, fn, self.n - tp - fp - fn)
               for label, (tp, fp, fn) in sorted(self.counts.items())}
        if 1 in out and self._scores and len(self._scores) == self.cases:
            out[1]["auc"] = roc_auc(np.concatenate([s for s, _ in self._scores]),
                                    np.concatenate([t for _, t in self._scores]))
        return out
