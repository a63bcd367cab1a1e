"""The correction project as a simulated clinician drives it through the GUI's buttons:
the Fine-tune widget's round with its defaults (``gui_round_settings``, ``gui_finetune_round``),
*Adapt to the project's images* (``adapt_project``), re-predicting uncorrected cases and the
next cases to correct. Shared by ``label_efficiency`` (DRIVE) and ``mri_adaptation`` (MRI).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np


def gui_round_settings(args: argparse.Namespace) -> Any:
    """The Fine-tune widget's options for this run: the core's round defaults
    (:func:`~napari_drunet.core.correction.round.default_round_settings`, as the widget shows
    them) with its steps, time cap, learning rate, held-back cases, forgetting-guard checkbox,
    device and seed taken from ``args``."""
    from dataclasses import replace

    from napari_drunet.core.correction.round import default_round_settings

    base = default_round_settings()
    guard = not args.no_guard  # "forgetting guard (L2-SP + replay of uncorrected cases)"
    return replace(base, steps=args.max_steps or base.steps,
                   time_cap_s=float(args.round_budget) or None,
                   lr=args.ft_lr or base.lr, l2sp=base.l2sp if guard else 0.0,
                   replay_fraction=base.replay_fraction if guard else 0.0,
                   holdout=args.holdout, device=args.device, seed=args.seed)


def gui_finetune_round(project: Any, base: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One press of the GUI's "Start fine-tuning" (the core's ``correction_round``, which the
    widget runs), then Promote / Keep previous as advised: promoted when the comparison on the
    held-back cases is not worse (``recommend`` True; None follows ``--promote-unknown``)."""
    from napari_drunet.core.correction import round as rounds
    from napari_drunet.core.progress import drive

    out = drive(rounds.correction_round(project, base, gui_round_settings(args)))
    promote = out.recommend if out.recommend is not None else args.promote_unknown == "yes"
    if promote:
        project.versions.set_active(out.version)
    return {"model": out.model, "version": out.version, "parent": out.parent,
            "promoted": bool(promote), "train_cases": out.train_cases,
            "holdout": out.holdout_cases, "replay_cases": out.replay_cases,
            "finetune_steps": out.steps, "finetune_s": round(out.train_seconds, 1),
            "stop_reason": out.stop_reason, "best_val_dice": out.best_val_dice,
            "ft_round_s": round(out.seconds, 1), "recommend": out.recommend,
            "compare_new": out.holdout_dice, "compare_old": out.holdout_dice_parent,
            "compare_reason": out.comparison.reason, "threshold": out.model.threshold,
            "threshold_chosen": bool(out.threshold and out.threshold.chosen)}


def adapt_project(project: Any, model: Any, pool: list, device: str) -> Any:
    """The Fine-tune widget's "Adapt to the project's images (no labels)" (the core's
    ``adaptation_round``) followed by Promote, whatever the comparison says; the uncorrected
    cases are then re-predicted. Returns the adapted model."""
    from napari_drunet.core.correction import round as rounds
    from napari_drunet.core.progress import drive

    out = drive(rounds.adaptation_round(project, model, device))
    project.versions.set_active(out.version)
    refresh_predictions(project, out.model, pool)
    return out.model


def store_prediction(project: Any, model: Any, case: Any) -> np.ndarray:
    """Predict ``case`` with the active ``model`` and store it in the project (a new case, or
    the re-prediction of an uncorrected one); return the predicted label map."""
    pred = model.predict(case.image)
    if case.name in project.cases():
        project.update_prediction(case.name, pred.mask, pred.probabilities,
                                  model_version=project.versions.active)
    else:
        project.add_case(case.name, case.image, pred.mask, pred.probabilities,
                         model_version=project.versions.active)
    return pred.mask


def refresh_predictions(project: Any, model: Any, pool: list) -> None:
    """Store the active model's prediction of every uncorrected pool case: new ones are added,
    those in the project re-predicted (the widget's "Re-predict uncorrected cases")."""
    from napari_drunet.core.correction import round as rounds
    from napari_drunet.core.progress import drive

    known = set(project.cases())
    for case in pool:
        if case.name not in known:
            store_prediction(project, model, case)
    uncorrected = set(project.feedback.uncorrected_cases())
    drive(rounds.repredict_cases(project, model, names=[c.name for c in pool
                                                        if c.name in known & uncorrected]))


def next_cases(project: Any, order: str, k: int) -> list[str]:
    """The next ``k`` uncorrected cases: in image order, or most uncertain first (the
    Corrections widget's "next most uncertain case")."""
    remaining = project.feedback.uncorrected_cases()
    if order == "uncertain":
        ranked = [n for n, _ in project.uncertainty_ranking() if n in remaining]
        remaining = ranked + [n for n in remaining if n not in ranked]
    if len(remaining) < k:
        raise SystemExit(f"error: only {len(remaining)} uncorrected cases left for k={k}")
    return sorted(remaining)[:k] if order == "sequential" else remaining[:k]


def start_run(args: argparse.Namespace) -> Path:
    """Seeds (torch, numpy) and torch threads from ``args``; creates and returns ``args.out``."""
    import torch

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out
