"""Faults at the edges: a full disk during export, damaged NIfTI affines and units, very long
file names, strict JSON results, output formats checked before the work, and a file that shares
a packaged model's name."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_helpers import assert_user_error, run_cli, visible_files  # noqa: E402

from napari_drunet.cli import main  # noqa: E402
from napari_drunet.core.errors import InputError  # noqa: E402
from napari_drunet.core.image.io import read_image, write_label  # noqa: E402


@contextlib.contextmanager
def _small_disk(folder: Path, free_kb: int):
    """A 1 MiB tmpfs at ``folder`` with only ``free_kb`` KiB left (needs root)."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs is not permitted here (needs root)")
    try:
        fill = folder / "fill"
        with open(fill, "wb") as fh:
            with contextlib.suppress(OSError):
                fh.write(b"\0" * (1024 * 1024 - free_kb * 1024))
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, models, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    with _small_disk(tmp_path / "disk", free_kb=8) as disk:
        proc = run_cli("export", "--model", models["m1"], "--format", fmt, "--out",
                       disk / "m.pt")
        assert proc.returncode != -6, "aborted (SIGABRT)"
        line = assert_user_error(proc)
        assert "No space left" in line, line
        assert visible_files(disk) == ["fill"]  # no temporary file left behind


def test_label_write_on_a_full_disk_is_one_error_and_leaves_nothing(tmp_path):
    with _small_disk(tmp_path / "disk", free_kb=4) as disk:
        noise = np.random.default_rng(0).integers(0, 200, (256, 256)).astype(np.uint8)
        with pytest.raises(InputError, match="cannot write"):
            write_label(disk / "m.tif", noise)
        assert visible_files(disk) == ["fill"]


def _nifti(path: Path, affine: np.ndarray, units: str | None = None,
           zooms: tuple | None = None) -> Path:
    img = nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 8)).astype(np.float32),
                          affine)
    if zooms is not None:
        img.header.set_zooms(zooms)
    if units is not None:
        img.header.set_xyzt_units(units)
    nib.save(img, path)
    return path


@pytest.mark.parametrize("bad", ["singular", "nan"])
def test_damaged_nifti_affine_does_not_lose_the_prediction(capsys, tmp_path, models, bad):
    path = tmp_path / "v.nii.gz"
    img = nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 8)).astype(np.float32),
                          np.eye(4))
    hdr = img.header  # written field by field: nibabel refuses to build such an affine
    row = np.zeros(4) if bad == "singular" else np.full(4, np.nan)
    for key in ("srow_x", "srow_y", "srow_z"):
        hdr[key] = row
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    nib.save(nib.Nifti1Image(img.dataobj, None, hdr), path)
    assert nib.load(path).header["sform_code"] == 1
    out = tmp_path / "o"
    code = main(["predict", "--model", str(models["m3d"]), "--input", str(path), "--output",
                 str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "affine" in err  # said, not silent
    written = nib.load(out / "v.nii.gz")
    assert written.shape == (16, 16, 8) and np.isfinite(written.affine).all()


def test_napari_writer_survives_a_damaged_affine_in_layer_metadata(tmp_path):
    from napari_drunet._writer import write_labels

    lab = np.zeros((8, 16, 16), np.uint8)
    for aff in (np.full((4, 4), np.nan), np.zeros((4, 4))):
        path = tmp_path / "m.nii.gz"
        write_labels(str(path), lab, {"metadata": {"affine": aff}, "scale": (2.0, 1.0, 1.0)})
        assert np.isfinite(nib.load(path).affine).all()


@pytest.mark.parametrize("units, pixdim, mm", [("mm", 1.0, 1.0), ("micron", 1000.0, 1.0),
                                               ("meter", 0.001, 1.0), ("unknown", 2.0, 2.0)])
def test_nifti_voxel_sizes_are_read_in_their_units(tmp_path, units, pixdim, mm):
    path = _nifti(tmp_path / "v.nii", np.diag([pixdim, pixdim, pixdim, 1.0]), units,
                  (pixdim,) * 3)
    img = read_image(path)
    assert img.spacing == pytest.approx((mm,) * 3)


def test_nifti_in_micrometres_keeps_its_geometry_on_write(tmp_path):
    src = _nifti(tmp_path / "v.nii.gz", np.diag([500.0, 500.0, 1000.0, 1.0]), "micron",
                 (500.0, 500.0, 1000.0))
    img = read_image(src)
    assert img.spacing == pytest.approx((1.0, 0.5, 0.5))
    write_label(tmp_path / "m.nii.gz", np.zeros(img.shape_spatial, np.uint8), like=img)
    out = nib.load(tmp_path / "m.nii.gz")
    assert np.allclose(out.affine, nib.load(src).affine)
    assert out.header.get_xyzt_units()[0] == "micron"


@pytest.mark.parametrize("pixdim", [1e6, 1e-7])
def test_absurd_voxel_sizes_are_refused_with_a_clear_message(capsys, tmp_path, models, pixdim):
    path = _nifti(tmp_path / "v.nii.gz", np.diag([pixdim] * 3 + [1.0]), "mm", (pixdim,) * 3)
    code = main(["predict", "--model", str(models["m3d"]), "--input", str(path), "--output",
                 str(tmp_path / "o"), "--device", "cpu"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "not plausible" in err[0], err


def test_very_long_file_names_are_written(capsys, tmp_path, models):
    src = tmp_path / "in"
    src.mkdir()
    name = "x" * 246 + ".tif"  # 250 bytes: the longest names still allowed by the system
    tifffile.imwrite(src / name, np.random.default_rng(0).random((32, 32)).astype(np.float32))
    out = tmp_path / "o"
    code = main(["predict", "--model", str(models["m1"]), "--input", str(src), "--output",
                 str(out), "--prob", str(tmp_path / "p"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert visible_files(out) == [name] and visible_files(tmp_path / "p") == [name]
    long_nifti = tmp_path / ("y" * 240 + ".nii.gz")
    write_label(long_nifti, np.zeros((4, 4, 4), np.uint8))
    assert long_nifti.exists()


def test_evaluate_json_is_strict_json(capsys, tmp_path):
    for d in ("pred", "truth"):
        (tmp_path / d).mkdir()
    empty = np.zeros((16, 16), np.uint8)
    tifffile.imwrite(tmp_path / "pred" / "c1.tif", empty)  # nothing found, nothing there:
    tifffile.imwrite(tmp_path / "truth" / "c1.tif", empty)  # distances are undefined
    out = tmp_path / "r.json"
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth",
                 str(tmp_path / "truth"), "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


@pytest.mark.parametrize("output, must", [("mask.jpg", "JPEG is lossy"),
                                          ("mask.png", "2D images only"),
                                          ("mask.gif", "2D images only")])
def test_output_format_errors_come_before_inference(capsys, tmp_path, models, output, must):
    vol = _nifti(tmp_path / "v.nii.gz", np.eye(4))
    argv = ["predict", "--model", str(models["m3d"]), "--input", str(vol), "--output",
            str(tmp_path / output), "--device", "cpu"]
    # an inference that started would fail loudly: the check must come first
    import napari_drunet.core.models.model as model_mod

    def no_inference(*a, **k):
        raise AssertionError("inference ran before the output format was checked")

    orig = model_mod.Model.predict_iter
    model_mod.Model.predict_iter = no_inference
    try:
        code = main(argv)
    finally:
        model_mod.Model.predict_iter = orig
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and must in err[0], err


def test_a_file_named_like_a_packaged_model_does_not_shadow_it(tmp_path, models):
    from napari_drunet.core.models.model import list_models, load_model

    packaged = list_models()
    if not packaged:
        pytest.skip("no packaged model in this checkout")
    name = packaged[0]
    (tmp_path / name).write_bytes(Path(models["m1"]).read_bytes())
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        packaged_model = load_model(name, "cpu")  # the packaged one, not the tiny file
        assert packaged_model.name == name
        assert packaged_model.network.config["features"] != [4, 8]
        assert load_model(f".{os.sep}{name}", "cpu").network.config["features"] == [4, 8]
        assert load_model(Path(name), "cpu").network.config["features"] == [4, 8]
    finally:
        os.chdir(cwd)
