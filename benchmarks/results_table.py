"""Print Markdown tables from experiment folders (``runs/*/summary.json``) for docs/results.md.

    python benchmarks/results_table.py runs/drive_drunet runs/hippo3d ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(v, nd=4):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def main(folders: list[str]) -> int:
    drive, hippo = [], []
    for f in folders:
        s = json.loads((Path(f) / "summary.json").read_text())
        (hippo if "dims" in s else drive).append((f, s))
    if drive:
        print("| run | arch | train imgs | params | steps | train s | thr | F1/Dice | Se | "
              "Sp | Acc | AUC | MCC | HD95 px |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for f, s in drive:
            t = s["test"]
            print(f"| {Path(f).name} | {s['arch']} | {s['train_cases']} | {s['params']:,} | "
                  f"{s.get('steps', '-')} | {s['train_seconds']:.0f} | {s['threshold']:.2f} | "
                  f"{fmt(t.get('dice'))} | {fmt(t.get('sensitivity'))} | "
                  f"{fmt(t.get('specificity'))} | {fmt(t.get('accuracy'))} | {fmt(t.get('auc'))} | "
                  f"{fmt(t.get('mcc'))} | {fmt(t.get('hd95'), 1)} |")
    if hippo:
        print("\n| run | dims | train/val/test | train s | Dice anterior | Dice posterior | "
              "HD95 ant. (mm) | HD95 post. (mm) |")
        print("|---|---|---|---|---|---|---|---|")
        for f, s in hippo:
            t = s["test"]
            print(f"| {Path(f).name} | {s['dims']}D | {s['train_volumes']}/{s['val_volumes']}/"
                  f"{s['test_volumes']} | {s['train_seconds']:.0f} | {fmt(t['1']['dice'])} | "
                  f"{fmt(t['2']['dice'])} | {fmt(t['1']['hd95'], 2)} | {fmt(t['2']['hd95'], 2)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
