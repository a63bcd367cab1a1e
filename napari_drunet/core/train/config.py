"""Options and result of training: :class:`TrainConfig`, :class:`TrainResult` and the
fine-tuning defaults (see :mod:`.training` for the loop)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:
    from ..models.model import Model

__all__ = ["DEFAULT_PATCH", "TrainConfig", "TrainResult", "default_finetune_config"]

DEFAULT_PATCH = {2: (256, 256), 3: (96, 96, 96)}


@dataclass
class TrainConfig:
    """Options of :func:`train_iter` (stored in the checkpoint via :meth:`to_dict`).

    Network: ``arch``, ``spatial_dims``, ``features`` (``None`` = the architecture's default),
    ``dropout``, ``act``, ``norm``, ``arch_options`` (extra keyword arguments of the network); all
    ignored when fine-tuning (the starting model defines the network). ``patch_size=None`` uses
    256² (2D) / 96³ (3D), shrunk to the largest training image. ``steps_per_epoch=None`` covers
    the training pixels about once per epoch (at least 10 steps). ``normalization=None`` uses the
    starting model's spec, else ``normalization.default_spec()``. ``warmup_steps=None`` is 5 % of
    the steps (at most 50). ``time_budget`` (seconds) stops gracefully; with the cosine schedule
    the planned steps are shortened so the schedule ends within the budget. With ``augment``,
    ``rotate`` (largest angle, degrees) and ``scale`` (largest zoom, 0.25 = x0.8 to x1.25) add
    rotations and zoom to 30 % of the patches each (0 = off, the default); ``degrade`` is the
    share of patches given worse image quality (blur, noise, JPEG; 0 = off, the default).

    Fine-tuning guards: ``freeze_encoder`` (encoder weights and norm statistics fixed),
    ``freeze_norm`` (every batch-norm layer normalises with the starting model's statistics and
    does not update them; its scale and shift still train: a few patches of one site or one
    slab would otherwise replace the statistics the whole image is normalised with),
    ``l2sp`` (penalty ``l2sp * ||w - w_start||²`` over the trained weights), ``replay_fraction``
    (share of each batch drawn from ``replay_cases``), ``only_weighted`` (loss only where the
    case weight map is > 0), ``early_stop_patience`` (validations without improvement).
    ``num_threads`` sets torch's CPU threads for the run (restored afterwards).
    ``val_threshold``: a binary model is validated at ``threshold`` (``"fixed"``) or at the
    threshold with the best pooled Dice on the validation cases (``"best"``: for a run whose
    threshold is re-chosen afterwards, such as fine-tuning, where the probabilities move and
    the old threshold would favour the starting weights).
    """

    arch: str = "drunet"
    spatial_dims: int = 2
    features: tuple[int, ...] | None = None
    dropout: float = 0.1
    act: str = "relu"
    norm: str = "batch"
    arch_options: dict[str, Any] = field(default_factory=dict)
    loss: str = "auto"
    epochs: int = 50
    steps_per_epoch: int | None = None
    patch_size: tuple[int, ...] | None = None
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int | None = None
    val_fraction: float = 0.2
    val_every: int = 1
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    time_budget: float | None = None
    max_steps: int | None = None
    fg_fraction: float = 0.33
    augment: bool = True
    rotate: float = 0.0
    scale: float = 0.0
    degrade: float = 0.0
    normalization: dict[str, Any] | None = None
    label_names: dict[str, str] | None = None
    threshold: float = 0.5
    slice_axis: int = 0
    num_threads: int | None = None
    freeze_encoder: bool = False
    freeze_norm: bool = False
    l2sp: float = 0.0
    replay_fraction: float = 0.0
    only_weighted: bool = False
    early_stop_patience: int | None = None
    val_threshold: str = "fixed"

    def __post_init__(self) -> None:
        for name in ("features", "patch_size"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(int(v) for v in value))

    def validate(self) -> TrainConfig:
        """Raise :class:`InputError` (one line) for an unusable option; return ``self``."""
        checks = [
            (self.spatial_dims in (2, 3), "spatial_dims must be 2 or 3"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.schedule in ("cosine", "constant"), "schedule must be cosine or constant"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.val_every >= 1, "val_every must be >= 1"),
            (0 <= self.fg_fraction <= 1, "fg_fraction must be in [0, 1]"),
            (0 <= self.rotate <= 180, "rotate must be in [0, 180] degrees"),
            (self.scale >= 0, "scale must be >= 0"),
            (0 <= self.degrade <= 1, "degrade must be in [0, 1]"),
            (0 <= self.replay_fraction < 1, "replay_fraction must be in [0, 1)"),
            (self.l2sp >= 0, "l2sp must be >= 0"),
            (self.val_threshold in ("fixed", "best"), "val_threshold must be fixed or best"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1,
             "steps_per_epoch must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (self.time_budget is None or self.time_budget > 0, "time_budget must be > 0 s"),
            (self.early_stop_patience is None or self.early_stop_patience >= 1,
             "early_stop_patience must be >= 1"),
            (self.patch_size is None or (len(self.patch_size) == self.spatial_dims
                                         and min(self.patch_size) >= 1),
             f"patch_size needs {self.spatial_dims} positive sizes, got {self.patch_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"training option: {message}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], strict: bool = True) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`InputError` if ``strict``."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown and strict:
            raise InputError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainResult:
    """What :func:`train_iter` returns.

    ``model`` holds the best weights (by validation Dice; the last ones without validation).
    ``stop_reason`` is ``'completed'``, ``'cancelled'``, ``'time_budget'`` or
    ``'early_stopping'``; ``stopped_early`` is true unless completed. ``path`` is the checkpoint
    written to ``out`` (rank 0 only).
    """

    model: Model
    history: list[dict[str, Any]]
    best_val_dice: float | None
    steps: int
    seconds: float
    stopped_early: bool
    stop_reason: str = "completed"
    path: str | None = None


def default_finetune_config(**overrides: Any) -> TrainConfig:
    """Base options for fine-tuning on a few corrected images (``finetune_iter``'s default).

    Lower learning rate (3e-4), no weight decay but a small L2-SP pull (1e-3) toward the starting
    weights, no hold-out (every correction is used; pass ``val_cases`` to validate), at most 150
    steps and a 240 s time budget. A correction round, the Fine-tune widget and ``drunet
    finetune`` start from these with the round's defaults on top (steps, patch, no time budget:
    ``core.correction.round.default_round_settings``, the one place of those).
    """
    base = TrainConfig(lr=3e-4, weight_decay=0.0, l2sp=1e-3, epochs=10, max_steps=150,
                       time_budget=240.0, val_fraction=0.0, warmup_steps=5)
    return replace(base, **overrides)
