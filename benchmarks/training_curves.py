"""Training logs and curves of benchmark runs, read from each run's checkpoint.

For every run folder (one written by ``drive_accuracy.py``, ``hippocampus_accuracy.py`` ...)
this writes ``<run>/history.csv`` (one row per epoch: step, seconds, lr, training loss,
validation Dice overall and per class) from ``meta['training']['history']`` of
``<run>/model.ckpt``. With ``--png`` it also draws validation Dice and training loss against the
optimizer step for all the runs in one figure (needs matplotlib: ``pip install -e .[bench]``).

A run continued from another checkpoint (``--init``, recorded in ``summary.json``) is drawn
after its parent: its steps are offset by the steps of every run before it in the chain.

    python -m benchmarks.training_curves runs/drive_drunet runs/drive_cont --png docs/images/curves-drive.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .history import history_of, load_history, parent_run, write_csv


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
