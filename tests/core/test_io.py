"""Image/label reading and writing: round-trips per format, geometry, and bad inputs."""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_drunet.core.errors import InputError
from napari_drunet.core.image.io import (
    SUPPORTED_EXTENSIONS,
    ImageData,
    is_supported,
    list_images,
    read_image,
    read_label,
    strip_extension,
    write_label,
    write_probability,
)

RNG = np.random.default_rng(0)


def _affine() -> np.ndarray:
    """Non-identity, anisotropic, rotated affine."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([0.8, 1.2, 3.0])
    a[:3, 3] = [-10.0, 20.5, 7.0]
    return a


# ----------------------------------------------------------------------------- NIfTI
def test_nifti_3d_transpose_spacing_and_label_roundtrip(tmp_path):
    xyz = RNG.integers(0, 1000, (7, 6, 5)).astype(np.int16)
    src = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(xyz, _affine()), src)
    img = read_image(src)
    assert img.format == "nifti" and img.array.shape == (1, 5, 6, 7)
    assert img.array.dtype == np.int16
    assert img.spacing == pytest.approx((3.0, 1.2, 0.8))
    np.testing.assert_allclose(img.affine, nib.load(src).affine)
    assert img.array[0, 4, 3, 2] == xyz[2, 3, 4]

    labels = (img.array[0] > 500).astype(np.uint8)
    labels[0, 0, 0] = 2
    out = write_label(tmp_path / "seg.nii.gz", labels, like=img)
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, nib.load(src).affine)
    assert back.shape == (7, 6, 5)
    data = np.asanyarray(back.dataobj)
    assert data[2, 3, 4] == labels[4, 3, 2] and data[0, 0, 0] == 2
    np.testing.assert_array_equal(data, labels.T)
    assert int(back.header["qform_code"]) == int(nib.load(src).header["qform_code"])
    lab2, limg = read_label(out)
    np.testing.assert_array_equal(lab2, labels)


def test_nifti_4d_channels_and_probability_roundtrip(tmp_path):
    xyzc = RNG.random((6, 5, 4, 2)).astype(np.float32)
    src = tmp_path / "mm.nii"
    nib.save(nib.Nifti1Image(xyzc, np.diag([2.0, 1.0, 0.5, 1.0])), src)
    img = read_image(src)
    assert img.array.shape == (2, 4, 5, 6) and img.array.dtype == np.float32
    assert img.spacing == pytest.approx((0.5, 1.0, 2.0))
    np.testing.assert_array_equal(img.array[1, 3, 2, 1], xyzc[1, 2, 3, 1])
    out = write_label(tmp_path / "l.nii", np.ones((4, 5, 6), np.uint8), like=img)
    assert nib.load(out).shape == (6, 5, 4)  # label drops the channel axis of the source
    prob = RNG.random((3, 4, 5, 6)).astype(np.float32)
    pout = write_probability(tmp_path / "p.nii.gz", prob, like=img)
    pimg = read_image(pout)
    np.testing.assert_allclose(pimg.array, prob)
    np.testing.assert_allclose(pimg.affine, img.affine)


def test_nifti_2d_is_2d_and_keeps_disk_layout(tmp_path):
    for shape in [(7, 6), (7, 6, 1)]:
        arr = RNG.integers(0, 9, shape).astype(np.uint8)
        src = tmp_path / f"slice{len(shape)}.nii.gz"
        nib.save(nib.Nifti1Image(arr, np.diag([0.5, 0.7, 4.0, 1.0])), src)
        img = read_image(src)
        assert img.array.shape == (1, 6, 7) and img.ndim_spatial == 2
        assert img.spacing == pytest.approx((0.7, 0.5))
        out = write_label(tmp_path / f"lab{len(shape)}.nii.gz", img.array[0], like=img)
        back = nib.load(out)
        assert back.shape == shape
        np.testing.assert_array_equal(np.asanyarray(back.dataobj), arr)
        prob = RNG.random((2, 6, 7)).astype(np.float32)
        pimg = read_image(write_probability(tmp_path / f"p{len(shape)}.nii.gz", prob, like=img))
        np.testing.assert_allclose(pimg.array, prob)


def test_nifti_big_endian_becomes_native(tmp_path):
    arr = np.arange(60, dtype=">i2").reshape(5, 4, 3)
    src = tmp_path / "be.nii"
    nib.save(nib.Nifti1Image(arr, np.eye(4)), src)
    img = read_image(src)
    assert img.array.dtype.isnative and img.array.dtype.kind == "i"
    np.testing.assert_array_equal(img.array[0], arr.T)


def test_nifti_without_like_uses_identity_and_2d_writes(tmp_path):
    out = write_label(tmp_path / "a.nii.gz", np.eye(5, dtype=np.uint8))
    img = read_image(out)
    assert img.array.shape == (1, 5, 5)
    np.testing.assert_allclose(img.affine, np.eye(4))


# ----------------------------------------------------------------------------- TIFF
def test_tiff_2d_gray_rgb_rgba(tmp_path):
    gray = RNG.integers(0, 65535, (9, 8)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", gray)
    img = read_image(tmp_path / "g.tif")
    assert img.array.shape == (1, 9, 8) and img.array.dtype == np.uint16 and not img.is_rgb
    assert img.spacing == (1.0, 1.0)

    rgb = RNG.integers(0, 255, (9, 8, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "c.tiff", rgb)
    img = read_image(tmp_path / "c.tiff")
    assert img.is_rgb and img.array.shape == (3, 9, 8)
    np.testing.assert_array_equal(np.moveaxis(img.array, 0, -1), rgb)

    rgba = RNG.integers(0, 255, (9, 8, 4)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", rgba)
    img = read_image(tmp_path / "a.tif")
    assert img.is_rgb and img.array.shape == (3, 9, 8)
    assert any("alpha" in w for w in img.meta["warnings"])


def test_tiff_3d_and_hyperstacks(tmp_path):
    vol = RNG.random((5, 6, 7)).astype(np.float32)
    tifffile.imwrite(tmp_path / "v.tif", vol, imagej=True,
                     metadata={"axes": "ZYX", "spacing": 2.5}, resolution=(1 / 0.5, 1 / 0.25))
    img = read_image(tmp_path / "v.tif")
    assert img.array.shape == (1, 5, 6, 7)
    assert img.spacing == pytest.approx((2.5, 0.25, 0.5), rel=1e-4)

    zcyx = RNG.integers(0, 255, (5, 2, 6, 7)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "h.tif", zcyx, imagej=True, metadata={"axes": "ZCYX"})
    img = read_image(tmp_path / "h.tif")
    assert img.array.shape == (2, 5, 6, 7)
    np.testing.assert_array_equal(img.array[1, 3], zcyx[3, 1])

    zyxc = RNG.integers(0, 255, (5, 6, 7, 2)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "l.tif", zyxc, metadata={"axes": "ZYXC"})
    img = read_image(tmp_path / "l.tif")
    assert img.array.shape == (2, 5, 6, 7)
    np.testing.assert_array_equal(img.array[1, 4], zyxc[4, ..., 1])

    plain = RNG.integers(0, 255, (5, 2, 6, 7)).astype(np.uint8)  # shape only: (Z, C, Y, X)
    tifffile.imwrite(tmp_path / "q.tif", plain)
    img = read_image(tmp_path / "q.tif")
    assert img.array.shape == (2, 5, 6, 7)
    np.testing.assert_array_equal(img.array[:, 2], plain[2])
    tifffile.imwrite(tmp_path / "pages.tif", plain, metadata=None)  # no shape: just pages
    assert read_image(tmp_path / "pages.tif").array.shape == (1, 10, 6, 7)


def test_tiff_label_and_probability_roundtrip_keep_spacing(tmp_path):
    like = ImageData(np.zeros((1, 4, 6, 5), np.float32), spacing=(3.0, 0.5, 0.5))
    labels = RNG.integers(0, 3, (4, 6, 5)).astype(np.int64)
    out = write_label(tmp_path / "lab.tif", labels, like=like)
    lab, limg = read_label(out)
    np.testing.assert_array_equal(lab, labels)
    assert limg.spacing == pytest.approx((3.0, 0.5, 0.5), rel=1e-4)
    many = np.arange(4 * 6 * 5).reshape(4, 6, 5) * 700  # > 65535 labels: uint32 TIFF
    lab, limg = read_label(write_label(tmp_path / "big.tif", many, like=like))
    np.testing.assert_array_equal(lab, many)
    assert limg.spacing == pytest.approx((3.0, 0.5, 0.5))
    prob = RNG.random((2, 4, 6, 5)).astype(np.float32)
    pimg = read_image(write_probability(tmp_path / "p.tif", prob, like=like))
    np.testing.assert_allclose(pimg.array, prob)
    p2 = read_image(write_probability(tmp_path / "p2.tif", prob[:, 0]))  # 2D (K, H, W)
    np.testing.assert_allclose(p2.array, prob[:, 0])
    p1 = read_image(write_probability(tmp_path / "p1.tif", prob[0], like=like))  # (*spatial)
    np.testing.assert_allclose(p1.array, prob[:1])


# ----------------------------------------------------------------------------- PIL formats
@pytest.mark.parametrize("ext", [".png", ".bmp", ".gif"])
def test_8bit_gray_roundtrip(tmp_path, ext):
    labels = RNG.integers(0, 5, (10, 12)).astype(np.uint8)
    lab, img = read_label(write_label(tmp_path / f"m{ext}", labels))
    np.testing.assert_array_equal(lab, labels)
    assert img.array.shape == (1, 10, 12)


def test_png_rgba_rgb_palette_16bit(tmp_path):
    rgba = RNG.integers(0, 255, (6, 7, 4)).astype(np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.is_rgb and img.array.shape == (3, 6, 7)
    np.testing.assert_array_equal(img.array, np.moveaxis(rgba[..., :3], -1, 0))
    assert img.meta["warnings"]

    Image.fromarray(rgba[..., :3]).save(tmp_path / "c.jpg", quality=95)
    img = read_image(tmp_path / "c.jpg")
    assert img.format == "jpeg" and img.is_rgb and img.array.shape == (3, 6, 7)

    idx = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    pal = Image.fromarray(idx, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    pal.save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").array.shape == (3, 2, 3)  # colour palette -> RGB
    np.testing.assert_array_equal(read_label(tmp_path / "pal.png")[0], idx)  # labels: indices

    lab16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 300
    lab, img = read_label(write_label(tmp_path / "l16.png", lab16))
    assert img.array.dtype == np.uint16
    np.testing.assert_array_equal(lab, lab16)


def test_gray_palette_gif_gives_values(tmp_path):
    idx = np.array([[0, 1], [1, 0]], np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    im.save(tmp_path / "m.gif")
    img = read_image(tmp_path / "m.gif")
    np.testing.assert_array_equal(img.array[0], idx * 255)
    np.testing.assert_array_equal(read_label(tmp_path / "m.gif")[0], idx)


def test_binary_mask_scaling_and_values(tmp_path):
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:6] = True
    out = write_label(tmp_path / "b.png", mask, scale_binary=True)
    assert set(np.unique(np.asarray(Image.open(out))).tolist()) == {0, 255}
    lab, _ = read_label(out)
    assert lab.dtype == np.uint8 and set(np.unique(lab).tolist()) == {0, 1}
    assert set(np.unique(np.asarray(Image.open(write_label(tmp_path / "d.png", mask)))).tolist()) \
        == {0, 255}  # the default for binary PNG masks
    raw = write_label(tmp_path / "r.png", mask, scale_binary=False)
    assert set(np.unique(np.asarray(Image.open(raw))).tolist()) == {0, 1}
    with pytest.raises(InputError, match="binary"):
        write_label(tmp_path / "x.png", np.full((4, 4), 2), scale_binary=True)


def test_read_label_conversions(tmp_path):
    rgb = np.repeat(RNG.integers(0, 3, (5, 6, 1)).astype(np.uint8), 3, axis=2)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_label(tmp_path / "rgb.png")[0], rgb[..., 0])
    rgb[0, 0] = (1, 2, 0)
    Image.fromarray(rgb).save(tmp_path / "col.png")
    with pytest.raises(InputError, match="channels"):
        read_label(tmp_path / "col.png")
    flt = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    tifffile.imwrite(tmp_path / "f.tif", flt)
    lab = read_label(tmp_path / "f.tif")[0]
    assert np.issubdtype(lab.dtype, np.integer) and lab.tolist() == [[0, 1], [2, 3]]
    tifffile.imwrite(tmp_path / "h.tif", flt + 0.5)
    with pytest.raises(InputError, match="non-integer"):
        read_label(tmp_path / "h.tif")
    tifffile.imwrite(tmp_path / "n.tif", np.array([[0, -1]], np.int16).repeat(2, 0))
    with pytest.raises(InputError, match="negative"):
        read_label(tmp_path / "n.tif")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int32, np.float32, np.float64])
def test_dtypes_preserved(tmp_path, dtype):
    arr = (RNG.random((4, 5)) * 100).astype(dtype)
    tifffile.imwrite(tmp_path / "d.tif", arr)
    nib.save(nib.Nifti1Image(arr[..., None], np.eye(4)), tmp_path / "d.nii.gz")
    for name in ("d.tif", "d.nii.gz"):
        img = read_image(tmp_path / name)
        assert img.array.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(img.array[0], arr if name.endswith("tif") else arr.T)


def test_nonfinite_values_kept_with_warning(tmp_path):
    arr = np.ones((4, 4), np.float32)
    arr[0, 0], arr[1, 1] = np.nan, np.inf
    tifffile.imwrite(tmp_path / "nan.tif", arr)
    img = read_image(tmp_path / "nan.tif")
    assert np.isnan(img.array[0, 0, 0])
    assert any("NaN" in w for w in img.meta["warnings"])


# ----------------------------------------------------------------------------- errors
def _bad_files(tmp: Path) -> dict[str, Path]:
    files = {}
    files["missing"] = tmp / "nope.png"
    (tmp / "folder.nii.gz").mkdir()
    files["directory"] = tmp / "folder.nii.gz"
    (tmp / "a.xyz").write_bytes(b"123")
    files["extension"] = tmp / "a.xyz"
    (tmp / "empty.tif").write_bytes(b"")
    files["empty"] = tmp / "empty.tif"
    (tmp / "text.nii.gz").write_text("hello, I am not a NIfTI file\n")
    files["text_nii_gz"] = tmp / "text.nii.gz"
    (tmp / "text.nii").write_text("x" * 400)
    files["text_nii"] = tmp / "text.nii"
    (tmp / "text.png").write_text("not a png")
    files["text_png"] = tmp / "text.png"
    (tmp / "text.tif").write_text("not a tiff")
    files["text_tif"] = tmp / "text.tif"
    Image.fromarray(RNG.integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp / "full.png")
    (tmp / "trunc.png").write_bytes((tmp / "full.png").read_bytes()[:200])
    files["truncated_png"] = tmp / "trunc.png"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)), tmp / "full.nii.gz")
    raw = gzip.decompress((tmp / "full.nii.gz").read_bytes())
    (tmp / "trunc.nii.gz").write_bytes(gzip.compress(raw[:1000]))
    files["truncated_nifti"] = tmp / "trunc.nii.gz"
    (tmp / "cut.nii.gz").write_bytes((tmp / "full.nii.gz").read_bytes()[:60])
    files["cut_gzip"] = tmp / "cut.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5,), np.float32), np.eye(4)), tmp / "one.nii")
    files["1d"] = tmp / "one.nii"
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2, 2), np.float32), np.eye(4)), tmp / "five.nii")
    files["5d"] = tmp / "five.nii"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns about writing a zero-size array
        tifffile.imwrite(tmp / "zero.tif", np.zeros((0, 5), np.uint8))
    files["zero_axis"] = tmp / "zero.tif"
    tifffile.imwrite(tmp / "tzcyx.tif", np.zeros((2, 3, 2, 4, 4), np.uint8), imagej=True,
                     metadata={"axes": "TZCYX"})
    files["4_spatial"] = tmp / "tzcyx.tif"
    return files


def test_bad_inputs_give_one_line_input_error(tmp_path):
    for key, path in _bad_files(tmp_path).items():
        for fn in (read_image, read_label):
            with pytest.raises(InputError) as info:
                fn(path)
            msg = str(info.value)
            assert msg and "\n" not in msg and "Traceback" not in msg, (key, msg)


def test_write_errors_and_atomicity(tmp_path):
    like = ImageData(np.zeros((1, 6, 6), np.uint8))
    with pytest.raises(InputError, match="does not match"):
        write_label(tmp_path / "m.png", np.zeros((5, 6), np.uint8), like=like)
    with pytest.raises(InputError, match="unsupported"):
        write_label(tmp_path / "m.xyz", np.zeros((6, 6), np.uint8))
    with pytest.raises(InputError, match="lossy"):
        write_label(tmp_path / "m.jpg", np.zeros((6, 6), np.uint8))
    with pytest.raises(InputError, match="2D"):
        write_label(tmp_path / "m.png", np.zeros((3, 6, 6), np.uint8))
    with pytest.raises(InputError, match="float"):
        write_probability(tmp_path / "p.png", np.zeros((1, 6, 6), np.float32))
    with pytest.raises(InputError, match="8-bit"):
        write_label(tmp_path / "m.bmp", np.full((6, 6), 300))
    with pytest.raises(InputError, match="non-integer"):
        write_label(tmp_path / "m.tif", np.full((6, 6), 0.5))
    assert not [p for p in os.listdir(tmp_path)]  # nothing written, no temp file left


def test_path_helpers(tmp_path):
    assert strip_extension("a/b/case_01.nii.gz") == "case_01"
    assert strip_extension("X.TIF") == "X" and strip_extension("noext") == "noext"
    assert is_supported("a.NII.GZ") and is_supported("b.Jpeg") and not is_supported("c.txt")
    assert ".nii.gz" in SUPPORTED_EXTENSIONS
    for name in ("b.png", "a.nii.gz", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.tif").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.nii.gz", "b.png"]
    with pytest.raises(InputError):
        list_images(tmp_path / "missing")


def test_imagedata_source_roundtrip():
    img = ImageData(np.zeros((2, 3, 4, 5), np.float32), (2.0, 1.0, 0.5), _affine(), "x.nii.gz",
                    "nifti", False, {"qform_code": 1, "warnings": ["w"]})
    geo = ImageData.from_source(img.to_source())
    assert geo.shape_spatial == (3, 4, 5) and geo.spacing == img.spacing
    np.testing.assert_allclose(geo.affine, img.affine)
    assert geo.meta == {"qform_code": 1}
    with pytest.raises(InputError):
        ImageData(np.zeros((4, 4)))
    with pytest.raises(InputError):
        ImageData(np.zeros((1, 4, 4)), spacing=(1.0,))


def test_drive_files(drive_root):
    img = read_image(drive_root / "training" / "images" / "21_training.tif")
    assert img.is_rgb and img.array.shape == (3, 584, 565) and img.array.dtype == np.uint8
    lab, _ = read_label(drive_root / "training" / "1st_manual" / "21_manual1.gif")
    assert lab.shape == (584, 565) and set(np.unique(lab).tolist()) == {0, 1}
    assert 0.05 < lab.mean() < 0.10  # vessel fraction 7.5% (SOURCE.txt)
    lab2, _ = read_label(drive_root / "test" / "2nd_manual" / "01_manual2.gif")  # palette GIF
    assert set(np.unique(lab2).tolist()) == {0, 1}


def test_lzw_tiff_without_imagecodecs(tmp_path):
    """LZW TIFFs (as DRIVE's) decode through the Pillow fallback when imagecodecs is absent."""
    rgb = RNG.integers(0, 255, (9, 8, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    img = read_image(tmp_path / "lzw.tif")
    assert img.is_rgb and img.array.shape == (3, 9, 8)
    np.testing.assert_array_equal(np.moveaxis(img.array, 0, -1), rgb)
    pages = [Image.fromarray(RNG.integers(0, 255, (6, 5)).astype(np.uint8)) for _ in range(3)]
    pages[0].save(tmp_path / "stack.tif", compression="tiff_lzw", save_all=True,
                  append_images=pages[1:])
    img = read_image(tmp_path / "stack.tif")
    assert img.array.shape == (1, 3, 6, 5)
    np.testing.assert_array_equal(img.array[0, 2], np.asarray(pages[2]))
