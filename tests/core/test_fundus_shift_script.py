"""benchmarks/fundus_shift.py: the simulated camera shifts and one real run on a DRIVE image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _fundus(size: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    fov = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2
    lab = fov & (np.abs(yy - xx) < 2)
    img = np.zeros((size, size, 3), np.uint8)
    img[fov] = (180, 90, 40)
    img[lab] = (120, 50, 20)
    return img, lab, fov


def test_shifts_keep_image_label_and_fov_together(bench_script):
    script = bench_script("fundus_shift")
    img, lab, fov = _fundus()
    for name, shift in script.SHIFTS.items():
        out, lab2, fov2 = shift(img, lab, fov)
        assert out.dtype == np.uint8 and out.shape[-1] == 3, name
        assert out.shape[:2] == lab2.shape == fov2.shape, name
        if name.startswith("size"):
            factor = float(name.split("x")[1])
            assert abs(lab2.shape[0] - factor * 60) <= 1
            assert abs(fov2.mean() - fov.mean()) < 0.02 and abs(lab2.mean() - lab.mean()) < 0.02
        else:
            assert lab2 is lab and fov2 is fov, name
    assert np.array_equal(script.SHIFTS["none"](img, lab, fov)[0], img)
    dark = script.SHIFTS["gamma 1.6"](img, lab, fov)[0]
    assert dark[fov].mean() < img[fov].mean()
    ramp = script.SHIFTS["illumination ramp"](img, lab, fov)[0].astype(float)
    assert ramp[30, 10:20, 0].mean() < ramp[30, 40:50, 0].mean()


def test_without_rescale_drops_only_the_fov_diameter(bench_script):
    from napari_drunet.core.model import load_model

    script = bench_script("fundus_shift")
    model = load_model("retina-vessels", device="cpu")
    plain = script.without_rescale(model)
    assert "fov_diameter" in model.meta["preprocess"]
    assert "fov_diameter" not in plain.meta["preprocess"]
    assert plain.meta["preprocess"]["mask_outside_fov"] is True


def test_one_drive_image_scored_with_and_without_rescale(drive_root: Path, tmp_path: Path,
                                                         bench_script):
    script = bench_script("fundus_shift")
    out = tmp_path / "shift.json"
    assert script.main(["--drive", str(drive_root), "--split", "val", "--limit", "1",
                        "--shifts", "none,size x2.5", "--threads", "1",
                        "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["images"] == 1 and data["split"] == "val"
    rows = {(r["shift"], r["rescale"]): r for r in data["results"]}
    assert set(rows) == {("none", True), ("size x2.5", True), ("size x2.5", False)}
    # the packaged model on a validation image it was not trained on: a real vessel map
    assert rows[("none", True)]["f1"] > 0.75 and rows[("none", True)]["auc"] > 0.95
    # at 2.5x the size the FOV rescaling is what keeps it working
    assert rows[("size x2.5", True)]["f1"] > rows[("size x2.5", False)]["f1"] + 0.1
