"""Bring a volume to the axis order a 3D model was trained in, and the prediction back.

A 3D network learns its anatomy in the axis order of its training volumes. Fed the same scan
with two axes swapped -- a sagittal acquisition stored in its own order, as DICOM converters
write it, against the MSD crops' RAS order -- the packaged ``hippocampus`` model finds almost
nothing (validation Dice 0.885 -> 0.03-0.34 for the five other orders). Flips hardly matter
(training flips every axis: 0.883-0.885), the order of the axes does.

Two ways to find the order, used in this order:

* **Header** -- models record the orientation of their training volumes
  (``meta["preprocess"]["orientation"]``, nibabel axis codes of the voxel axes such as
  ``"RAS"``). A volume with an affine (NIfTI) is transposed and flipped to that orientation.
* **Search** -- for volumes without one (TIFF stacks, arrays) and models that ask for it
  (``meta["preprocess"]["axis_search"]``), the six axis orders are predicted and the one with
  the most confident foreground kept (:func:`foreground_score`: the sum, over the voxels
  predicted as foreground, of the predicted class's probability). On the 26 validation volumes
  of the hippocampus model the stored order won every time, by a factor of 1.48 or more.

Arrays here are channel-first ``(C, *spatial)`` with the spatial axes in the reverse of
nibabel's voxel order (``(Z, Y, X)``, as :func:`~napari_drunet.core.image.io.read_image` returns them).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..progress import Progress, relay, run_to_end
from .tiling import network_dims

if TYPE_CHECKING:
    from torch import nn

    from .config import InferenceConfig

#: the orders tried by the search: every permutation of the three spatial axes
AXIS_ORDERS: tuple[tuple[int, int, int], ...] = tuple(itertools.permutations(range(3)))
#: ``axis_order`` choices: ``"auto"`` (header, else search when the model asks for it),
#: ``"search"`` (always search, 3D models), ``"keep"`` (use the array as it is)
AXIS_MODES = ("auto", "search", "keep")
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


@dataclass(frozen=True)
class AxisOrder:
    """Spatial axis order of a ``(C, *spatial)`` array: axis ``i`` of the result is axis
    ``order[i]`` of the input, then flipped when ``i`` is in ``flips``. ``apply`` transforms
    the network input, ``restore`` brings probabilities ``(K, *spatial)`` back."""

    order: tuple[int, ...] = (0, 1, 2)
    flips: tuple[int, ...] = ()
    reason: str = ""

    @property
    def active(self) -> bool:
        return bool(self.flips) or self.order != tuple(range(len(self.order)))

    def apply(self, arr: np.ndarray) -> np.ndarray:
        if not self.active:
            return arr
        out = np.transpose(arr, (0, *(a + 1 for a in self.order)))
        if self.flips:
            out = np.flip(out, [a + 1 for a in self.flips])
        return np.ascontiguousarray(out)

    def apply_spatial(self, arr: np.ndarray) -> np.ndarray:
        """Transform a map without a channel axis (label, mask, weight)."""
        return arr if not self.active else self.apply(np.asarray(arr)[None])[0]

    def restore(self, prob: np.ndarray) -> np.ndarray:
        if not self.active:
            return prob
        if self.flips:
            prob = np.flip(prob, [a + 1 for a in self.flips])
        back = np.argsort(self.order)
        return np.ascontiguousarray(np.transpose(prob, (0, *(int(a) + 1 for a in back))))


def array_codes(affine: np.ndarray) -> str | None:
    """Axis codes (e.g. ``"SAR"``) of a ``(Z, Y, X)`` array read from a file with ``affine``;
    ``None`` when the affine does not give one direction per axis (degenerate)."""
    import nibabel as nib

    codes = nib.aff2axcodes(np.asarray(affine, np.float64))
    return None if None in codes else "".join(reversed(codes))


def from_header(affine: np.ndarray, orientation: str) -> AxisOrder:
    """The :class:`AxisOrder` taking a ``(Z, Y, X)`` array with ``affine`` to a model trained on
    volumes whose voxel axes have the codes ``orientation`` (nibabel order, e.g. ``"RAS"``)."""
    want = "".join(reversed(str(orientation).upper()))
    if len(want) != 3 or any(c not in _OPPOSITE for c in want) or \
            len({frozenset((c, _OPPOSITE[c])) for c in want}) != 3:
        raise InputError(f"model orientation {orientation!r} is not three axis codes such as "
                         "'RAS'")
    have = array_codes(affine)
    if have is None:
        return AxisOrder()
    order, flips = [], []
    for i, code in enumerate(want):
        j = have.find(code)
        if j < 0:
            j = have.find(_OPPOSITE[code])
            flips.append(i)
        order.append(j)
    plan = AxisOrder(tuple(order), tuple(flips))
    if plan.active:
        return dataclasses.replace(plan, reason=(
            f"volume reoriented from {''.join(reversed(have))} to the model's {orientation} "
            "(from the file header)"))
    return plan


def foreground_score(prob: np.ndarray, threshold: float = 0.5) -> float:
    """Confident foreground of probabilities ``(K, *spatial)``: the sum of the predicted
    class's probability over the voxels predicted as foreground (``K == 1``: ``p >=
    threshold``; else arg-max > 0)."""
    if prob.shape[0] == 1:
        p = prob[0]
        return float(p[p >= threshold].sum(dtype=np.float64))
    fg = np.argmax(prob, axis=0) > 0
    return float(prob.max(axis=0)[fg].sum(dtype=np.float64))


def search_axis_order(run: Callable[[np.ndarray], Generator[Progress, None, np.ndarray]],
                      arr: np.ndarray, threshold: float = 0.5,
                      ) -> Generator[Progress, None, tuple[AxisOrder, np.ndarray, list[float]]]:
    """Predict ``arr`` ``(C, Z, Y, X)`` in each of :data:`AXIS_ORDERS` with ``run`` (a
    prediction generator such as :func:`~napari_drunet.core.infer.predict.predict_iter` bound to a
    network) and keep the order with the highest :func:`foreground_score`.

    Returns ``(order, probabilities in that order, scores in AXIS_ORDERS order)``; ties keep
    the earlier order, so a volume without any foreground stays as it is.
    """
    best: tuple[AxisOrder, np.ndarray] | None = None
    scores: list[float] = []
    n = len(AXIS_ORDERS)
    for i, order in enumerate(AXIS_ORDERS):
        plan = AxisOrder(order)
        prob = yield from relay(run(plan.apply(arr)), i, n, f"axis order {i + 1}/{n}")
        scores.append(foreground_score(prob, threshold))
        if best is None or scores[-1] > max(scores[:-1]):
            best = (plan, prob)
    assert best is not None
    plan = best[0]
    if plan.active:
        plan = dataclasses.replace(plan, reason=(
            f"volume axes taken in the order {plan.order}: the model finds the structure best "
            "that way (no orientation in the file)"))
    return plan, best[1], scores


def plan_axis_order(network: nn.Module, arr: np.ndarray, cfg: InferenceConfig, mode: str = "auto",
                    preprocess: dict | None = None, affine: np.ndarray | None = None,
                    info: dict | None = None,
                    ) -> Generator[Progress, None, tuple[AxisOrder, np.ndarray | None]]:
    """The axis order to predict ``arr`` (normalised, at the model's scale) in.

    Returns ``(order, probabilities)``: the probabilities (in that order) are the search's,
    usable as the final prediction unless ``cfg`` asks for TTA or MC dropout; ``None`` when
    there was no search or they are not usable. ``info`` receives ``axis_order`` and, when the
    volume is transformed, a warning.
    """
    from .predict import predict_iter

    if mode not in AXIS_MODES:
        raise InputError(f"axis_order must be one of {', '.join(AXIS_MODES)}; got {mode!r}")
    pre = preprocess or {}
    plan, prob = AxisOrder(tuple(range(arr.ndim - 1))), None
    if network_dims(network) == 3 and arr.ndim == 4 and mode != "keep":
        if mode == "auto" and affine is not None and pre.get("orientation"):
            plan = from_header(affine, str(pre["orientation"]))
        elif mode == "search" or pre.get("axis_search"):
            plain = dataclasses.replace(cfg, tta=False, mc_dropout=False)
            runs: list[dict] = []  # run details of each pass

            def run(x: np.ndarray) -> Generator[Progress, None, np.ndarray]:
                runs.append({"warnings": [] if info is None else info.setdefault("warnings", [])})
                return predict_iter(network, x, plain, runs[-1])

            plan, prob, scores = yield from search_axis_order(run, arr, cfg.threshold)
            if info is not None:
                info.update({k: v for k, v in runs[-1].items() if k != "warnings"})
                info["seconds"] = sum(r.get("seconds", 0.0) for r in runs)
                info["axis_scores"] = [round(s, 2) for s in scores]
    if info is not None and plan.active:
        info["axis_order"] = {"order": list(plan.order), "flips": list(plan.flips)}
        info.setdefault("warnings", []).append(plan.reason)
    return plan, (None if cfg.tta or cfg.mc_dropout else prob)


def find_axis_order(network: nn.Module, arr: np.ndarray, cfg: InferenceConfig, mode: str = "auto",
                    preprocess: dict | None = None, affine: np.ndarray | None = None,
                    ) -> AxisOrder:
    """:func:`plan_axis_order` run to the end, order only (e.g. for training cases)."""
    return run_to_end(plan_axis_order(network, arr, cfg, mode, preprocess, affine))[0]
