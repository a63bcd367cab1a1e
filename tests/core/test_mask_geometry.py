"""Saved masks keep the scan's geometry: LAS, oblique and anisotropic NIfTI round trips.

Each source is built with nibabel, read through the plugin reader, segmented (a threshold, or a
project case) and saved through the plugin writer; nibabel then checks that the mask file has
the source's exact affine, qform/sform (and codes) and units, and that every foreground voxel
lands on the same world point as the source voxel it was predicted from.
"""

from __future__ import annotations

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from napari_drunet import _reader, _writer  # noqa: E402
from napari_drunet.core.correction.project import Project  # noqa: E402
from napari_drunet.core.image.io import ImageData, read_image, write_label  # noqa: E402


def _las() -> np.ndarray:
    """Radiological (LAS) 2 mm grid with the origin of the "Brain MRI" sample."""
    return np.array([[-2.0, 0, 0, 32], [0, 2, 0, -40], [0, 0, 2, -16], [0, 0, 0, 1]])


def _oblique() -> np.ndarray:
    """Rotated 20 degrees about z and 10 about x, anisotropic 0.8 x 0.9 x 3 mm."""
    a, b = np.deg2rad(20), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    out = np.eye(4)
    out[:3, :3] = rz @ rx @ np.diag([0.8, 0.9, 3.0])
    out[:3, 3] = (-12.5, 30.25, 7.0)
    return out


def _anisotropic() -> np.ndarray:
    """LPS-like flips with very anisotropic voxels (0.5 x 0.7 x 5 mm)."""
    return np.array([[-0.5, 0, 0, 60], [0, -0.7, 0, 80], [0, 0, 5.0, -30], [0, 0, 0, 1]])


CASES = {
    # name: (affine, qform code, sform code, spatial units, qform differing from sform)
    "las": (_las(), 1, 1, "mm", False),
    "oblique": (_oblique(), 1, 2, "mm", True),
    "anisotropic": (_anisotropic(), 2, 0, "micron", False),
}


def make_source(path, kind: str, shape=(9, 11, 7)) -> nib.Nifti1Image:
    """A NIfTI file with a bright blob off-centre (so any flip or shift moves it)."""
    affine, qcode, scode, unit, split = CASES[kind]
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    blob = ((ii - 2) ** 2 + (jj - 7) ** 2 + (kk - 2) ** 2) < 6
    data = (blob * 100 + ii).astype(np.int16)
    img = nib.Nifti1Image(data, affine)
    q = affine.copy()
    if split:  # a scanner qform beside an aligned sform: both must survive
        q[:3, 3] += (1.5, -2.0, 0.5)
    img.set_qform(q, code=qcode)
    img.set_sform(affine if scode else None, code=scode)
    img.header.set_xyzt_units(unit, "sec")
    nib.save(img, str(path))
    return nib.load(str(path))


def assert_same_geometry(out_path, src: nib.Nifti1Image, mask_zyx: np.ndarray) -> None:
    """``out_path`` has ``src``'s geometry, and its voxels are ``mask_zyx`` (napari order)."""
    back = nib.load(str(out_path))
    np.testing.assert_array_equal(back.affine, src.affine)
    for get in ("get_qform", "get_sform"):
        (m_out, c_out), (m_src, c_src) = getattr(back, get)(coded=True), \
            getattr(src, get)(coded=True)
        assert int(c_out) == int(c_src), get
        if m_src is not None:
            np.testing.assert_allclose(m_out, m_src, atol=1e-5, err_msg=get)
    assert back.header.get_xyzt_units() == src.header.get_xyzt_units()
    np.testing.assert_allclose(back.header.get_zooms()[:3], src.header.get_zooms()[:3])
    data = np.asanyarray(back.dataobj)
    assert data.shape == src.shape
    # voxel for voxel in world coordinates: each saved voxel's world point is the world point
    # of the source voxel that the napari layer (Z, Y, X) shows at the same place
    ijk = np.argwhere(data > 0)
    assert len(ijk), "the mask is empty"
    world = nib.affines.apply_affine(back.affine, ijk)
    src_ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(src.affine), world)).astype(int)
    assert (mask_zyx[src_ijk[:, 2], src_ijk[:, 1], src_ijk[:, 0]] > 0).all()
    assert int((data > 0).sum()) == int((mask_zyx > 0).sum())


@pytest.mark.parametrize("kind", sorted(CASES))
def test_writer_keeps_source_geometry(tmp_path, kind):
    src = make_source(tmp_path / f"{kind}.nii.gz", kind)
    [(data, kwargs, layer_type)] = _reader.read_layers(str(tmp_path / f"{kind}.nii.gz"))
    assert layer_type == "image" and data.shape == src.shape[::-1]
    mask = (data >= 100).astype(np.uint8)
    out = _writer.write_labels(str(tmp_path / "mask.nii.gz"), mask,
                               {"scale": kwargs["scale"], "metadata": kwargs["metadata"]})
    assert_same_geometry(out[0], src, mask)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_project_case_keeps_source_geometry(tmp_path, kind):
    """A case stored in a project and written later (the source file gone) still overlays it."""
    src_path = tmp_path / f"{kind}.nii.gz"
    src = make_source(src_path, kind)
    image = read_image(src_path)
    mask = (image.array[0] >= 100).astype(np.uint8)
    project = Project.create(tmp_path / "proj")
    project.add_case("c", image, mask)
    src_path.unlink()  # the scan moved away: the project's copy holds the geometry
    rec = Project.open(tmp_path / "proj").load_case("c")
    out = write_label(tmp_path / "case.nii.gz", rec.correction,
                      like=ImageData.from_source(rec.image.to_source()))
    assert_same_geometry(out, src, mask)


def test_hippocampus_006_keeps_its_origin(hippocampus_root, tmp_path):
    path = hippocampus_root / "imagesTr" / "hippocampus_006.nii.gz"
    if not path.is_file():
        pytest.skip("hippocampus_006.nii.gz not in ../shared/data")
    src = nib.load(str(path))
    [(data, kwargs, _)] = _reader.read_layers(str(path))
    mask = (data > np.percentile(data, 90)).astype(np.uint8)
    out = _writer.write_labels(str(tmp_path / "h006.nii.gz"), mask,
                               {"scale": kwargs["scale"], "metadata": kwargs["metadata"]})
    assert_same_geometry(out[0], src, mask)


@pytest.mark.parametrize("disk_shape", [(12, 10), (12, 10, 1)])
def test_2d_nifti_keeps_its_geometry_and_layout(tmp_path, disk_shape):
    """A 2D NIfTI slice, ``(X, Y)`` or ``(X, Y, 1)`` on disk, comes back in the same layout."""
    data = np.zeros(disk_shape, np.int16)
    data[2:5, 6:9] = 100
    img = nib.Nifti1Image(data, _las())
    img.set_qform(_las(), code=1)
    img.set_sform(_las(), code=1)
    nib.save(img, str(tmp_path / "slice.nii.gz"))
    src = nib.load(str(tmp_path / "slice.nii.gz"))
    [(layer, kwargs, _)] = _reader.read_layers(str(tmp_path / "slice.nii.gz"))
    assert layer.shape == (10, 12)  # (Y, X)
    mask = (layer >= 100).astype(np.uint8)
    [out] = _writer.write_labels(str(tmp_path / "m.nii.gz"), mask,
                                 {"scale": kwargs["scale"], "metadata": kwargs["metadata"]})
    back = nib.load(out)
    assert back.shape == disk_shape
    np.testing.assert_array_equal(back.affine, src.affine)
    assert back.get_sform(coded=True)[1] == 1 and back.get_qform(coded=True)[1] == 1
    np.testing.assert_array_equal(np.asanyarray(back.dataobj).reshape(12, 10), mask.T)
