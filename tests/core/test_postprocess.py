"""``largest_object``: the recipe's clean-up of one-object images (dermoscopy), through the
function, ``Model.predict`` (recipe default and per-call override) and ``drunet predict``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_drunet.cli import main
from napari_drunet.core.image.io import read_label
from napari_drunet.core.infer.postprocess import keep_largest_objects
from napari_drunet.core.models.model import Model, load_model


def two_blobs() -> np.ndarray:
    """A 2D binary map: a 12x12 square with a 2x2 hole, a 3x3 speck, a diagonal neighbour."""
    m = np.zeros((32, 32), np.uint8)
    m[4:16, 4:16] = 1
    m[9:11, 9:11] = 0  # hole
    m[24:27, 24:27] = 1  # speck
    m[16, 16] = 1  # touches the square's corner only: same object under full connectivity
    return m


def test_keeps_the_largest_object_and_fills_its_holes():
    out = keep_largest_objects(two_blobs())
    expected = np.zeros((32, 32), np.uint8)
    expected[4:16, 4:16] = 1
    expected[16, 16] = 1
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint8


def test_each_class_keeps_its_own_largest_object_and_other_classes_inside_holes():
    lab = np.zeros((10, 20, 20), np.int32)
    lab[2:8, 2:12, 2:12] = 1
    lab[4:6, 6:8, 6:8] = 2  # class 2 inside class 1: a hole that is not background
    lab[1, 18, 18] = 2  # a one-voxel speck of class 2, smaller than its object
    lab[8:10, 15:19, 15:19] = 1  # a second, smaller object of class 1
    out = keep_largest_objects(lab)
    assert out.dtype == np.int32
    assert (out[4:6, 6:8, 6:8] == 2).all()  # kept, not filled over by class 1
    assert out[1, 18, 18] == 0 and (out[8:10, 15:19, 15:19] == 0).all()
    assert (out[2:8, 2:12, 2:12] > 0).all()


class _Identity(nn.Module):
    """Network whose logits are the input: the probability map is a known image."""

    spatial_dims = 2
    in_channels = out_channels = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) * 20.0


def _model(largest_object: bool) -> Model:
    meta = {"arch": "identity", "spatial_dims": 2, "in_channels": 1, "out_channels": 1,
            "arch_kwargs": {"spatial_dims": 2, "in_channels": 1, "out_channels": 1},
            "normalization": {"mode": "none"}, "threshold": 0.5,
            "inference": {"largest_object": largest_object}}
    return Model(_Identity(), meta, torch.device("cpu"), "identity")


def test_predict_follows_the_recipe_and_a_call_can_turn_it_off():
    img = two_blobs().astype(np.float32)
    on = _model(True)
    np.testing.assert_array_equal(on.predict(img).mask, keep_largest_objects(img > 0.5))
    np.testing.assert_array_equal(on.predict(img, largest_object=False).mask, img > 0.5)
    assert on.predict(img).info["largest_object"] is True
    np.testing.assert_array_equal(_model(False).predict(img).mask, img > 0.5)


def test_predict_cli_follows_the_recipe_unless_told(tmp_path: Path):
    """The packaged skin-lesion recipe keeps one lesion; ``--no-largest-object`` keeps all."""
    model = load_model("skin-lesion", device="cpu")
    assert model.meta["inference"]["largest_object"] is True
    rng = np.random.default_rng(0)
    photo = np.full((96, 128, 3), 200, np.uint8)
    photo[20:60, 20:60] = (90, 50, 40)  # two brown lesions on pale skin
    photo[70:85, 95:115] = (100, 60, 45)
    photo = np.clip(photo + rng.normal(0, 4, photo.shape), 0, 255).astype(np.uint8)
    src = tmp_path / "two.png"
    from PIL import Image

    Image.fromarray(photo).save(src)
    outs = {}
    for flag in ("--largest-object", "--no-largest-object"):
        out = tmp_path / f"mask{flag}.png"
        assert main(["predict", "--model", "skin-lesion", "--input", str(src), "--output",
                     str(out), "--device", "cpu", flag]) == 0
        outs[flag] = read_label(out)[0] > 0
    default = tmp_path / "default.png"
    assert main(["predict", "--model", "skin-lesion", "--input", str(src), "--output",
                 str(default), "--device", "cpu"]) == 0
    np.testing.assert_array_equal(read_label(default)[0] > 0, outs["--largest-object"])
    np.testing.assert_array_equal(outs["--largest-object"],
                                  keep_largest_objects(outs["--no-largest-object"]))
