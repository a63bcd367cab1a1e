"""Segmentation losses with per-pixel weight / ignore masks.

Every loss is an :class:`torch.nn.Module` called as ``loss(logits, target, weight=None)``:

* ``logits``: float tensor ``(N, K, *spatial)`` (2D or 3D). ``K == 1`` is a binary network
  (sigmoid of the single channel = foreground probability); ``K >= 2`` is multi-class (softmax
  over channels, class 0 = background).
* ``target``: integer tensor ``(N, *spatial)`` of class indices (``(N, 1, *spatial)`` is accepted
  and squeezed). Values must lie in ``[0, max(K, 2) - 1]`` wherever the weight is non-zero;
  ignored pixels may hold anything (e.g. ``-1`` or ``255``).
* ``weight``: optional float or bool tensor ``(N, *spatial)``, non-negative; ``0`` means "ignore
  this pixel" (e.g. only the edited / reviewed pixels of a corrected mask count). Ignored pixels
  contribute exactly nothing to the value and receive an exactly zero gradient. Weighted means
  are ``sum(w * l) / sum(w)``; when every pixel is ignored the loss is ``0`` (never NaN).

Binary vs multi-class (design decision):

* ``'bce'`` is binary only: ``K >= 2`` raises a :class:`LossInputError` pointing to ``'ce'``.
* ``'ce'`` and ``'focal'`` work for both; with ``K == 1`` cross-entropy *is* the binary cross
  entropy (softmax of ``[0, z]`` equals ``sigmoid(z)``).
* ``'dice'`` works for both: soft Dice of the sigmoid foreground (``K == 1``) or the mean soft
  Dice of the softmax foreground classes ``1..K-1`` (``K >= 2``).
* ``'bce_dice'`` and ``'ce_dice'`` are the same DRU-Net hybrid ``ce_weight * CE + dice_weight *
  Dice`` with BCE for ``K == 1`` and CE for ``K >= 2``; ``'auto'`` is the same hybrid, so a single
  name serves binary and multi-class networks.

Soft Dice is a *batch* Dice: intersections and sums run over all pixels of the whole batch
(``smooth = 1e-5``), which keeps it stable on patches without foreground. Computation is done in
float32 even for half-precision logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

__all__ = [
    "LOSSES",
    "BCELoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "HybridLoss",
    "LossInputError",
    "build_loss",
    "list_losses",
]

_EPS = 1e-12


class LossInputError(InputError, ValueError):
    """Invalid loss name, option, or tensors (also a ``ValueError``)."""


def _prepare(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate inputs; return float32 logits, long target (0 where ignored), float32 weight."""
    if not torch.is_tensor(logits) or logits.ndim < 3:
        raise LossInputError("logits must be a tensor of shape (N, K, *spatial)")
    if not torch.is_floating_point(logits):
        raise LossInputError(f"logits must be floating point, got {logits.dtype}")
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise LossInputError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}; "
            "expected (N, *spatial)"
        )
    if torch.is_floating_point(target) or torch.is_complex(target):
        raise LossInputError(f"target must hold integer class indices, got {target.dtype}")
    if weight is None:
        w = torch.ones(target.shape, dtype=torch.float32, device=logits.device)
    else:
        if weight.ndim == logits.ndim and weight.shape[1] == 1:
            weight = weight[:, 0]
        if weight.shape != target.shape:
            raise LossInputError(
                f"weight shape {tuple(weight.shape)} does not match target {tuple(target.shape)}"
            )
        w = weight.to(device=logits.device, dtype=torch.float32)
        if bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
            raise LossInputError("weight must be finite and non-negative")
    target = target.to(device=logits.device, dtype=torch.long)
    target = torch.where(w > 0, target, torch.zeros_like(target))
    n_classes = max(logits.shape[1], 2)
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= n_classes):
        raise LossInputError(
            f"target holds labels outside 0..{n_classes - 1} for a network with "
            f"{logits.shape[1]} output channel(s)"
        )
    return logits.float(), target, w


def _weighted_mean(values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum(w * values) / sum(w)``; 0 (with zero gradient) when every weight is 0."""
    return (values * w).sum() / w.sum().clamp_min(_EPS)


def _log_prob_of_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Log-probability of the target class per pixel, ``(N, *spatial)``."""
    if logits.shape[1] == 1:
        return -F.binary_cross_entropy_with_logits(
            logits[:, 0], target.to(logits.dtype), reduction="none"
        )
    return F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1))[:, 0]


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(N, max(K, 2), *spatial)``: ``[1 - p, p]`` for binary logits."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1.0 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


class _WeightedLoss(nn.Module):
    """Common base: class weights and a ``config`` dict describing the loss."""

    name = ""

    def __init__(self, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if class_weights is not None:
            cw = torch.as_tensor(list(class_weights), dtype=torch.float32)
            if cw.ndim != 1 or len(cw) < 2 or bool((cw < 0).any()):
                raise LossInputError(
                    "class_weights must be >= 2 non-negative numbers (background first)"
                )
            self.register_buffer("class_weights", cw, persistent=False)
        else:
            self.class_weights = None
        self.config: dict = {"name": self.name}
        if class_weights is not None:
            self.config["class_weights"] = [float(c) for c in class_weights]

    def _pixel_weights(self, target: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
        if self.class_weights is None:
            return w
        if len(self.class_weights) != max(k, 2):
            raise LossInputError(
                f"class_weights has {len(self.class_weights)} entries but the network has "
                f"{max(k, 2)} classes"
            )
        return w * self.class_weights.to(w.device)[target]


class BCELoss(_WeightedLoss):
    """Binary cross-entropy on sigmoid logits ``(N, 1, *spatial)``.

    Parameters
    ----------
    class_weights : sequence of 2 floats, optional
        Weights of background and foreground pixels.
    """

    name = "bce"

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        if logits.ndim >= 2 and logits.shape[1] != 1:
            raise LossInputError(
                f"'bce' needs a binary network (1 output channel), got {logits.shape[1]}; "
                "use 'ce' or 'ce_dice' for multi-class networks"
            )
        logits, target, w = _prepare(logits, target, weight)
        nll = -_log_prob_of_target(logits, target)
        return _weighted_mean(nll, self._pixel_weights(target, w, 1))


class CrossEntropyLoss(_WeightedLoss):
    """Cross-entropy (softmax for ``K >= 2``, equal to BCE for ``K == 1``).

    Parameters
    ----------
    class_weights : sequence of float, optional
        One weight per class (``max(K, 2)`` entries); the mean is normalised by the summed
        pixel weights, as in :func:`torch.nn.functional.cross_entropy`.
    """

    name = "ce"

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits, target, w = _prepare(logits, target, weight)
        nll = -_log_prob_of_target(logits, target)
        return _weighted_mean(nll, self._pixel_weights(target, w, logits.shape[1]))


class FocalLoss(_WeightedLoss):
    """Focal loss ``-(1 - p_t) ** gamma * log(p_t)`` (Lin et al. 2017), binary or multi-class.

    ``gamma = 0`` gives plain cross-entropy.

    Parameters
    ----------
    gamma : float, default 2.0
        Focusing parameter, ``>= 0``.
    class_weights : sequence of float, optional
        Per-class weights ("alpha"), ``max(K, 2)`` entries.
    """

    name = "focal"

    def __init__(self, gamma: float = 2.0, class_weights: Sequence[float] | None = None) -> None:
        super().__init__(class_weights)
        if not gamma >= 0:
            raise LossInputError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.config["gamma"] = self.gamma

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits, target, w = _prepare(logits, target, weight)
        logpt = _log_prob_of_target(logits, target)
        # clamp keeps d/dp (1-p)^gamma finite for gamma < 1 when p saturates at exactly 1
        focus = (1.0 - logpt.exp()).clamp_min(_EPS) ** self.gamma
        return _weighted_mean(-focus * logpt, self._pixel_weights(target, w, logits.shape[1]))


class DiceLoss(_WeightedLoss):
    """Soft batch Dice loss ``1 - mean_c (2 I_c + s) / (P_c + T_c + s)``.

    Sums run over the batch and all pixels (weighted), classes are the foreground classes
    ``1..max(K, 2) - 1`` (plus background with ``include_background=True``). The value lies in
    ``[0, 1]``; a batch whose pixels are all ignored gives 0.

    Parameters
    ----------
    smooth : float, default 1e-5
        Added to numerator and denominator.
    include_background : bool, default False
        Also average the Dice of class 0.
    """

    name = "dice"

    def __init__(self, smooth: float = 1e-5, include_background: bool = False) -> None:
        super().__init__(None)
        if not smooth > 0:
            raise LossInputError(f"dice smooth must be > 0, got {smooth}")
        self.smooth = float(smooth)
        self.include_background = bool(include_background)
        self.config.update(smooth=self.smooth, include_background=self.include_background)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits, target, w = _prepare(logits, target, weight)
        return self._dice_loss(logits, target, w)

    def _dice_loss(self, logits: torch.Tensor, target: torch.Tensor, w: torch.Tensor):
        prob = _probabilities(logits)
        n_classes = prob.shape[1]
        onehot = F.one_hot(target, n_classes).movedim(-1, 1).to(prob.dtype)
        if not self.include_background:
            prob, onehot = prob[:, 1:], onehot[:, 1:]
        wp = prob * w.unsqueeze(1)
        dims = [0] + list(range(2, prob.ndim))
        intersection = (wp * onehot).sum(dims)
        denominator = wp.sum(dims) + (onehot * w.unsqueeze(1)).sum(dims)
        dice = (2.0 * intersection + self.smooth) / (denominator + self.smooth)
        return 1.0 - dice.mean()


class HybridLoss(_WeightedLoss):
    """DRU-Net hybrid ``ce_weight * CE + dice_weight * Dice`` (BCE for ``K == 1``).

    Parameters
    ----------
    ce_weight : float, default 1.0
        Weight of the cross-entropy term (``bce_weight`` is an accepted alias).
    dice_weight : float, default 1.0
        Weight of the soft Dice term.
    smooth, include_background
        See :class:`DiceLoss`.
    class_weights : sequence of float, optional
        Per-class weights of the cross-entropy term.
    name : str, default "ce_dice"
        Name recorded in ``config`` (``'bce_dice'``, ``'ce_dice'`` or ``'auto'``).
    """

    def __init__(
        self,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1e-5,
        include_background: bool = False,
        class_weights: Sequence[float] | None = None,
        bce_weight: float | None = None,
        name: str = "ce_dice",
    ) -> None:
        self.name = name
        super().__init__(class_weights)
        if bce_weight is not None:
            ce_weight = bce_weight
        if not (ce_weight >= 0 and dice_weight >= 0):
            raise LossInputError("loss term weights must be >= 0")
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.dice = DiceLoss(smooth=smooth, include_background=include_background)
        self.config.update(
            ce_weight=self.ce_weight,
            dice_weight=self.dice_weight,
            smooth=self.dice.smooth,
            include_background=self.dice.include_background,
        )

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits, target, w = _prepare(logits, target, weight)
        nll = -_log_prob_of_target(logits, target)
        ce = _weighted_mean(nll, self._pixel_weights(target, w, logits.shape[1]))
        return self.ce_weight * ce + self.dice_weight * self.dice._dice_loss(logits, target, w)


def _hybrid(name: str) -> Callable[..., nn.Module]:
    def factory(**kw) -> nn.Module:
        return HybridLoss(name=name, **kw)

    factory.__doc__ = HybridLoss.__doc__
    return factory


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "bce": BCELoss,
    "dice": DiceLoss,
    "bce_dice": _hybrid("bce_dice"),
    "ce": CrossEntropyLoss,
    "focal": FocalLoss,
    "ce_dice": _hybrid("ce_dice"),
    "auto": _hybrid("auto"),
}


def list_losses() -> list[str]:
    """Names accepted by :func:`build_loss`, sorted."""
    return sorted(LOSSES)


def build_loss(name: str, **kw) -> nn.Module:
    """Build a loss module by name.

    Parameters
    ----------
    name : str
        One of :func:`list_losses` (case-insensitive, ``-`` and ``+`` read as ``_``).
    **kw
        Options of the loss class (e.g. ``gamma`` for ``'focal'``; ``bce_weight`` /
        ``ce_weight`` and ``dice_weight`` for the hybrids; ``class_weights``; ``smooth``).

    Returns
    -------
    torch.nn.Module
        Called as ``loss(logits, target, weight=None)``; has a ``config`` dict.

    Raises
    ------
    LossInputError
        Unknown name or option.

    Examples
    --------
    >>> loss = build_loss("bce_dice", dice_weight=0.5)
    >>> logits = torch.zeros(2, 1, 8, 8, requires_grad=True)
    >>> target = torch.zeros(2, 8, 8, dtype=torch.long)
    >>> float(loss(logits, target)) > 0
    True
    """
    key = str(name).strip().lower().replace("-", "_").replace("+", "_")
    if key not in LOSSES:
        raise LossInputError(f"unknown loss {name!r}; choose one of {', '.join(list_losses())}")
    try:
        return LOSSES[key](**kw)
    except TypeError as exc:
        raise LossInputError(f"invalid option for loss {key!r}: {exc}") from None
