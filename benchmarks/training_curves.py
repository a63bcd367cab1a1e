"""Training logs and curves of benchmark runs, read from each run's checkpoint.

For every run folder (one written by ``drive_accuracy.py``, ``hippocampus_accuracy.py`` ...)
this writes ``<run>/history.csv`` (one row per epoch: step, seconds, lr, training loss,
validation Dice overall and per class) from ``meta['training']['history']`` of
``<run>/model.ckpt``. With ``--png`` it also draws validation Dice and training loss against the
optimizer step for all the runs in one figure (needs matplotlib: ``pip install -e .[bench]``).

A run continued from another checkpoint (``--init``, recorded in ``summary.json``) is drawn
after its parent: its steps are offset by the steps of every run before it in the chain.

    python benchmarks/training_curves.py runs/drive_drunet runs/drive_cont --png docs/images/curves-drive.png
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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


def step_offset(run: Path) -> int:
    """Steps done before this run: the sum over the chain of runs it was continued from."""
    summary = run / "summary.json"
    offset, link = 0, parent_run(json.loads(summary.read_text())) if summary.exists() else None
    while link is not None:
        ckpt, parent_summary = link
        hist = history_of(ckpt)
        offset += int(hist[-1].get("step") or 0) if hist else 0
        link = parent_run(parent_summary)
    return offset


def plot(runs: dict[str, tuple[int, list[dict]]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_d, ax_l) = plt.subplots(1, 2, figsize=(11, 4))
    last = max(off + int(h[-1]["step"]) for off, h in runs.values())
    late = [r["val_dice"] for off, h in runs.values() for r in h
            if r.get("val_dice") is not None and off + int(r["step"]) >= last // 4]
    if late:  # zoom on the part of the curve where runs differ, not the first epochs
        ax_d.set_ylim(max(0.0, min(late) - 0.02), min(1.0, max(late) + 0.01))
    for name, (offset, hist) in runs.items():
        steps = [offset + int(r["step"]) for r in hist]
        dice = [r.get("val_dice") for r in hist]
        ax_d.plot(steps, [d if d is not None else float("nan") for d in dice], label=name)
        ax_l.plot(steps, [r.get("loss") for r in hist], label=name)
    ax_d.set(xlabel="optimizer step", ylabel="validation Dice", title="validation Dice")
    ax_l.set(xlabel="optimizer step", ylabel="training loss (epoch mean)", title="training loss")
    for ax in (ax_d, ax_l):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders with a model.ckpt")
    ap.add_argument("--png", default=None, help="also draw the curves into this PNG")
    args = ap.parse_args()
    curves: dict[str, tuple[int, list[dict]]] = {}
    for run in map(Path, args.runs):
        hist = load_history(run)
        if not hist:
            print(f"{run}: no training history in model.ckpt")
            continue
        write_csv(hist, run / "history.csv")
        curves[run.name] = (step_offset(run), hist)
        best = max((r.get("val_dice") or 0.0) for r in hist)
        print(f"{run}/history.csv: {len(hist)} rows, last step {hist[-1].get('step')}, "
              f"best validation Dice {best:.4f}")
    if args.png and curves:
        plot(curves, Path(args.png))
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
