"""The binary threshold with the best Dice over labelled cases pooled (numpy only).

Used where a threshold is chosen on labelled cases: a correction round and ``drunet finetune``
(:mod:`napari_drunet.core.correction.threshold`) and the validation of a training run whose
threshold is re-chosen afterwards (:mod:`napari_drunet.core.train.validation`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["GRID", "pooled_best_threshold"]

#: Candidate thresholds: 0.05, 0.06, ..., 0.95 (the extremes only fit degenerate cases).
GRID = np.round(np.arange(5, 96) / 100.0, 2)


def _counts(prob: np.ndarray, truth: np.ndarray, weight: np.ndarray | None,
            edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foreground / background pixel counts per threshold bin (``weight > 0`` pixels only)."""
    sel = np.ones(truth.shape, bool) if weight is None else np.asarray(weight) > 0
    p, t = np.asarray(prob, np.float64)[sel], np.asarray(truth)[sel] > 0
    return np.histogram(p[t], edges)[0], np.histogram(p[~t], edges)[0]


def pooled_best_threshold(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                          weights: Sequence[np.ndarray | None] | None = None,
                          grid: np.ndarray = GRID) -> tuple[float, float]:
    """Threshold of ``grid`` with the best Dice over all pixels of all cases pooled.

    Parameters
    ----------
    probs : sequence of arrays
        Foreground probabilities per case (``(*spatial)``).
    truths : sequence of arrays
        Label maps (foreground = ``> 0``), same shapes.
    weights : sequence of arrays or None, optional
        Pixels to count (``> 0``) per case; None counts every pixel.
    grid : array
        Increasing candidate thresholds in (0, 1); a pixel is foreground if ``p >= t``.

    Returns
    -------
    (threshold, dice)
        The first best threshold of the grid and its pooled Dice.
    """
    grid = np.asarray(grid, np.float64)
    edges = np.concatenate([[0.0], grid, [np.nextafter(1.0, 2.0)]])
    fg = np.zeros(len(edges) - 1, np.int64)
    bg = np.zeros_like(fg)
    for i, (prob, truth) in enumerate(zip(probs, truths, strict=True)):
        f, b = _counts(prob, truth, None if weights is None else weights[i], edges)
        fg += f
        bg += b
    # pixels called foreground at grid[j] = those in bins j+1 and above
    tp = np.cumsum(fg[::-1])[::-1][1:]
    fp = np.cumsum(bg[::-1])[::-1][1:]
    positives = fg.sum()
    denom = tp + fp + positives
    dice = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 1.0)
    best = int(np.argmax(dice))
    return float(grid[best]), float(dice[best])
