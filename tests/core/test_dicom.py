"""DICOM series reading: geometry in world coordinates, sorting, series choice, rescale,
multi-frame, DICOMDIR, compression, NIfTI masks with the series' geometry and the CLI."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="the dicom extra (pydicom) is not installed")

from napari_drunet.cli import main  # noqa: E402
from napari_drunet.core.errors import InputError  # noqa: E402
from napari_drunet.core.image.dicom import (  # noqa: E402
    is_dicom_source,
    list_series,
    read_dicom,
)
from napari_drunet.core.image.dicom_write import write_series  # noqa: E402
from napari_drunet.core.image.io import read_image, write_label  # noqa: E402
from napari_drunet.core.models.checkpoint import save_checkpoint  # noqa: E402
from napari_drunet.core.nets.networks import build_model  # noqa: E402

RNG = np.random.default_rng(7)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


AXIAL = np.array([[-0.9, 0, 0, 90.0], [0, 0.8, 0, -100.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
# sagittal: slices along x (left-right), rows along z (superior-inferior), columns along y
SAGITTAL = np.array([[0, 0, 3.0, -20.0], [0.7, 0, 0, -80.0], [0, -0.75, 0, 60.0], [0, 0, 0, 1]])
OBLIQUE = AXIAL.copy()
OBLIQUE[:3, :3] = _rotation(0, 25) @ _rotation(2, -15) @ AXIAL[:3, :3]


def _nifti_volume(tmp_path: Path, affine: np.ndarray, shape=(7, 9, 11)) -> Path:
    """A NIfTI file (written by nibabel) of random integers with ``affine``; (Z, Y, X) shape."""
    xyz = RNG.integers(-500, 1500, shape[::-1]).astype(np.int16)
    path = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(xyz, affine), path)
    return path


def _assert_same_world(img, ref_values_xyz: np.ndarray, ref_affine: np.ndarray) -> None:
    """Every voxel of ``img`` lands on a voxel of the reference with the same value (world
    coordinates through both affines), and the two grids cover the same points."""
    zyx = img.array[0]
    mapping = np.linalg.inv(ref_affine) @ img.affine  # img voxel (x, y, z) -> ref voxel
    assert np.allclose(mapping[:3, :3], np.round(mapping[:3, :3]), atol=1e-4)
    assert np.allclose(mapping[:3, 3], np.round(mapping[:3, 3]), atol=1e-3)
    z, y, x = np.indices(zyx.shape).reshape(3, -1)
    ref_idx = np.round(mapping @ np.stack([x, y, z, np.ones_like(x)])).astype(int)[:3]
    shape = np.array(ref_values_xyz.shape)[:, None]
    assert np.all((ref_idx >= 0) & (ref_idx < shape))
    np.testing.assert_array_equal(zyx[z, y, x], ref_values_xyz[tuple(ref_idx)])


@pytest.mark.parametrize("affine", [AXIAL, SAGITTAL, OBLIQUE], ids=["axial", "sagittal", "oblique"])
def test_series_from_nifti_round_trips_in_world_coordinates(tmp_path, affine):
    src = nib.load(_nifti_volume(tmp_path, affine))
    vol = read_image(src.get_filename())
    write_series(vol.array[0], vol.affine, tmp_path / "series")
    img = read_dicom(tmp_path / "series")
    assert img.format == "dicom" and img.array.shape == vol.array.shape
    _assert_same_world(img, np.asarray(src.dataobj), src.affine)
    assert sorted(img.spacing) == pytest.approx(sorted(src.header.get_zooms()), abs=1e-5)
    assert nib.aff2axcodes(img.affine) in {nib.aff2axcodes(src.affine),
                                          tuple(nib.aff2axcodes(src.affine)[:2]) + (
                                              {"S": "I", "I": "S", "A": "P", "P": "A", "L": "R",
                                               "R": "L"}[nib.aff2axcodes(src.affine)[2]],)}


def test_geometry_agrees_with_an_independent_reader(tmp_path):
    """nibabel's DICOM wrapper (its own LPS maths, (row, column) voxel order) maps a pixel of
    every slice file to the same patient position as our RAS affine."""
    from nibabel.nicom import dicomwrappers

    vol = RNG.integers(0, 900, (5, 6, 8)).astype(np.int16)
    files = write_series(vol, OBLIQUE, tmp_path / "s")
    img = read_dicom(tmp_path / "s")
    lps = np.diag([-1.0, -1, 1, 1]) @ img.affine
    for f in files:
        wrapper = dicomwrappers.wrapper_from_file(str(f))
        plane = wrapper.get_data()  # (rows, columns)
        k = int(np.argmin([np.abs(img.array[0, z] - plane).sum() for z in range(5)]))
        row, col = 4, 7
        theirs = wrapper.affine @ [row, col, 0, 1]
        ours = lps @ [col, row, k, 1]
        np.testing.assert_allclose(ours[:3], theirs[:3], atol=1e-4)


def test_slices_sorted_by_position_not_file_name(tmp_path):
    vol = RNG.integers(0, 900, (6, 5, 4)).astype(np.int16)
    names = [f"IM{n:04d}" for n in RNG.permutation(6)]  # no extension, order unrelated to z
    write_series(vol, AXIAL, tmp_path / "s", names=names)
    # InstanceNumber must not be trusted either: scramble it
    for n, f in enumerate(sorted((tmp_path / "s").iterdir())):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = 100 - 7 * n
        ds.save_as(f)
    assert is_dicom_source(tmp_path / "s")
    img = read_dicom(tmp_path / "s")
    _assert_same_world(img, vol.transpose(2, 1, 0), AXIAL)


def test_two_series_in_one_folder_are_listed_and_never_mixed(tmp_path):
    a = RNG.integers(0, 100, (4, 5, 6)).astype(np.int16)
    b = RNG.integers(200, 300, (3, 5, 6)).astype(np.int16)
    write_series(a, AXIAL, tmp_path / "mixed", description="T1", series_number=2,
                 names=[f"a{k}.dcm" for k in range(4)])
    write_series(b, SAGITTAL, tmp_path / "mixed", description="FLAIR", series_number=1,
                 names=[f"b{k}.dcm" for k in range(3)])
    found = list_series(tmp_path / "mixed")
    assert [(s.description, s.frames) for s in found] == [("FLAIR", 3), ("T1", 4)]
    with pytest.raises(InputError, match="2 DICOM series.*FLAIR.*T1"):
        read_dicom(tmp_path / "mixed")
    with pytest.raises(InputError, match="2 DICOM series"):
        read_image(tmp_path / "mixed")  # the Python API says the same
    t1 = read_dicom(tmp_path / "mixed", series=found[1].uid)
    assert t1.array.shape == (1, 4, 5, 6) and t1.array.max() < 100
    _assert_same_world(t1, a.transpose(2, 1, 0), AXIAL)
    flair = read_dicom(tmp_path / "mixed", series=found[0].uid)
    assert flair.array.min() >= 200
    with pytest.raises(InputError, match="no series 1.2.3"):
        read_dicom(tmp_path / "mixed", series="1.2.3")


def test_rescale_slope_and_intercept_applied(tmp_path):
    hu = RNG.integers(-1024, 2000, (3, 4, 5)).astype(np.int32)
    write_series(hu, AXIAL, tmp_path / "ct", rescale=(1.0, -1024.0))
    stored = pydicom.dcmread(tmp_path / "ct" / "slice_0000.dcm").pixel_array
    assert stored.min() >= 0  # what is on disk is not HU
    img = read_dicom(tmp_path / "ct")
    assert img.array.dtype == np.int32
    _assert_same_world(img, hu.transpose(2, 1, 0), AXIAL)
    adc = RNG.integers(0, 4000, (3, 4, 5)) * 0.5
    write_series(adc, AXIAL, tmp_path / "adc", rescale=(0.5, 0.0))
    img = read_dicom(tmp_path / "adc")
    assert img.array.dtype == np.float32
    _assert_same_world(img, adc.transpose(2, 1, 0), AXIAL)


def test_enhanced_multiframe_file(tmp_path):
    vol = RNG.integers(0, 1000, (5, 6, 7)).astype(np.int16) * 2.0 - 300
    path, = write_series(vol, OBLIQUE, tmp_path / "mf", multiframe=True, rescale=(2.0, -300.0))
    assert int(pydicom.dcmread(path).NumberOfFrames) == 5
    img = read_dicom(path)
    _assert_same_world(img, vol.transpose(2, 1, 0), OBLIQUE)
    assert read_image(path).array.shape == (1, 5, 6, 7)  # read_image accepts .dcm files too


def test_dicomdir(tmp_path):
    from pydicom.fileset import FileSet

    vol = RNG.integers(0, 900, (4, 5, 6)).astype(np.int16)
    files = write_series(vol, SAGITTAL, tmp_path / "raw")
    fs = FileSet()
    for f in files:
        fs.add(f)
    fs.write(tmp_path / "disc")
    assert (tmp_path / "disc" / "DICOMDIR").is_file()
    for source in (tmp_path / "disc" / "DICOMDIR", tmp_path / "disc"):
        img = read_dicom(source)
        _assert_same_world(img, vol.transpose(2, 1, 0), SAGITTAL)


def test_rle_compressed_series_is_decoded(tmp_path):
    from pydicom.uid import RLELossless

    vol = RNG.integers(0, 900, (3, 8, 8)).astype(np.int16)
    for f in write_series(vol, AXIAL, tmp_path / "rle"):
        ds = pydicom.dcmread(f)
        ds.compress(RLELossless)
        ds.save_as(f)
    assert pydicom.dcmread(tmp_path / "rle" / "slice_0000.dcm").file_meta.TransferSyntaxUID \
        == RLELossless
    _assert_same_world(read_dicom(tmp_path / "rle"), vol.transpose(2, 1, 0), AXIAL)


def test_undecodable_transfer_syntax_is_refused_in_one_line(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here; nothing to refuse")
    vol = RNG.integers(0, 900, (2, 8, 8)).astype(np.int16)
    for f in write_series(vol, AXIAL, tmp_path / "jls"):
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
        ds.PixelData = encapsulate([b"\xff\xd8not really jpeg-ls\xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds.save_as(f, enforce_file_format=True)
    with pytest.raises(InputError, match=r"JPEG-LS.*dicom-codecs") as err:
        read_dicom(tmp_path / "jls")
    assert "\n" not in str(err.value)


def test_duplicate_positions_and_localizers_are_refused(tmp_path):
    vol = RNG.integers(0, 900, (3, 4, 4)).astype(np.int16)
    files = write_series(vol, AXIAL, tmp_path / "dup")
    ds = pydicom.dcmread(files[0])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "dup" / "echo2.dcm")  # second echo at the same position
    with pytest.raises(InputError, match="several slices at one position"):
        read_dicom(tmp_path / "dup")
    ds = pydicom.dcmread(files[1])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(files[1])
    (tmp_path / "dup" / "echo2.dcm").unlink()
    with pytest.raises(InputError, match="different orientations"):
        read_dicom(tmp_path / "dup")


def test_mask_written_as_nifti_with_the_series_geometry(tmp_path):
    src = nib.load(_nifti_volume(tmp_path, OBLIQUE))
    vol = read_image(src.get_filename())
    write_series(vol.array[0], vol.affine, tmp_path / "series", names=[
        f"x{n}" for n in RNG.permutation(vol.array.shape[1])])
    img = read_dicom(tmp_path / "series")
    mask = (img.array[0] > 500).astype(np.uint8)
    out = write_label(tmp_path / "mask.nii.gz", mask, like=img)
    back = nib.load(out)  # read back by nibabel, as any NIfTI tool would
    assert back.header.get_qform(coded=True)[1] == 1 and back.header.get_sform(coded=True)[1] == 1
    # the mask's voxels sit where the source NIfTI's voxels above 500 are
    ref = (np.asarray(src.dataobj) > 500).astype(np.uint8)
    mapping = np.linalg.inv(src.affine) @ back.affine
    idx = np.argwhere(np.asarray(back.dataobj) > 0)
    ref_idx = np.round(mapping[:3, :3] @ idx.T + mapping[:3, 3:]).astype(int)
    assert len(idx) == int(ref.sum()) > 0
    assert np.all(ref[tuple(ref_idx)] == 1)


def _tiny_3d_model(path: Path) -> Path:
    net = build_model("drunet", spatial_dims=3, in_channels=1, out_channels=1, features=[4, 8])
    return save_checkpoint(path, net.eval(), {"normalization": {"mode": "zscore"},
                                              "label_names": {"0": "background", "1": "fg"}})


def test_cli_predict_on_a_dicom_folder(tmp_path, capsys):
    vol = RNG.integers(0, 900, (8, 16, 16)).astype(np.int16)
    write_series(vol, OBLIQUE, tmp_path / "study", description="T1", series_number=1)
    write_series(vol[:4], AXIAL, tmp_path / "study", description="scout", series_number=9,
                 names=[f"scout{k}.dcm" for k in range(4)])
    model = _tiny_3d_model(tmp_path / "m.safetensors")
    args = ["predict", "--model", str(model), "--input", str(tmp_path / "study"),
            "--output", str(tmp_path / "out"), "--device", "cpu", "--axis-order", "keep"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 DICOM series" in err and "--series" in err
    uid = list_series(tmp_path / "study")[0].uid
    assert main([*args, "--series", uid]) == 0
    out = nib.load(tmp_path / "out" / "study.nii.gz")
    assert out.shape == (16, 16, 8)
    np.testing.assert_allclose(out.affine, read_dicom(tmp_path / "study", series=uid).affine,
                               atol=1e-5)
    assert main([*args[:-6], "--output", str(tmp_path / "one.nii.gz"), "--series", uid,
                 "--device", "cpu"]) == 0
    assert nib.load(tmp_path / "one.nii.gz").shape == (16, 16, 8)


def test_hippocampus_volume_as_dicom_round_trip(tmp_path, hippocampus_root):
    """A real MSD volume (float32 NIfTI, LPI-like header) through DICOM and back."""
    src_path = sorted((hippocampus_root / "imagesTr").glob("*.nii.gz"))[0]
    src = nib.load(src_path)
    vol = read_image(src_path)
    values = np.asarray(src.dataobj)
    write_series(vol.array[0], vol.affine, tmp_path / "hip")
    img = read_dicom(tmp_path / "hip")
    _assert_same_world(img, np.round(values), src.affine)
