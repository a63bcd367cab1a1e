"""One correction round of a project: the product's main operation, in one place.

:func:`correction_round` holds back corrected cases, fine-tunes a copy of the active model on
the others (optionally after adapting its batch-norm statistics to the project's images),
re-chooses the binary threshold on the cases it trained on, compares the new model with the
active one on the held-back cases and only then saves it as a new project version, with the
held-back Dice in the version's metrics. Promotion stays the caller's choice (the Fine-tune
widget's Promote / Keep previous, ``drunet project finetune --promote``, a benchmark's rule).
:func:`adaptation_round` (batch-norm statistics only, no labels) and :func:`repredict_cases`
are the two other jobs of the widget. Every function is a progress generator (see
:mod:`.progress`); the widget, ``drunet project`` and the benchmarks run these same functions.

The budget of a round is its number of optimizer steps, so the same seed gives the same model
on a quiet or a busy machine; ``time_cap_s`` may stop it earlier, and then the outcome's
``stop_reason`` is ``"time_cap"`` and its summary says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import DataError, InputError
from ..progress import Progress, mapped
from .threshold import MIN_FOREGROUND, MIN_GAIN, ThresholdChoice, choose_threshold_iter

if TYPE_CHECKING:
    from ..models.model import Model
    from ..train.config import TrainConfig
    from .project import Project

__all__ = ["KEEP", "ROUND_PATCH_2D", "ROUND_STEPS", "TRAIN_LAYERS", "AdaptationOutcome",
           "Comparison", "RepredictOutcome", "RoundOutcome", "RoundSettings", "adaptation_round", "check_ready",
           "correction_round", "default_round_settings", "repredict_cases"]

#: ``RoundSettings.train_layers`` choices: every layer, or the decoder only (encoder frozen).
TRAIN_LAYERS = ("all", "decoder")
#: ``RoundSettings.keep`` choices: the weights after the last step, or those of the step with
#: the best held-back Dice (at the parent's threshold; the starting weights are a candidate).
KEEP = ("last", "best")
#: Steps of a round by the model's spatial dimensions: 2D chosen on STARE tuning images
#: (docs/results.md "Round defaults"); 3D for a round within a minute on this CPU (a 3D step
#: on whole hippocampus crops costs ~5 s on one thread; docs/performance.md, issue 19.3).
ROUND_STEPS = {2: 120, 3: 10}
#: Side of the 2D training patches: 128² gave the held-back AUC of 256² at a third of the time.
ROUND_PATCH_2D = 128


@dataclass
class RoundSettings:
    """Options of :func:`correction_round` (defaults: :func:`default_round_settings`).

    ``steps`` optimizer steps are the round's budget (exactly that many unless stopped);
    ``time_cap_s`` (None = none) stops training earlier on a slow machine. ``train_layers``:
    ``"all"`` or ``"decoder"`` (encoder weights and statistics frozen); ``freeze_norm`` keeps
    every batch-norm layer's statistics (TrainConfig's option of that name). ``l2sp`` pulls the
    weights toward the starting ones and ``replay_fraction`` of each batch comes from the
    uncorrected cases labelled by their stored prediction (the forgetting guard; 0 = off).
    ``only_edited``: the loss counts only edited pixels and reviewed slices of cases not
    reviewed whole. ``holdout`` corrected cases are held back to compare the versions on (None:
    one in :data:`~.feedback.HOLDOUT_SHARE`, at least one);
    ``seed`` fixes that split, the patches and the dropout. ``keep``: ``"last"`` keeps the
    weights after the last step, so the held-back cases only judge the new version;
    ``"best"`` also picks the step by their Dice during training, at the parent's threshold
    (which often picks the starting weights: fine-tuning moves the probabilities before the
    threshold is re-chosen), and validating costs time. ``adapt_first`` re-estimates the
    batch-norm statistics on the project's images before fine-tuning. ``choose_threshold``
    re-chooses a binary model's threshold on the training cases, unless they hold fewer than
    ``min_foreground`` foreground pixels or it gains less than ``threshold_min_gain`` Dice.
    ``tolerance``: the new version is recommended unless its held-back Dice is lower by more.
    ``patch_2d``: side of the square training patches of a 2D model (None: the training
    default, 256² shrunk to the images; 3D models always use theirs, 96³ shrunk to the
    volumes), unless ``train_options`` sets ``patch_size``. ``train_options``: other
    :class:`~.train_config.TrainConfig` fields (``batch_size``, ``patch_size``, ``num_threads``).
    """

    steps: int = ROUND_STEPS[2]
    lr: float = 3e-4
    train_layers: str = "all"
    freeze_norm: bool = False
    l2sp: float = 1e-3
    replay_fraction: float = 0.25
    only_edited: bool = True
    holdout: int | None = None
    seed: int = 0
    keep: str = "last"
    time_cap_s: float | None = 240.0
    device: str = "auto"
    adapt_first: bool = False
    choose_threshold: bool = True
    min_foreground: int = MIN_FOREGROUND
    threshold_min_gain: float = MIN_GAIN
    tolerance: float = 0.005
    patch_2d: int | None = ROUND_PATCH_2D
    train_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> RoundSettings:
        """Raise :class:`InputError` (one line) for an unusable option; return ``self``."""
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.lr > 0, "the learning rate must be > 0"),
            (self.train_layers in TRAIN_LAYERS,
             f"train_layers must be one of {', '.join(TRAIN_LAYERS)}"),
            (self.l2sp >= 0, "l2sp must be >= 0"),
            (0 <= self.replay_fraction < 1, "replay_fraction must be in [0, 1)"),
            (self.holdout is None or self.holdout >= 0, "holdout must be >= 0"),
            (self.patch_2d is None or self.patch_2d >= 16, "patch_2d must be >= 16 pixels"),
            (self.keep in KEEP, f"keep must be one of {', '.join(KEEP)}"),
            (self.time_cap_s is None or self.time_cap_s > 0, "time_cap_s must be > 0"),
            (self.min_foreground >= 0, "min_foreground must be >= 0"),
            (self.threshold_min_gain >= 0, "threshold_min_gain must be >= 0"),
            (not {"max_steps", "time_budget"} & set(self.train_options),
             "set steps and time_cap_s, not max_steps / time_budget"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"round option: {message}")
        return self

    def train_config(self, replay: bool, spatial_dims: int = 2) -> TrainConfig:
        """The fine-tuning :class:`~.train_config.TrainConfig` of the round (``replay``: there
        are uncorrected cases to replay; ``spatial_dims``: the model's). ``steps`` binds: one
        epoch per step at most, no time budget (the cap is applied by the round, without
        shortening the schedule)."""
        from ..train.config import TrainConfig, default_finetune_config

        cfg = default_finetune_config(
            max_steps=self.steps, epochs=self.steps, time_budget=None, lr=self.lr,
            freeze_encoder=self.train_layers == "decoder", freeze_norm=self.freeze_norm,
            l2sp=self.l2sp,
            replay_fraction=self.replay_fraction if replay else 0.0,
            only_weighted=self.only_edited, device=self.device, seed=self.seed,
            val_threshold="best" if self.choose_threshold else "fixed")
        unknown = sorted(set(self.train_options) - set(TrainConfig.__dataclass_fields__))
        if unknown:
            raise InputError(f"round option: unknown training option(s) {', '.join(unknown)}")
        if spatial_dims == 2 and self.patch_2d:
            cfg = replace(cfg, patch_size=(self.patch_2d, self.patch_2d))
        return replace(cfg, **self.train_options).validate()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (stored with the version)."""
        return asdict(self)


def _spatial_dims(model: Model | None, project: Project | None) -> int:
    """The model's spatial dimensions, else those of the project's first case, else 2."""
    if model is not None:
        return int(model.spatial_dims)
    names = project.cases() if project is not None else []
    return 3 if names and len(project.case_meta(names[0]).get("shape", ())) == 3 else 2


def default_round_settings(model: Model | None = None, project: Project | None = None,
                           ) -> RoundSettings:
    """The defaults of a correction round for ``model`` in ``project``: the Fine-tune widget's
    initial options, ``drunet project finetune``'s, ``drunet finetune``'s and the benchmarks'
    (one place).

    Parameters
    ----------
    model : Model, optional
        The model to fine-tune (None: not loaded yet, as when the widget opens; the project's
        cases then tell 2D from 3D).
    project : Project, optional
        The project the round runs in.

    Returns
    -------
    RoundSettings
        120 steps for a 2D model (on 128² patches), 10 for a 3D one (on its 96³ default,
        shrunk to the volumes); learning rate 3e-4, every layer trained, L2-SP 1e-3 and 25 %
        replay, edited pixels only, one corrected case in five (at least one) held back to
        judge (the last step's weights are kept), 240 s time cap, no adaptation first,
        threshold re-chosen.
    """
    dims = _spatial_dims(model, project)
    return RoundSettings(steps=ROUND_STEPS[dims])


@dataclass
class Comparison:
    """Dice of the new and the previous version on the judging cases.

    ``cases`` maps a case to ``{"new": dice, "old": dice}``; ``new`` / ``old`` are the means
    (None without any case); ``recommend`` is None when there is no case to judge on.
    """

    cases: dict[str, dict[str, float]]
    new: float | None
    old: float | None
    recommend: bool | None
    reason: str


@dataclass
class RoundOutcome:
    """What :func:`correction_round` returns (the version is saved, not made active)."""

    version: str
    parent: str
    model: Model
    comparison: Comparison
    steps: int
    planned_steps: int
    seconds: float
    train_seconds: float
    stop_reason: str
    threshold: ThresholdChoice | None
    best_val_dice: float | None
    train_cases: list[str]
    holdout_cases: list[str]
    replay_cases: list[str]
    adaptation: dict[str, Any] | None = None
    time_cap_s: float | None = None

    @property
    def holdout_dice(self) -> float | None:
        """Mean Dice of the new version on the held-back cases (None without any)."""
        return self.comparison.new

    @property
    def holdout_dice_parent(self) -> float | None:
        """Mean Dice of the previous version on the held-back cases."""
        return self.comparison.old

    @property
    def recommend(self) -> bool | None:
        return self.comparison.recommend

    @property
    def time_capped(self) -> bool:
        """True when the time cap stopped training before its steps were done."""
        return self.stop_reason == "time_cap"

    def summary(self) -> str:
        """One paragraph for the widget and the command line."""
        how = f"{self.steps} of {self.planned_steps} steps in {self.train_seconds:.0f} s"
        if self.time_capped:
            how += (f", STOPPED BY THE TIME CAP ({self.time_cap_s:g} s): trained less than "
                    "asked, raise the time cap or lower the steps")
        elif self.stop_reason != "completed":
            how += f", {self.stop_reason}"
        threshold = "" if self.threshold is None else (
            f"; threshold {self.threshold.threshold:g}" +
            ("" if self.threshold.chosen else " kept") + f" ({self.threshold.reason})")
        return (f"saved {self.version} (parent {self.parent}, {how}{threshold}). "
                f"{self.comparison.reason}.")


@dataclass
class AdaptationOutcome:
    """What :func:`adaptation_round` returns (the version is saved, not made active)."""

    version: str
    parent: str
    model: Model
    comparison: Comparison
    images: int
    seconds: float

    @property
    def recommend(self) -> bool | None:
        return self.comparison.recommend

    def summary(self) -> str:
        return (f"saved {self.version} (parent {self.parent}, statistics of {self.images} "
                f"image(s)). {self.comparison.reason}.")


@dataclass
class RepredictOutcome:
    """What :func:`repredict_cases` returns: cases re-predicted by ``version``, and those
    skipped because they got corrections meanwhile."""

    version: str
    done: list[str]
    skipped: list[str]


class _TimeCap:
    """``should_stop`` of the training: the caller's stop, or ``cap_s`` seconds passed."""

    def __init__(self, cap_s: float | None, should_stop: Callable[[], bool] | None):
        self.cap_s, self.should_stop = cap_s, should_stop
        self.started = time.perf_counter()
        self.fired = False

    def __call__(self) -> bool:
        if self.should_stop is not None and self.should_stop():
            return True
        if self.cap_s is not None and time.perf_counter() - self.started >= self.cap_s:
            self.fired = True
        return self.fired


def _active_parent(project: Project) -> str:
    parent = project.versions.active
    if parent is None:
        raise DataError("the project has no model yet: add a segmented case first")
    return parent


def check_ready(project: Project) -> None:
    """Raise :class:`~.errors.DataError` (one line) when ``project`` cannot have a correction
    round: no model version yet, or no corrected (edited or reviewed) case."""
    _active_parent(project)
    if not any(project.is_corrected(n) for n in project.cases()):
        raise DataError("no corrected case yet: edit or mark a case reviewed first")


def _compare(project: Project, new: Model, old: Model, names: Sequence[str], tolerance: float,
             ) -> Generator[Progress, None, Comparison]:
    result = yield from project.versions.compare_iter(new, old, list(names), tolerance=tolerance)
    return Comparison(**result)


def correction_round(project: Project, model: Model, settings: RoundSettings | None = None,
                     should_stop: Callable[[], bool] | None = None,
                     ) -> Generator[Progress, None, RoundOutcome]:
    """Fine-tune ``model`` on the project's corrected cases, compare, save a new version.

    Parameters
    ----------
    project : Project
        The corrections project; its active version is the parent of the new one.
    model : Model
        The active version's model (never modified; the GUI passes the one it serves).
    settings : RoundSettings, optional
        Default: :func:`default_round_settings`.
    should_stop : callable, optional
        Polled at every step: True ends training keeping the best weights so far, which are
        still compared and saved (``stop_reason`` ``"cancelled"``).

    Yields
    ------
    Progress
        Training records (``metrics``: loss, val_dice, eta_s) and one per phase.

    Returns
    -------
    RoundOutcome
        The saved version, its held-back comparison, steps, times and threshold.
    """
    from ..train.loop import finetune_iter

    settings = (settings or default_round_settings(model, project)).validate()
    started = time.perf_counter()
    check_ready(project)
    parent = _active_parent(project)
    train_names, hold = project.feedback.split_holdout(settings.holdout, seed=settings.seed)
    yield Progress(0, None, "loading the corrected cases")
    # a snapshot of the corrections as saved now; later edits go to the next round
    train = project.feedback.corrected_cases(settings.only_edited, names=train_names)
    held = project.feedback.corrected_cases(False, names=hold)
    replay = project.feedback.replay_cases() if settings.replay_fraction > 0 else []
    cfg = settings.train_config(replay=bool(replay), spatial_dims=model.spatial_dims)
    start, adaptation = model, None
    if settings.adapt_first:
        start = yield from _adapt(project, model, settings.device, should_stop)
        adaptation = start.meta["adaptation"]
    cap = _TimeCap(settings.time_cap_s, should_stop)
    result = yield from finetune_iter(start, train, cfg, replay_cases=replay or None,
                                      val_cases=held if settings.keep == "best" else [],
                                      should_stop=cap)
    stop_reason = "time_cap" if cap.fired and result.stop_reason == "cancelled" \
        else result.stop_reason
    if stop_reason == "time_cap":
        yield Progress(result.steps, settings.steps, f"time cap of {settings.time_cap_s:g} s "
                       f"reached after {result.steps} of {settings.steps} steps")
    new = result.model
    threshold = None
    if settings.choose_threshold:
        threshold = yield from choose_threshold_iter(new, train, model.threshold,
                                                     settings.min_foreground,
                                                     settings.threshold_min_gain)
        if threshold is not None:
            threshold.apply(new)
    cmp = yield from _compare(project, new, model, hold, settings.tolerance)
    metrics = {"best_val_dice": result.best_val_dice, "holdout_dice": cmp.new,
               "holdout_dice_parent": cmp.old, "holdout": list(hold), "recommend": cmp.recommend,
               "steps": result.steps, "planned_steps": settings.steps,
               "seconds": round(result.seconds, 1), "stop_reason": stop_reason,
               "threshold": new.threshold, "settings": settings.to_dict()}
    source = f"fine-tuned from {parent}" + (" after adapting its batch-norm statistics to "
                                            "the project's images" if adaptation else "")
    vid = project.versions.add(new, parent=parent, metrics=metrics,
                               data=[c.name for c in train], source=source)
    return RoundOutcome(vid, parent, new, cmp, result.steps, settings.steps,
                        time.perf_counter() - started, result.seconds, stop_reason, threshold,
                        result.best_val_dice, [c.name for c in train], list(hold),
                        [c.name for c in replay], adaptation, settings.time_cap_s)


def _adapt(project: Project, model: Model, device: str,
           should_stop: Callable[[], bool] | None) -> Generator[Progress, None, Model]:
    """A copy of ``model`` with batch-norm statistics of every project image (AdaBN)."""
    from ..train.adapt import LazyImages, adapt_batchnorm_iter

    names = project.cases()
    images = LazyImages(names, lambda n: project.load_case(n).image)
    return (yield from mapped(adapt_batchnorm_iter(model, images, device=device),
                              lambda rec: rec, should_stop))


def adaptation_round(project: Project, model: Model, device: str = "auto",
                     should_stop: Callable[[], bool] | None = None, tolerance: float = 0.005,
                     ) -> Generator[Progress, None, AdaptationOutcome]:
    """Re-estimate ``model``'s batch-norm statistics on every project image, compare, save.

    No label is used to adapt, so every corrected case judges the new version.

    Parameters
    ----------
    project : Project
        The project; its active version is the parent.
    model : Model
        The active version's model (not modified).
    device : str
        Where the statistics are gathered.
    should_stop : callable, optional
        Polled per record: True ends the job with :class:`~.errors.Cancelled`, nothing saved.
    tolerance : float
        As in :attr:`RoundSettings.tolerance`.

    Returns
    -------
    AdaptationOutcome
    """
    started = time.perf_counter()
    parent = _active_parent(project)
    names = project.cases()
    judged = [n for n in names if project.is_corrected(n)]
    adapted = yield from _adapt(project, model, device, should_stop)
    cmp = yield from _compare(project, adapted, model, judged, tolerance)
    metrics = {"holdout_dice": cmp.new, "holdout_dice_parent": cmp.old, "holdout": judged,
               "recommend": cmp.recommend, "adaptation": adapted.meta["adaptation"]}
    vid = project.versions.add(
        adapted, parent=parent, metrics=metrics, data=list(names),
        source=f"batch-norm statistics of {parent} re-estimated on {len(names)} project "
               "image(s)")
    return AdaptationOutcome(vid, parent, adapted, cmp, len(names),
                             time.perf_counter() - started)


def repredict_cases(project: Project, model: Model, version: str | None = None,
                    names: Sequence[str] | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    ) -> Generator[Progress, None, RepredictOutcome]:
    """Re-segment the cases nobody corrected yet with ``model`` (the version ``version``).

    Parameters
    ----------
    project : Project
    model : Model
        The model of ``version``.
    version : str, optional
        Version recorded with the new predictions (default: the active one).
    names : sequence of str, optional
        Default: every uncorrected case.
    should_stop : callable, optional
        Polled between cases: True returns what is done so far.

    Returns
    -------
    RepredictOutcome
        A case corrected while the job ran keeps its corrections (listed in ``skipped``).
    """
    version = version or _active_parent(project)
    names = list(project.feedback.uncorrected_cases() if names is None else names)
    done: list[str] = []
    skipped: list[str] = []
    for i, name in enumerate(names):
        if should_stop is not None and should_stop():
            break
        yield Progress(i, len(names), f"re-predicting {name}")
        pred = yield from model.predict_iter(project.load_case(name).image)
        try:
            project.update_prediction(name, pred.mask, pred.probabilities, version)
            done.append(name)
        except DataError:  # corrected meanwhile: keep the user's edits
            skipped.append(name)
    return RepredictOutcome(version, done, skipped)
