"""napari opens a DICOM folder / DICOMDIR through our reader; masks drawn on it save as NIfTI
with the series' geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("pydicom", reason="the dicom extra (pydicom) is not installed")

from napari_drunet.core.image.dicom import list_series, read_dicom  # noqa: E402
from napari_drunet.core.image.dicom_write import write_series  # noqa: E402

RNG = np.random.default_rng(3)
OBLIQUE = np.array([[-0.9, 0.1, 0, 90.0], [0.05, 0.8, 0.3, -100.0], [0, -0.2, 2.5, -30.0],
                    [0, 0, 0, 1]])


def test_open_a_dicom_folder_in_napari(make_napari_viewer, tmp_path):
    vol = RNG.integers(0, 900, (6, 10, 12)).astype(np.int16)
    write_series(vol, OBLIQUE, tmp_path / "brain", description="T1",
                 names=[f"f{n}" for n in RNG.permutation(6)])
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "brain"), plugin="napari-drunet")
    assert len(layers) == 1 and layers[0].name == "brain"
    img = read_dicom(tmp_path / "brain")
    np.testing.assert_array_equal(layers[0].data, img.array[0])
    np.testing.assert_allclose(layers[0].scale, img.spacing)
    np.testing.assert_allclose(layers[0].metadata["affine"], img.affine)
    # a mask painted on it and saved through our writer carries the series' geometry
    labels = viewer.add_labels((layers[0].data > 450).astype(np.uint8), name="mask",
                               metadata={"source": layers[0].metadata["source"]})
    out = tmp_path / "mask.nii.gz"
    labels.save(str(out), plugin="napari-drunet")
    saved = nib.load(out)
    np.testing.assert_allclose(saved.affine, img.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(saved.dataobj).transpose(2, 1, 0), labels.data)


def test_two_series_open_as_two_layers(make_napari_viewer, tmp_path):
    write_series(RNG.integers(0, 100, (4, 8, 8)), OBLIQUE, tmp_path / "study",
                 description="T1", series_number=1, names=[f"a{k}" for k in range(4)])
    write_series(RNG.integers(200, 300, (3, 6, 6)), np.diag([0.5, 0.5, 4.0, 1.0]),
                 tmp_path / "study", description="FLAIR", series_number=2,
                 names=[f"b{k}" for k in range(3)])
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "study"), plugin="napari-drunet")
    assert [layer.name for layer in layers] == ["study 1 T1", "study 2 FLAIR"]
    assert [layer.data.shape for layer in layers] == [(4, 8, 8), (3, 6, 6)]
    assert layers[0].data.max() < 100 <= 200 <= layers[1].data.min()
    uids = [layer.metadata["source"]["meta"]["dicom"]["series_uid"] for layer in layers]
    assert uids == [s.uid for s in list_series(tmp_path / "study")]
