"""The few-label loop on the multi-modal, multi-class 3D model: correct one slab, one round,
re-score (issue 20.4).

The product's path, headless: the two BraTS test (or ``--split validation``) studies (FLAIR + T1c read as one 2-channel
image, ``napari_drunet.core.image.study``) are segmented by the model and added to a project
as cases. On the first study one axial slab of ``--slab`` slices through the tumour is
corrected as a clinician paints it (the reference labels copied into the prediction there)
and those slices are marked reviewed. One correction round with the widget's defaults
(``core.correction.round.correction_round`` with ``default_round_settings``; the single
corrected case cannot be held back, so the comparison has no case to judge on) fine-tunes on
the slab, and both studies are segmented again with the new version and scored with the BraTS
regions (whole tumour 1-4, tumour core 1/3/4, enhancing 4). The second study was never
corrected: its change is the loop's effect on an unseen case; on the first, the Dice outside
the slab is reported too.

    python -m benchmarks.brats_loop --model runs/brats/model.ckpt --out runs/brats_loop

Writes ``<out>/loop.json``. Not a test: minutes of CPU per round.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .brats_data import brats_cases, region_scores
from .common import add_data_option


def tumour_slab(truth: np.ndarray, depth: int) -> slice:
    """``depth`` axial slices (axis 0) centred on the slice with the most tumour."""
    per_slice = (truth > 0).reshape(truth.shape[0], -1).sum(1)
    centre = int(np.argmax(per_slice))
    start = int(np.clip(centre - depth // 2, 0, max(truth.shape[0] - depth, 0)))
    return slice(start, start + depth)


def score(model, studies: dict, slab: slice, corrected: str) -> tuple[dict, dict]:
    """Region Dice of ``model`` on every study (on the corrected one also outside ``slab``),
    and the predictions."""
    out, preds = {}, {}
    for name, (image, truth, spacing) in studies.items():
        preds[name] = model.predict(image)
        mask = preds[name].mask
        row = {r: round(v["dice"], 4) for r, v in region_scores(mask, truth, spacing).items()}
        if name == corrected:
            keep = np.ones(truth.shape[0], bool)
            keep[slab] = False
            outside = region_scores(mask[keep], truth[keep], spacing)
            row["outside the slab"] = {r: round(v["dice"], 4) for r, v in outside.items()}
        out[name] = row
    return out, preds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(ap, "--brats", "BraTS2015_6")
    ap.add_argument("--model", required=True, help="the 2-channel, 5-class 3D checkpoint")
    ap.add_argument("--out", required=True)
    ap.add_argument("--slab", type=int, default=8, help="axial slices corrected (1 mm)")
    ap.add_argument("--steps", type=int, default=None, help="round steps (default: the "
                    "widget's default)")
    ap.add_argument("--freeze-norm", action="store_true",
                    help="the round keeps the batch-norm statistics (RoundSettings.freeze_norm)")
    ap.add_argument("--split", default="test", choices=("validation", "test"),
                    help="studies segmented, corrected and scored (validation: for choosing "
                    "the round's options)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    import torch

    from napari_drunet.core.correction.project import Project
    from napari_drunet.core.correction.round import correction_round, default_round_settings
    from napari_drunet.core.image.io import read_label
    from napari_drunet.core.image.study import read_study
    from napari_drunet.core.models.model import load_model
    from napari_drunet.core.progress import run_to_end

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model, "cpu")
    studies = {}
    for entry in brats_cases(args.brats, args.split):
        truth, geom = read_label(entry["label"])
        studies[entry["name"]] = (read_study(entry["image"]), truth, geom.spacing)
    first = next(iter(studies))
    slab = tumour_slab(studies[first][1], args.slab)

    t0 = time.perf_counter()
    before, preds = score(model, studies, slab, first)
    score_s = time.perf_counter() - t0
    project = Project.create(out / "project")
    vid = project.versions.add(model, source=args.model)
    for name, (image, _truth, _spacing) in studies.items():
        pred = preds[name]
        project.add_case(name, image, pred.mask, pred.probabilities, model_version=vid)
    rec = project.load_case(first)
    correction = rec.correction.copy()
    correction[slab] = studies[first][1][slab]
    project.save_correction(first, correction, reviewed_slices=range(slab.start, slab.stop))

    settings = default_round_settings(model, project)
    if args.steps:
        settings.steps = args.steps
    settings.freeze_norm = args.freeze_norm
    t0 = time.perf_counter()
    outcome = run_to_end(correction_round(project, model, settings))
    round_s = time.perf_counter() - t0
    after, _preds = score(outcome.model, studies, slab, first)
    result = {
        "model": args.model, "split": args.split, "corrected_case": first,
        "slab": [slab.start, slab.stop], "slab_voxels_corrected": int(
            (correction[slab] != rec.prediction[slab]).sum()),
        "round": {"summary": outcome.summary(), "steps": outcome.steps,
                  "planned_steps": outcome.planned_steps, "seconds": round(round_s, 1),
                  "train_seconds": round(outcome.train_seconds, 1),
                  "stop_reason": outcome.stop_reason},
        "before": before, "after": after, "score_seconds_per_pass": round(score_s, 1),
        "threads": torch.get_num_threads(),
    }
    (out / "loop.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
