"""The binary threshold of a model re-chosen on labelled cases of a site.

A model trained on one site's images is often best at another threshold on another site
(thin vessels of another camera come out with lower probabilities). After a correction round
(or ``drunet finetune``) the threshold that maximises the pooled Dice on the labelled cases is
written into the new model's recipe (``meta["threshold"]``, which every prediction with that
model uses) together with how it was chosen (``meta["threshold_choice"]``). With fewer
foreground pixels than a floor the choice would follow a handful of strokes, and a gain in
Dice below a margin is noise of a flat curve (a DRIVE round moved 0.62 to 0.46 for +0.003 on
its two training cases and lost 0.006 on the held-back one), so in both cases the starting
model's threshold is kept.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..evaluation.threshold import pooled_best_threshold
from ..progress import Progress, mapped

if TYPE_CHECKING:
    from ..models.model import Model
    from ..train.dataset import Case

__all__ = ["MIN_FOREGROUND", "MIN_GAIN", "ThresholdChoice", "choose_threshold_iter"]

#: Foreground pixels (counted where the cases' weights are > 0) below which the starting
#: model's threshold is kept: about one short vessel segment of a fundus photograph.
MIN_FOREGROUND = 1000
#: Pooled Dice the new threshold must gain over the starting one on the labelled cases.
MIN_GAIN = 0.005


@dataclass
class ThresholdChoice:
    """How the threshold of a new model was set (stored as ``meta["threshold_choice"]``).

    ``threshold`` is the one the model uses; ``chosen`` is False when ``parent_threshold`` was
    kept (``reason`` says why). ``dice`` / ``parent_dice`` are the pooled Dice of the new model
    on ``cases`` at ``threshold`` / at ``parent_threshold``.
    """

    threshold: float
    parent_threshold: float
    chosen: bool
    reason: str
    foreground_pixels: int
    min_foreground: int
    min_gain: float = MIN_GAIN
    dice: float | None = None
    parent_dice: float | None = None
    cases: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return asdict(self)

    def apply(self, model: Model) -> None:
        """Write the threshold and this record into ``model.meta`` (what its file will hold)."""
        model.meta["threshold"] = float(self.threshold)
        model.meta["threshold_choice"] = self.to_dict()


def choose_threshold_iter(model: Model, cases: Sequence[Case], parent_threshold: float | None = None,
                          min_foreground: int = MIN_FOREGROUND, min_gain: float = MIN_GAIN,
                          **predict_opts: Any,
                          ) -> Generator[Progress, None, ThresholdChoice | None]:
    """Predict ``cases`` with ``model`` and choose its binary threshold on them.

    Parameters
    ----------
    model : Model
        A binary model (one output channel); ``model`` is not changed (see
        :meth:`ThresholdChoice.apply`).
    cases : sequence of Case
        Labelled cases (``label``; ``weight`` > 0 marks the pixels that count, ``mask`` the
        region, e.g. a field of view).
    parent_threshold : float, optional
        The threshold kept when the cases have fewer than ``min_foreground`` foreground pixels
        (default: the model's own).
    min_foreground : int
        The floor on the foreground pixels counted.
    min_gain : float
        The parent's threshold is also kept unless the best one gains more pooled Dice.
    **predict_opts
        Options of :meth:`Model.predict_iter` (tile size, device ...).

    Returns
    -------
    ThresholdChoice or None
        None for a multi-class model (labels come from the arg-max, no threshold).
    """
    if model.out_channels != 1:
        return None
    parent = float(model.threshold if parent_threshold is None else parent_threshold)
    weights = [_region(c) for c in cases]
    n_fg = sum(_foreground(c.label, w) for c, w in zip(cases, weights, strict=True))
    names = [c.name for c in cases]
    if n_fg < min_foreground:
        return ThresholdChoice(parent, parent, False, f"{n_fg} foreground pixel(s) in the "
                               f"labelled cases, fewer than {min_foreground}", n_fg,
                               int(min_foreground), min_gain, cases=names)
    probs = []
    for i, case in enumerate(cases):
        pred = yield from mapped(model.predict_iter(case.image, **predict_opts),
                                 lambda rec, i=i, name=case.name: Progress(
                                     i, len(cases), f"choosing the threshold on {name}"))
        probs.append(pred.probabilities[0])
    truths = [c.label for c in cases]
    best, dice = pooled_best_threshold(probs, truths, weights)
    parent_dice = pooled_best_threshold(probs, truths, weights, np.array([parent]))[1]
    chosen = dice > parent_dice + min_gain
    reason = (f"pooled Dice {dice:.4f} at {best:g} vs {parent_dice:.4f} at {parent:g} on "
              f"{len(cases)} labelled case(s)" +
              ("" if chosen else f": a gain under {min_gain:g}"))
    return ThresholdChoice(best if chosen else parent, parent, chosen, reason, n_fg,
                           int(min_foreground), min_gain, dice, parent_dice, names)


def _region(case: Case) -> np.ndarray | None:
    """The pixels of ``case`` that count: its weight map > 0 within its region mask."""
    sel = None
    if case.weight is not None:
        sel = np.asarray(case.weight) > 0
    if case.mask is not None:
        mask = np.asarray(case.mask) > 0
        sel = mask if sel is None else sel & mask
    return sel


def _foreground(label: np.ndarray, sel: np.ndarray | None) -> int:
    fg = np.asarray(label) > 0
    return int(np.count_nonzero(fg if sel is None else fg & sel))
