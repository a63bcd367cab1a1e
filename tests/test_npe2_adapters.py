"""npe2 reader / writer / sample-data functions, called directly (no viewer)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_drunet import _reader, _sample_data, _writer
from napari_drunet.core.errors import InputError

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(3)
LAYER_TYPES = {"image", "labels"}


def _check_tuples(layers):
    assert isinstance(layers, list) and layers
    for layer in layers:
        assert isinstance(layer, tuple) and len(layer) == 3
        data, kwargs, kind = layer
        assert isinstance(data, np.ndarray) and isinstance(kwargs, dict) and kind in LAYER_TYPES
    return layers


def _affine():
    a = np.diag([-0.9, 1.1, 2.5, 1.0])
    a[:3, 3] = [12.0, -30.0, 4.0]
    a[0, 1] = 0.1
    return a


def test_manifest_names_existing_callables():
    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((REPO / "napari.yaml").read_text())
    mods = {"napari_drunet._reader", "napari_drunet._writer", "napari_drunet._sample_data"}
    for cmd in manifest["contributions"]["commands"]:
        module, func = cmd["python_name"].split(":")
        if module in mods:
            assert callable(getattr({"napari_drunet._reader": _reader,
                                     "napari_drunet._writer": _writer,
                                     "napari_drunet._sample_data": _sample_data}[module], func))


def test_get_reader_accepts_and_refuses(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "b.png")
    assert _reader.get_reader(str(tmp_path / "a.tif")) is not None
    assert _reader.get_reader(tmp_path / "x.NII.GZ") is not None
    assert _reader.get_reader(str(tmp_path / "notes.txt")) is None
    assert _reader.get_reader(str(tmp_path)) is None  # folder
    assert _reader.get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.png")]) is None  # mixed
    assert _reader.get_reader([]) is None
    reader = _reader.get_reader([str(tmp_path / "a.tif"), str(tmp_path / "a.tif")])
    assert len(_check_tuples(reader([str(tmp_path / "a.tif")] * 2))) == 2


def test_reader_nifti_scale_affine_and_channels(tmp_path):
    nib.save(nib.Nifti1Image(RNG.random((7, 6, 5)).astype(np.float32), _affine()), tmp_path / "ct.nii.gz")
    path = str(tmp_path / "ct.nii.gz")
    [(data, kw, kind)] = _check_tuples(_reader.get_reader(path)(path))
    assert kind == "image" and data.shape == (5, 6, 7) and kw["name"] == "ct"
    np.testing.assert_allclose(kw["scale"], nib.load(path).header.get_zooms()[::-1])
    np.testing.assert_allclose(kw["metadata"]["affine"], _affine())
    assert kw["metadata"]["source"]["format"] == "nifti" and kw["metadata"]["source"]["path"] == path

    nib.save(nib.Nifti1Image(RNG.random((7, 6, 5, 2)).astype(np.float32), np.eye(4)), tmp_path / "mm.nii")
    [(data, kw, kind)] = _check_tuples(_reader.read_layers(str(tmp_path / "mm.nii")))
    assert data.shape == (2, 5, 6, 7) and kw["channel_axis"] == 0 and len(kw["name"]) == 2


def test_reader_rgb_and_labels(tmp_path):
    rgb = RNG.integers(0, 255, (8, 9, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    [(data, kw, kind)] = _check_tuples(_reader.read_layers(tmp_path / "photo.png"))
    assert kw["rgb"] is True and "channel_axis" not in kw
    np.testing.assert_array_equal(data, rgb)

    mask = (RNG.random((8, 9)) > 0.5).astype(np.uint8) * 255
    Image.fromarray(mask).save(tmp_path / "21_manual1.gif")
    [(data, kw, kind)] = _check_tuples(_reader.read_layers(tmp_path / "21_manual1.gif"))
    assert kind == "labels" and set(np.unique(data).tolist()) <= {0, 1}
    np.testing.assert_array_equal(data, mask // 255)
    Image.fromarray(mask).save(tmp_path / "gray.gif")  # no label-like name -> image
    assert _reader.read_layers(tmp_path / "gray.gif")[0][2] == "image"
    (tmp_path / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.uint8), np.eye(4)), tmp_path / "labelsTr" / "h.nii.gz")
    assert _reader.read_layers(tmp_path / "labelsTr" / "h.nii.gz")[0][2] == "labels"
    assert _reader.looks_like_labels("DRIVE/training/1st_manual/21.gif")
    assert not _reader.looks_like_labels("data/brain.nii.gz")
    assert not _reader.looks_like_labels("test_labels0/brain.nii.gz")


def test_reader_raises_one_line_error_on_corrupt_file(tmp_path):
    (tmp_path / "bad.png").write_text("not an image")
    reader = _reader.get_reader(str(tmp_path / "bad.png"))
    with pytest.raises(InputError):
        reader(str(tmp_path / "bad.png"))


def test_writer_restores_nifti_geometry(tmp_path):
    src = tmp_path / "scan.nii.gz"
    vol = RNG.random((7, 6, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, _affine()), src)
    [(data, kw, _)] = _reader.read_layers(str(src))
    labels = (data > 0.5).astype(np.int32)
    meta = {"scale": kw["scale"], "metadata": kw["metadata"], "name": "seg"}
    out = _writer.write_labels(str(tmp_path / "seg.nii.gz"), labels, meta)
    assert out == [str(tmp_path / "seg.nii.gz")]
    back = nib.load(out[0])
    np.testing.assert_allclose(back.affine, nib.load(src).affine)
    assert back.shape == (7, 6, 5)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), labels.T)


def test_writer_without_source_uses_scale_and_2d_formats(tmp_path):
    labels = RNG.integers(0, 3, (4, 6, 5)).astype(np.uint8)
    out = _writer.write_labels(str(tmp_path / "l.nii.gz"), labels, {"scale": (3.0, 0.5, 0.25)})
    np.testing.assert_allclose(nib.load(out[0]).header.get_zooms(), (0.25, 0.5, 3.0))
    out = _writer.write_labels(str(tmp_path / "l.tif"), labels, {})
    np.testing.assert_array_equal(tifffile.imread(out[0]), labels)
    out = _writer.write_labels(str(tmp_path / "l.png"), labels[0], {"metadata": {}})
    np.testing.assert_array_equal(np.asarray(Image.open(out[0])), labels[0])
    with pytest.raises(InputError):
        _writer.write_labels(str(tmp_path / "l4.nii.gz"), np.zeros((2, 2, 2, 2), np.uint8), {})


def test_sample_fundus():
    [(data, kw, kind)] = _check_tuples(_sample_data.sample_fundus())
    assert kind == "image" and kw["rgb"] is True and kw["name"] == "fundus"
    assert data.ndim == 3 and data.shape[-1] == 3 and data.dtype == np.uint8
    import skimage.data

    np.testing.assert_array_equal(data, skimage.data.retina())


def test_sample_hippocampus_and_paths():
    [(data, kw, kind)] = _check_tuples(_sample_data.sample_hippocampus())
    assert kind == "image" and data.ndim == 3 and min(data.shape) >= 16
    assert len(kw["scale"]) == 3 and kw["metadata"]["affine"].shape == (4, 4)
    assert data.std() > 0 and data.dtype.isnative
    paths = _sample_data.sample_paths()
    assert set(paths) == {"fundus", "hippocampus"} and all(Path(p).is_file() for p in paths.values())
    assert paths["hippocampus"].parent.name == "samples"


def test_tuples_build_napari_layers(tmp_path):
    """The kwargs are valid napari layer arguments (layers built without a viewer)."""
    layers_mod = pytest.importorskip("napari.layers")
    from napari.layers.utils.stack_utils import split_channels

    nib.save(nib.Nifti1Image(RNG.random((7, 6, 5, 2)).astype(np.float32), _affine()),
             tmp_path / "mm.nii.gz")
    Image.fromarray(RNG.integers(0, 255, (8, 9, 3)).astype(np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(tmp_path / "x_mask.png")
    tuples = (_reader.read_layers([str(tmp_path / "mm.nii.gz")])
              + _reader.read_layers(str(tmp_path / "rgb.png"))
              + _reader.read_layers(str(tmp_path / "x_mask.png"))
              + _sample_data.sample_fundus() + _sample_data.sample_hippocampus())
    built = []
    for data, kwargs, kind in tuples:
        if "channel_axis" in kwargs:
            kw = dict(kwargs)
            axis = kw.pop("channel_axis")
            for d, k, t in split_channels(data, axis, **kw):
                built.append(layers_mod.Layer.create(d, k, t))
        else:
            built.append(layers_mod.Layer.create(data, kwargs, kind))
    assert [type(b).__name__ for b in built] == ["Image", "Image", "Image", "Labels", "Image", "Image"]
    assert built[0].name == "mm c0" and tuple(built[0].scale) == pytest.approx(
        nib.load(tmp_path / "mm.nii.gz").header.get_zooms()[2::-1])
    assert built[2].rgb and built[4].rgb


def test_manifest_is_valid_and_registered_from_the_installed_package():
    """`npe2 validate napari-drunet`: the installed distribution's entry point finds the
    manifest (napari_drunet/napari.yaml links to the single copy at the repository root)."""
    from pathlib import Path

    import npe2

    pm = npe2.PluginManifest.from_distribution("napari-drunet")
    assert pm.name == "napari-drunet"
    root = Path(__file__).resolve().parents[1]
    assert (root / "napari_drunet" / "napari.yaml").resolve() == (root / "napari.yaml").resolve()
    ids = {c.id for c in pm.contributions.commands}
    assert {"napari-drunet.get_reader", "napari-drunet.segment_widget"} <= ids
    npe2.PluginManifest.from_file(root / "napari.yaml")  # schema validation
