"""Acceptance test: one clinician's whole working sitting in a real napari viewer.

Files are opened through the plugin's reader as a user would (a 3D NIfTI scan stored LAS,
oblique and anisotropic; two grey PNG photographs), segmented with the Segment widget, added
as cases of two projects (3D and 2D), corrected in any order with napari's paint operations,
fine-tuned, promoted and reverted; the window is closed and the projects reopened in a new one.
Every edit must be on disk within 1 s, every saved mask must open in another library (nibabel
in world coordinates, imageio for PNG) exactly where it was painted.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from napari_drunet.core.correction.project import Project
from napari_drunet.gui.corrections import CorrectionsWidget
from napari_drunet.gui.finetune import FinetuneWidget
from napari_drunet.gui.segment import SegmentWidget
from napari_drunet.gui.versions import VersionsWidget

from .conftest import (
    add_case,
    disc_image,
    open_project,
    save_tiny_model,
    segment_layer,
    show_case,
    small_finetune,
)

pytestmark = pytest.mark.gui
SAVE_WITHIN = 1.0  # seconds: an edit must reach the project folder this soon


def _oblique_las_affine(spacing: tuple[float, float, float], origin: tuple[float, ...]):
    theta = np.deg2rad(12.0)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0.0],
                    [np.sin(theta), np.cos(theta), 0.0],
                    [0.0, 0.0, 1.0]])
    flip = np.diag([-1.0, 1.0, 1.0])  # LAS: the first voxel axis runs right to left
    affine = np.eye(4)
    affine[:3, :3] = rot @ flip @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def _write_scan(path: Path, marker: tuple[int, int, int]) -> object:
    """A NIfTI volume (X, Y, Z) with a blob and one unique brightest voxel at ``marker``."""
    import nibabel as nib

    rng = np.random.default_rng(3)
    x, y, z = np.mgrid[:20, :24, :12]
    data = (((x - 10) ** 2 + (y - 12) ** 2 + 4 * (z - 6) ** 2) < 40).astype(np.float32)
    data += 0.1 * rng.normal(size=data.shape).astype(np.float32)
    data[marker] = 5.0
    affine = _oblique_las_affine((1.0, 1.5, 3.0), (32.0, -40.0, -16.0))
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return img


def _write_photo(path: Path, seed: int, marker: tuple[int, int]) -> None:
    import imageio.v3 as iio

    grey = disc_image(40, seed)[:, :36]
    grey = np.clip((grey - grey.min()) / (np.ptp(grey) + 1e-6) * 200, 0, 200).astype(np.uint8)
    grey[marker] = 255
    iio.imwrite(path, grey)


def _marker_index(layer) -> tuple[int, ...]:
    data = np.asarray(layer.data)
    return tuple(int(i) for i in np.unravel_index(np.argmax(data), data.shape))


def _stroke(layer, centre: tuple[int, ...], label: int, brush: int = 3) -> np.ndarray:
    """Paint with napari's own brush (the mouse tool's code path); returns the expected mask."""
    layer.brush_size = brush
    layer.selected_label = label
    layer.paint(centre, label, refresh=True)
    return np.asarray(layer.data).copy()


def _on_disk(folder: Path, case: str) -> np.ndarray:
    """The case's corrected mask as stored in the project folder (a fresh reader)."""
    return Project.open(folder).load_case(case).correction


def _wait_on_disk(qtbot, folder: Path, case: str, expected: np.ndarray) -> float:
    t0 = time.perf_counter()
    qtbot.waitUntil(lambda: np.array_equal(_on_disk(folder, case), expected),
                    timeout=int(SAVE_WITHIN * 1000) + 500)
    return time.perf_counter() - t0


def test_a_clinicians_sitting(make_napari_viewer, qtbot, tmp_path, errors):
    import imageio.v3 as iio
    import nibabel as nib

    ckpt2d = save_tiny_model(tmp_path / "tiny2d.safetensors")
    ckpt3d = save_tiny_model(tmp_path / "tiny3d.safetensors", spatial_dims=3)
    marker3 = (5, 7, 3)
    scan_path = tmp_path / "scan.nii.gz"
    scan = _write_scan(scan_path, marker3)
    photos = {"eyeA": (tmp_path / "eyeA.png", (9, 11)), "eyeB": (tmp_path / "eyeB.png", (30, 20))}
    for i, (path, marker) in enumerate(photos.values()):
        _write_photo(path, i, marker)

    viewer = make_napari_viewer()
    seg, corr = SegmentWidget(viewer), CorrectionsWidget(viewer)
    ft, ver = FinetuneWidget(viewer), VersionsWidget(viewer)

    # ---- 3D: a scan opened from disk becomes the Segment target, segmented, added, corrected
    p3 = tmp_path / "mri-project"
    assert corr.create_project(p3) is not None
    viewer.open(str(scan_path), plugin="napari-drunet")
    assert seg.selected_layer_names() == ["scan"]  # the image just opened is the target
    seg.set_model_source(str(ckpt3d))
    vol_labels = segment_layer(qtbot, seg, "scan")
    assert add_case(qtbot, corr) == "scan"
    m3 = _marker_index(viewer.layers["scan"])
    expected_scan = _stroke(vol_labels, m3, 1, brush=1)
    assert _wait_on_disk(qtbot, p3, "scan", expected_scan) <= SAVE_WITHIN + 0.5

    # ---- 2D: a second project, two photographs, edits in any order on layers left open
    p2 = tmp_path / "eye-project"
    assert corr.create_project(p2) is not None
    seg.set_model_source(str(ckpt2d))
    for name, (path, _) in photos.items():
        viewer.open(str(path), plugin="napari-drunet")
        assert seg.selected_layer_names() == [name]
        segment_layer(qtbot, seg, name)
        assert add_case(qtbot, corr) == name
    layers = {n: viewer.layers[f"{n} labels"] for n in photos}
    expected = {}
    for name, centre, label in (("eyeB", (20, 18), 1), ("eyeA", photos["eyeA"][1], 1),
                                ("eyeB", photos["eyeB"][1], 1), ("eyeA", (30, 30), 0)):
        expected[name] = _stroke(layers[name], centre, label)
        assert _wait_on_disk(qtbot, p2, name, expected[name]) <= SAVE_WITHIN + 0.5
    corr.mark_case_reviewed()
    # the scan's layer, a case of the other project, is still open: a stroke on it is saved there
    near = (m3[0], min(m3[1] + 2, vol_labels.data.shape[1] - 1), m3[2])
    expected_scan = _stroke(vol_labels, near, 1, brush=1)
    assert _wait_on_disk(qtbot, p3, "scan", expected_scan) <= SAVE_WITHIN + 0.5
    colours = {tuple(np.round(layers[n].get_color(1), 3)) for n in photos}
    assert len(colours) == 1, "class 1 has one colour in every case"

    # ---- fine-tune on the 2D cases, promote, revert
    small_finetune(qtbot, ft, budget_s=120)
    project2 = seg.state.project
    assert ft.outcome.version == "v002"
    ft.promote()
    assert project2.versions.active == "v002"
    ver.revert()
    assert project2.versions.active == "v001"

    # ---- masks taken to other tools
    png = tmp_path / "eyeA_mask.png"
    layers["eyeA"].save(str(png), plugin="napari-drunet")
    shown = iio.imread(png)
    assert set(np.unique(shown)) <= {0, 255}, "a binary PNG mask is 0/255, viewable anywhere"
    np.testing.assert_array_equal(shown == 255, expected["eyeA"] == 1)
    assert shown[photos["eyeA"][1]] == 255

    nii = tmp_path / "scan_mask.nii.gz"
    vol_labels.save(str(nii), plugin="napari-drunet")
    saved = nib.load(str(nii))
    np.testing.assert_allclose(saved.affine, scan.affine, atol=1e-5)
    assert int(saved.header["qform_code"]) == 1 and int(saved.header["sform_code"]) == 2
    assert saved.header.get_xyzt_units()[0] == "mm"
    assert saved.shape == scan.shape
    mask = np.asarray(saved.dataobj)
    assert mask[marker3] == 1, "the voxel painted over the marker is the marker's voxel on disk"
    world_painted = nib.affines.apply_affine(saved.affine, np.argwhere(mask == 1))
    world_marker = nib.affines.apply_affine(scan.affine, np.array(marker3))
    assert np.min(np.linalg.norm(world_painted - world_marker, axis=1)) < 1e-4
    corr.flush()
    assert errors == []
    viewer.close()

    # ---- next morning: a new window, both projects reopened, every stroke back, pixel-exact
    viewer2 = make_napari_viewer()
    seg2, corr2 = SegmentWidget(viewer2), CorrectionsWidget(viewer2)
    VersionsWidget(viewer2)
    assert open_project(qtbot, corr2, p2) is not None
    assert seg2.state.project.versions.active == "v001"
    for name in photos:
        layer = show_case(qtbot, corr2, name)
        np.testing.assert_array_equal(np.asarray(layer.data), expected[name])
    assert open_project(qtbot, corr2, p3) is not None
    layer = show_case(qtbot, corr2, "scan")
    np.testing.assert_array_equal(np.asarray(layer.data), expected_scan)
    again = tmp_path / "scan_mask_again.nii.gz"
    layer.save(str(again), plugin="napari-drunet")  # a case shown from the project keeps geometry
    reloaded = nib.load(str(again))
    np.testing.assert_allclose(reloaded.affine, scan.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(reloaded.dataobj), mask)
    assert errors == []
