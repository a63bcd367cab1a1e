"""The few-label loop on the brain-tumour model in the real napari GUI (issue 20.4).

Opens the two BraTS 2015 test studies (FLAIR + T1c folders) in a napari window under Xvfb,
segments each with the model the Segment widget proposes, adds both as cases of a corrections
project, corrects a slab of axial slices of the first study to the reference labels with
napari's own painting call (``Labels.data_setitem``, what a brush stroke records), marks those
slices reviewed, runs one Fine-tune round with the widget's defaults, promotes the new version,
segments both studies again with it and scores the BraTS regions before and after::

    xvfb-run -a .venv/bin/python scripts/brats_gui_loop.py --out runs/brats_gui_loop

Writes ``<out>/result.json`` and two screenshots.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _shots_module():
    spec = importlib.util.spec_from_file_location("screenshots", REPO / "scripts" / "screenshots.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brats", default=str(REPO.parent / "shared" / "data" / "BraTS2015_6"))
    ap.add_argument("--slab", default="59,67", help="axial slices corrected, start,stop (1 mm)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from benchmarks.brats_data import LABEL_FILE, region_scores
    from napari_drunet.core.image.io import read_label
    from napari_drunet.gui._state import PROJECT_ACTIVE

    torch.set_num_threads(args.threads)
    shots = _shots_module()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    studies = sorted(p for p in (Path(args.brats) / "test").iterdir() if p.is_dir())
    truth = {p.name: read_label(p / LABEL_FILE)[0] for p in studies}
    s = shots.Session(shots.parse_args(["--out", str(out)]), out)
    viewer, seg = s.viewer, s.widgets["Segment"]
    corr, ft = s.widgets["Corrections"], s.widgets["Fine-tune"]

    def segment(study: Path, model: str | None = None) -> tuple[object, dict]:
        for layer in [la for la in viewer.layers if la.name.startswith(study.name)]:
            viewer.layers.remove(layer)
        viewer.open(str(study), plugin="napari-drunet")
        shots.pump(0.3)
        if model:  # else the model the widget proposes for the study
            seg.set_model_source(model)
        shots.wait_job(seg.run(), f"segmenting {study.name} with {seg.model_source()}")
        labels = next(la for la in viewer.layers
                      if la.name.startswith(study.name) and la.name.endswith("labels"))
        scores = region_scores(np.asarray(labels.data), truth[study.name], (1.0, 1.0, 1.0))
        return labels, {k: round(v["dice"], 4) for k, v in scores.items()}

    result: dict = {"model": None, "before": {}, "after": {}}
    project_dir = Path(tempfile.mkdtemp(prefix="brats-gui-loop-")) / "project"
    if corr.create_project(project_dir) is None:
        raise SystemExit("could not create the project")
    layers = {}
    for study in studies:
        layers[study.name], result["before"][study.name] = segment(study)
        result["model"] = seg.model_source()
        corr.add_current_result()
        shots.wait_job(corr.job, f"adding {study.name} as a case")
    first = studies[0].name
    labels = layers[first]  # its Segment result, tracked as a case since it was added
    viewer.layers.selection.active = labels  # the case the Corrections buttons act on
    shots.pump(0.5)
    if corr.tracker is None or corr.tracker.layer is not labels:
        raise SystemExit(f"{labels.name} is not the case being corrected")
    z0, z1 = (int(v) for v in args.slab.split(","))
    want = truth[first][z0:z1].astype(labels.data.dtype)
    have = np.asarray(labels.data[z0:z1])
    changed = 0
    for value in np.unique(want):  # one stroke per class, as a user paints class by class
        idx = np.nonzero((want == value) & (have != value))
        if idx[0].size:
            labels.data_setitem((idx[0] + z0, idx[1], idx[2]), int(value))
            changed += idx[0].size
    for z in range(z0, z1):
        viewer.dims.set_point(0, float(z))
        corr.mark_slice_reviewed()
    corr.flush()
    result["slab"], result["voxels_changed"] = [z0, z1], changed
    s.show_dock("Corrections")
    viewer.dims.set_point(0, float((z0 + z1) // 2))
    s.shot("brats-gui-corrected.png")

    s.show_dock("Fine-tune")
    t0 = time.time()
    job = ft.start()
    if job is None:
        raise SystemExit("fine-tuning did not start")
    shots.wait_job(job, "fine-tuning with the widget's defaults")
    result["round_seconds"] = round(time.time() - t0, 1)
    result["round"] = ft.verdict.text()
    s.shot("brats-gui-finetuned.png")
    ft.promote()  # one corrected study: nothing held back, no advice either way
    shots.pump(0.5)
    for study in studies:
        _, result["after"][study.name] = segment(study, PROJECT_ACTIVE)
    result["model_after"] = seg.model_source()
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
