"""The limited-data curve of the correction loop on ISIC (issue 20.3): start from a model trained
on 25 images, correct the most uncertain cases, against training from scratch on the same images.

The product's path, headless, with a simulated clinician: DRU-Net is trained on ``--start``
ISIC training images with the ``isic_limited`` recipe (half size, 128 x 96, the same steps);
those images go into a correction project as corrected cases and ``--pool`` other training
images as uncorrected cases, predicted by the active model. Each round takes the ``--k`` most
uncertain uncorrected cases (the Corrections widget's "Next most uncertain case"), replaces
their prediction by the reference mask (the clinician's correction), and presses "Start
fine-tuning" with the widget's defaults (``core.correction.round.correction_round``; the new
version is promoted when the comparison on the held-back case advises it, as the widget does,
or with ``--promote always`` every time); the uncorrected cases are then re-predicted by the
active version. After every round the active model and the round's new version are scored on
the first ``--test-cases`` test images (Dice and Jaccard per image, at the model's own
threshold, which the round re-chooses). The baseline trains DRU-Net from scratch, same recipe
and steps, on the same labelled images (the start images plus those the loop chose).

    python -m benchmarks.isic_loop --out runs/isic_loop --small runs/isic_limited/data

Writes ``<out>/loop.json``. Not a test: about 15 minutes of one CPU core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .common import DATA
from .isic_data import draw, half_size_splits, score, train_one
from .rounds import gui_finetune_round, next_cases, refresh_predictions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isic", default=str(DATA / "ISIC2017"))
    ap.add_argument("--small", default=None,
                    help="half-size copy (default <out>/data; made when missing)")
    ap.add_argument("--start", type=int, default=25, help="images of the first model")
    ap.add_argument("--pool", type=int, default=300, help="uncorrected images in the project")
    ap.add_argument("--k", type=int, default=25, help="cases corrected per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--features", default="8,16,32,64,128")
    ap.add_argument("--steps", type=int, default=148, help="steps of each from-scratch run")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--val-cases", type=int, default=50)
    ap.add_argument("--test-cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    # the Fine-tune widget's options (benchmarks.rounds): its defaults unless given
    ap.add_argument("--max-steps", type=int, default=None, help="round steps")
    ap.add_argument("--round-budget", type=float, default=240.0, help="round time cap (s)")
    ap.add_argument("--ft-lr", type=float, default=None)
    ap.add_argument("--holdout", type=int, default=None,
                    help="held-back cases (default: the widget's, 1 in 5, at least 1)")
    ap.add_argument("--no-guard", action="store_true")
    ap.add_argument("--promote-unknown", default="yes", choices=("yes", "no"))
    ap.add_argument("--promote", default="advised", choices=("advised", "always"),
                    help="advised: Promote when the comparison advises it (the widget's "
                    "advice); always: every new version (the next round starts from it)")
    args = ap.parse_args(argv)
    args.device = "cpu"
    return args


def corrected(project, cases: dict, names: list[str]) -> None:
    """The clinician's corrections: the reference mask of each case, the whole image reviewed."""
    for name in names:
        project.save_correction(name, (cases[name].label > 0).astype("uint8"))
        project.mark_reviewed(name, "all")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from napari_drunet.core.correction.project import Project

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_all, val, test = half_size_splits(args, out)
    start_idx = draw(len(train_all), args.start, args.seed)  # isic_limited's draw of that size
    rest = [i for i in range(len(train_all)) if i not in set(start_idx)]
    pool = [train_all[i] for i in rest[:args.pool]]
    start = [train_all[i] for i in start_idx]
    cases = {c.name: c for c in start + pool}

    t0 = time.time()
    first = train_one("drunet", start, val, args.seed, args)
    rows = [{"round": 0, "labelled": len(start), "seconds": round(time.time() - t0, 1),
             "loop": score(first.model, test, threshold=None)}]
    print(json.dumps(rows[-1]), flush=True)
    project = Project.create(out / "project")
    project.versions.add(first.model, source=f"isic{args.start}")
    refresh_predictions(project, first.model, start + pool)
    corrected(project, cases, [c.name for c in start])
    model = first.model
    for r in range(1, args.rounds + 1):
        chosen = next_cases(project, "uncertain", args.k)
        corrected(project, cases, chosen)
        t0 = time.time()
        step = gui_finetune_round(project, model, args)
        if args.promote == "always" and not step["promoted"]:  # the clinician overrides
            project.versions.set_active(step["version"])
            step["promoted"] = True
        if step["promoted"]:  # the uncorrected cases are re-predicted by the new version
            model = step["model"]
            refresh_predictions(project, model, pool)
        labelled = sorted(set(project.cases()) - set(project.feedback.uncorrected_cases()))
        t1 = time.time()
        scratch = train_one("drunet", [cases[n] for n in labelled], val, args.seed, args)
        rows.append({"round": r, "labelled": len(labelled), "chosen": chosen,
                     "round_s": step["ft_round_s"], "promoted": step["promoted"],
                     "recommend": step["recommend"], "steps": step["finetune_steps"],
                     "stop_reason": step["stop_reason"], "threshold": step["threshold"],
                     "loop": score(model, test, threshold=None),
                     "new_version": score(step["model"], test, threshold=None),
                     "scratch": score(scratch.model, test, threshold=None),
                     "scratch_s": round(time.time() - t1, 1), "loop_s": round(t1 - t0, 1)})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "chosen"}), flush=True)
        write(out, args, rows)
    write(out, args, rows)
    return 0


def write(out: Path, args: argparse.Namespace, rows: list[dict]) -> None:
    (out / "loop.json").write_text(json.dumps({"config": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
