"""Training histories of benchmark runs, read from their checkpoints' headers.

Shared by the accuracy scripts (``history.csv`` of each run), ``training_curves`` (the
curves) and ``package_model`` (the model card's training stages of a chain of runs).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path


def load_history(run: Path) -> list[dict]:
    """The per-epoch training history stored in ``<run>/model.ckpt`` (header only, no weights)."""
    return history_of(run / "model.ckpt")


def history_of(ckpt: str | Path) -> list[dict]:
    """The per-epoch training history stored in a checkpoint (header only, no weights)."""
    from napari_drunet.core.models.checkpoint import read_meta

    return list((read_meta(ckpt).get("training") or {}).get("history") or [])


def parent_run(summary: dict) -> tuple[Path, dict] | None:
    """``(checkpoint, summary)`` of the run this one was continued from (``--init``); the
    summary is ``{}`` when that folder has none. None for a run from scratch or a missing
    checkpoint."""
    init = summary.get("init")
    if not init or not Path(init).exists():
        return None
    parent = Path(init).parent / "summary.json"
    return Path(init), (json.loads(parent.read_text()) if parent.exists() else {})


def _per_class(rec: dict) -> dict[str, float]:
    """``val_dice_per_class`` (a list over the foreground classes 1..K, or a dict) as a dict."""
    per = rec.get("val_dice_per_class") or {}
    if isinstance(per, dict):
        return {str(k): v for k, v in per.items()}
    return {str(i + 1): v for i, v in enumerate(per)}


def write_csv(history: list[dict], path: Path) -> None:
    """One row per epoch; ``val_dice_per_class`` is spread into ``val_dice_<class>`` columns."""
    classes: list[str] = []
    for rec in history:
        for key in _per_class(rec):
            if key not in classes:
                classes.append(key)
    cols = ["epoch", "step", "seconds", "lr", "loss", "val_dice", "val_seconds"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols + [f"val_dice_{c}" for c in classes])
        for rec in history:
            per = _per_class(rec)
            w.writerow([rec.get(c, "") for c in cols] + [per.get(c, "") for c in classes])
