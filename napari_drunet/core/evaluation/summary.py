"""Metrics over many cases (:mod:`napari_drunet.core.evaluation.metrics`): summary statistics and a table.

:func:`summarize` averages the results of :func:`~napari_drunet.core.evaluation.metrics.evaluate_case` with
``nanmean`` and leaves infinite Hausdorff distances out of the mean, counting them in ``n_inf``;
:func:`format_table` lays them out as plain text: one row per case and class, then mean rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import MetricInputError


def _stats(values: Sequence[float]) -> dict[str, float]:
    vals = np.asarray(values, dtype=float)
    n_inf = int(np.isinf(vals).sum())
    finite = vals[np.isfinite(vals)]
    out = {
        "mean": float(finite.mean()) if finite.size else math.nan,
        "std": float(finite.std()) if finite.size else math.nan,
        "n": int(finite.size),
    }
    if n_inf:
        out["n_inf"] = n_inf
    return out


def summarize(case_results: Sequence[Mapping]) -> dict:
    """Mean and standard deviation over cases of every metric.

    Parameters
    ----------
    case_results : sequence of dict
        Results of :func:`evaluate_case`.

    Returns
    -------
    dict
        ``{"n_cases": int, "per_class": {label: {metric: stats}}, "mean": {metric: stats},
        "dice": float}`` where ``stats = {"mean", "std", "n"}`` (population std over the ``n``
        finite values; nan and inf are left out) plus ``"n_inf"`` when some values were
        infinite. ``mean`` aggregates the per-case class means; ``dice`` is its mean Dice.
    """
    per_class: dict[int, dict[str, list[float]]] = {}
    means: dict[str, list[float]] = {}
    for case in case_results:
        for label, res in case["per_class"].items():
            for name, value in res.items():
                per_class.setdefault(label, {}).setdefault(name, []).append(value)
        for name, value in case["mean"].items():
            means.setdefault(name, []).append(value)
    out_mean = {name: _stats(v) for name, v in means.items()}
    return {
        "n_cases": len(case_results),
        "per_class": {
            label: {name: _stats(v) for name, v in per_class[label].items()}
            for label in sorted(per_class)
        },
        "mean": out_mean,
        "dice": out_mean["dice"]["mean"] if "dice" in out_mean else math.nan,
    }


def _fmt(value: float) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}"


def format_table(
    names: Sequence[str],
    case_results: Sequence[Mapping],
    metrics: Sequence[str] = ("dice", "iou", "sensitivity", "precision", "hd95"),
    label_names: Mapping[int, str] | None = None,
) -> str:
    """Plain-text table: one row per case and class, then mean rows over cases.

    Parameters
    ----------
    names : sequence of str
        Case names, one per result.
    case_results : sequence of dict
        Results of :func:`evaluate_case`.
    metrics : sequence of str
        Columns; metrics missing from a result are shown as ``-``.
    label_names : mapping, optional
        Label -> display name for the class column.

    Returns
    -------
    str
        The table (no trailing newline). Mean rows show the nan-mean over cases with infinite
        Hausdorff distances left out (their number is appended as ``(+k inf)``).
    """
    if len(names) != len(case_results):
        raise MetricInputError(f"{len(names)} names for {len(case_results)} results")
    label_names = label_names or {}

    def cls(label) -> str:
        return str(label_names.get(label, label_names.get(str(label), label)))

    header = ["case", "class", *metrics]
    rows = []
    for name, res in zip(names, case_results, strict=True):
        for label, values in res["per_class"].items():
            rows.append([str(name), cls(label), *(_fmt(values.get(m)) for m in metrics)])
        if not res["per_class"]:
            rows.append([str(name), "-", *("-" for _ in metrics)])
    summary = summarize(case_results)

    def stat_cells(stats: Mapping) -> list[str]:
        cells = []
        for m in metrics:
            s = stats.get(m)
            cell = "-" if s is None else _fmt(s["mean"])
            if s is not None and s.get("n_inf"):
                cell += f" (+{s['n_inf']} inf)"
            cells.append(cell)
        return cells

    for label, stats in summary["per_class"].items():
        rows.append(["mean", cls(label), *stat_cells(stats)])
    if len(summary["per_class"]) > 1:
        rows.append(["mean", "all", *stat_cells(summary["mean"])])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
