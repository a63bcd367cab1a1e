"""Binary PNG/TIFF masks are viewable (0/255, the DRIVE/ISIC convention) and read back as 0/1.

Files are checked with other libraries (Pillow, tifffile, nibabel) than the ones that wrote them.
Multi-class label maps keep their class indices 0..K, NIfTI keeps class indices, and existing
0/1 PNG masks still read as 0/1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_drunet import _reader, _writer
from napari_drunet.cli import main
from napari_drunet.core.image.io import read_label, write_label
from napari_drunet.core.train.dataset import load_dataset

RNG = np.random.default_rng(3)


def _binary(shape=(12, 14)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[(slice(2, 7),) * len(shape)] = 1
    return mask


def _values(path: Path) -> set[int]:
    if path.suffix in (".tif", ".tiff"):
        return set(np.unique(tifffile.imread(path)).tolist())
    return set(np.unique(np.asarray(Image.open(path))).tolist())


@pytest.mark.parametrize("name", ["m.png", "m.bmp", "m.gif", "m.tif", "m3d.tif"])
def test_binary_masks_are_written_0_255_and_read_as_0_1(tmp_path, name):
    mask = _binary((5, 12, 14) if name.startswith("m3d") else (12, 14))
    out = write_label(tmp_path / name, mask)
    assert _values(out) == {0, 255}  # visible in any image viewer
    lab, _ = read_label(out)
    assert lab.dtype == np.uint8
    np.testing.assert_array_equal(lab, mask)
    bools = write_label(tmp_path / f"b{name}", mask.astype(bool))
    assert _values(bools) == {0, 255}


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_multiclass_maps_keep_class_indices(tmp_path, ext):
    labels = RNG.integers(0, 4, (10, 11)).astype(np.uint8)
    out = write_label(tmp_path / f"l{ext}", labels)
    assert _values(out) == {0, 1, 2, 3}
    np.testing.assert_array_equal(read_label(out)[0], labels)
    # the caller knows a map of class indices that happens to hold only 0 and 1
    out = write_label(tmp_path / f"k{ext}", _binary(), scale_binary=False)
    assert _values(out) == {0, 1}


def test_nifti_masks_keep_class_indices(tmp_path):
    nib = pytest.importorskip("nibabel")
    out = write_label(tmp_path / "m.nii.gz", _binary((4, 12, 14)))
    assert set(np.unique(np.asarray(nib.load(str(out)).dataobj)).tolist()) == {0, 1}


def test_existing_0_1_png_masks_still_read(tmp_path):
    mask = _binary()
    Image.fromarray(mask).save(tmp_path / "old_mask.png")
    np.testing.assert_array_equal(read_label(tmp_path / "old_mask.png")[0], mask)
    [(data, _, kind)] = _reader.read_layers(str(tmp_path / "old_mask.png"))
    assert kind == "labels"
    np.testing.assert_array_equal(data, mask)


def test_napari_writer_and_reader(tmp_path):
    mask = _binary()
    for ext in (".png", ".tif"):
        [out] = _writer.write_labels(str(tmp_path / f"seg_labels{ext}"), mask, {"metadata": {}})
        assert _values(Path(out)) == {0, 255}
        [(data, _, kind)] = _reader.read_layers(out)
        assert kind == "labels"
        np.testing.assert_array_equal(data, mask)  # 255 back to class 1
    labels = RNG.integers(0, 3, (12, 14)).astype(np.uint8)
    [out] = _writer.write_labels(str(tmp_path / "multi_labels.png"), labels, {"metadata": {}})
    assert _values(Path(out)) == {0, 1, 2}


def test_dataset_json_labels_0_255(tmp_path):
    mask = _binary((16, 16))
    Image.fromarray(np.full((16, 16), 80, np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(mask * 255).save(tmp_path / "img_label.png")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "object"},
        "training": [{"image": "img.png", "label": "img_label.png"}]}))
    cases, _ = load_dataset(tmp_path / "dataset.json")
    np.testing.assert_array_equal(cases[0].label, mask)


def _tiny(path: Path, out_channels: int) -> Path:
    import torch

    from napari_drunet.core.image.normalization import default_spec
    from napari_drunet.core.models.model import Model
    from napari_drunet.core.nets.networks import build_model

    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=2, in_channels=1, out_channels=out_channels,
                      features=(4, 8))
    meta = {"normalization": default_spec(), "threshold": 0.5,
            "label_names": {str(i): f"c{i}" for i in range(max(2, out_channels))}}
    return Model(net, meta, device="cpu", name="tiny").save(path)


def test_predict_writes_viewable_masks_and_evaluate_reads_them(tmp_path, capsys):
    img = (RNG.random((32, 32)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "b.tif", img)
    binary = _tiny(tmp_path / "bin.safetensors", 1)
    for name in ("a.png", "b.tif"):
        out = tmp_path / "pred" / (Path(name).stem + Path(name).suffix)
        assert main(["predict", "--model", str(binary), "--input", str(tmp_path / name),
                     "--output", str(out), "--device", "cpu", "--threshold", "0"]) == 0
        assert _values(out) == {255}  # threshold 0: all foreground, written as 255
    multi = _tiny(tmp_path / "multi.safetensors", 3)
    assert main(["predict", "--model", str(multi), "--input", str(tmp_path / "a.png"),
                 "--output", str(tmp_path / "multi.png"), "--device", "cpu"]) == 0
    assert _values(tmp_path / "multi.png") <= {0, 1, 2}  # class indices, never 255

    truth = tmp_path / "truth"
    truth.mkdir()
    Image.fromarray(np.ones((32, 32), np.uint8)).save(truth / "b.png")  # an old 0/1 mask
    res = tmp_path / "res.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred" / "b.tif"),
                 "--truth", str(truth / "b.png"), "--json", str(res), "--no-hd"]) == 0
    assert json.loads(res.read_text())["mean_dice"] == pytest.approx(1.0)


def test_real_isic_and_drive_masks_round_trip(shared_data, tmp_path):
    """Real 0/255 masks (ISIC PNG, DRIVE GIF) open as class 1 and save back to the same 0/255."""
    found = [p for p in (shared_data / "ISIC2017" / "val" / "masks" / "val_0001.png",
                         shared_data / "DRIVE" / "training" / "1st_manual" / "21_manual1.gif")
             if p.is_file()]
    if not found:
        pytest.skip("neither ISIC2017 nor DRIVE masks under ../shared/data")
    for path in found:
        original = np.asarray(Image.open(path).convert("L"))
        [(data, _, kind)] = _reader.read_layers(str(path))
        assert kind == "labels" and set(np.unique(data).tolist()) == {0, 1}
        [out] = _writer.write_labels(str(tmp_path / f"{path.stem}_mask.png"), data, {})
        np.testing.assert_array_equal(np.asarray(Image.open(out)), original)
