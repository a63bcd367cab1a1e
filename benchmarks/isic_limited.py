"""The limited-data claim where DRU-Net's paper made it: DRU-Net vs U-Net vs ResU-Net on ISIC
subsets.

Each network (``--archs``, same ``--features``, recipe and step budget) is trained from scratch
on ISIC 2017 training subsets of ``--sizes`` images (drawn at random from the 2000, one draw per
seed, the same draw for every network so the comparison is paired); ``--seeds`` seeds for the
sizes up to ``--many-seeds-up-to``, seed 0 only above. The best weights by validation Dice
(``--val-cases`` of the official 150 validation images, scored every quarter of the run) are
kept; the binarisation threshold is 0.5 for every run (no per-run tuning, so no network gets
an advantage from it). The first ``--test-cases`` of the 600 test images are then scored per
image: Dice and Jaccard (both 1 when the mask and the prediction are empty). Summary: mean and
sample sd over the seeds of the per-run means, and DRU-Net's Dice gain over each baseline.

Under the 2-core CPU budget everything happens at half the stored size (128 x 96, the
``isic_accuracy.py`` training scale: images area-averaged, masks area-averaged and thresholded
at 0.5), test masks included, so the scores are at that scale.

    python -m benchmarks.isic_limited --out runs/isic_limited --steps 150
    python -m benchmarks.isic_limited --out /tmp/il --sizes 25 --seeds 1 --steps 4 \\
        --val-cases 4 --test-cases 4                                        # smoke run (~1 min)

Writes ``<out>/runs.json`` (one row per run, appended as runs finish: a stopped study keeps its
rows and a rerun skips them) and ``<out>/limited.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .common import DATA
from .isic_data import draw, half_size_splits, score, train_one


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isic", default=str(DATA / "ISIC2017"))
    ap.add_argument("--small", default=None,
                    help="half-size copy (default <out>/data; made when missing)")
    ap.add_argument("--archs", default="drunet,unet,resunet")
    ap.add_argument("--features", default="8,16,32,64,128")
    ap.add_argument("--sizes", default="25,100,400,2000", help="training subset sizes")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--many-seeds-up-to", type=int, default=100,
                    help="larger subsets get seed 0 only")
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps per run")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--val-cases", type=int, default=50)
    ap.add_argument("--test-cases", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    return ap.parse_args(argv)


def summarise(rows: list[dict], archs: Sequence[str]) -> list[dict]:
    """Per (size, arch): mean and sd over seeds of test Dice / Jaccard, and the gain of
    ``archs[0]`` (DRU-Net) over each other network, in Dice points."""
    table = []
    for size in sorted({r["size"] for r in rows}):
        by_arch = {a: [r for r in rows if r["size"] == size and r["arch"] == a] for a in archs}
        means = {a: float(np.mean([r["test"]["dice"] for r in rs])) for a, rs in by_arch.items()
                 if rs}
        for a, rs in by_arch.items():
            if not rs:
                continue
            d = [r["test"]["dice"] for r in rs]
            j = [r["test"]["jaccard"] for r in rs]
            table.append({"size": size, "arch": a, "runs": len(rs),
                          "dice": float(np.mean(d)), "dice_sd": _sd(d),
                          "jaccard": float(np.mean(j)), "jaccard_sd": _sd(j),
                          "steps": rs[0]["steps"],
                          "seconds": float(np.mean([r["seconds"] for r in rs])),
                          "gain_of_first": (means[archs[0]] - means[a]
                                            if archs[0] in means and a != archs[0] else None)})
    return table


def _sd(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def markdown(table: list[dict], archs: Sequence[str]) -> str:
    """The summary as a markdown table."""
    lines = [f"| train images | network | runs | test Dice | test Jaccard | {archs[0]} Dice "
             "gain | train s |", "|---|---|---|---|---|---|---|"]
    for t in table:
        gain = "" if t["gain_of_first"] is None else f"{100 * t['gain_of_first']:+.1f} pt"
        sd_d = "" if np.isnan(t["dice_sd"]) else f" ± {t['dice_sd']:.3f}"
        sd_j = "" if np.isnan(t["jaccard_sd"]) else f" ± {t['jaccard_sd']:.3f}"
        lines.append(f"| {t['size']} | {t['arch']} | {t['runs']} | {t['dice']:.3f}{sd_d} | "
                     f"{t['jaccard']:.3f}{sd_j} | {gain} | {t['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool, val, test = half_size_splits(args, out)
    archs = args.archs.split(",")
    runs_path = out / "runs.json"
    rows = json.loads(runs_path.read_text()) if runs_path.exists() else []
    done = {(r["size"], r["seed"], r["arch"]) for r in rows}
    sizes = [int(s) for s in args.sizes.split(",")]
    # seed 0 of every size first: a study stopped early still covers every size
    for seed, size in [(seed, size) for seed in range(args.seeds) for size in sizes
                       if seed == 0 or size <= args.many_seeds_up_to]:
        subset = [pool[i] for i in draw(len(pool), size, seed)]
        for arch in archs:
            if (size, seed, arch) in done:
                continue
            t0 = time.time()
            res = train_one(arch, subset, val, seed, args)
            seconds = time.time() - t0
            rows.append({"size": size, "seed": seed, "arch": arch, "steps": res.steps,
                         "seconds": round(seconds, 1), "best_val_dice": res.best_val_dice,
                         "test": score(res.model, test),
                         "params": sum(p.numel() for p in res.model.network.parameters())})
            runs_path.write_text(json.dumps(rows, indent=1))
            print(json.dumps(rows[-1]), flush=True)
            write_summary(out, rows, archs, {"config": vars(args), "test_images": len(test),
                                             "val_images": len(val)})
    print((out / "limited.md").read_text() if rows else "no runs")
    return 0


def write_summary(out: Path, rows: list[dict], archs: Sequence[str], info: dict) -> None:
    """``<out>/limited.md`` and ``<out>/summary.json`` from the runs so far."""
    table = summarise(rows, archs)
    (out / "limited.md").write_text(markdown(table, archs))
    (out / "summary.json").write_text(json.dumps(info | {"table": table}, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
