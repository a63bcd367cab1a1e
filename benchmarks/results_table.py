"""Print Markdown tables from experiment folders (``runs/*/summary.json``) for docs/results.md.

    python -m benchmarks.results_table runs/drive_drunet runs/hippo3d ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def fmt(v, nd=4):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders with a summary.json")
    drive, hippo = [], []
    for f in ap.parse_args(argv).runs:
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
    raise SystemExit(main())
