"""The packaged ``skin-lesion`` model: its recipe, and a clinic-size photograph segmented as the
stored 256x192 image is (the model brings it to its training scale and the mask back)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_drunet.cli import main
from napari_drunet.core.evaluation.metrics import confusion_metrics
from napari_drunet.core.image.io import read_image, read_label
from napari_drunet.core.image.rescale import resize_nearest
from napari_drunet.core.models.checkpoint import read_meta
from napari_drunet.core.models.model import list_models, load_model, model_path


def test_skin_lesion_is_packaged_for_rgb_photographs_of_any_size():
    assert "skin-lesion" in list_models()
    meta = read_meta(model_path("skin-lesion"))
    assert meta["card"]["channels"] == "rgb" and meta["card"]["dims"] == [2]
    assert meta["preprocess"]["long_side"] > 0
    assert meta["arch_kwargs"]["in_channels"] == 3 and meta["arch_kwargs"]["out_channels"] == 1


def _isic_test_images(shared_data: Path, n: int) -> list[Path]:
    """The first ``n`` ISIC test images where the model segments the lesion (Dice >= 0.8
    against the ISIC mask). An empty mask would match any other empty mask, and a missed lesion
    leaves a few blobs of near-threshold probability that any resampling moves (test_0001 with
    the session-13 model: Dice 0.18 to its label, 0.91 between the two sizes): neither tests
    the rescaling."""
    folder = shared_data / "ISIC2017" / "test" / "images"
    if not folder.is_dir():
        pytest.skip("ISIC2017 not in ../shared/data")
    model = load_model("skin-lesion", device="cpu")
    found = []
    for p in sorted(folder.glob("*.jpg"))[:20]:
        mask = model.predict(read_image(p)).mask > 0
        truth = read_label(folder.parent / "masks" / f"{p.stem}.png")[0] > 0
        if mask.any() and confusion_metrics(mask, truth)["dice"] >= 0.8:
            found.append(p)
    assert len(found) >= n, "the model segments fewer than n of 20 test images"
    return found[:n]


@pytest.mark.slow
def test_a_large_photograph_gets_the_mask_of_the_small_one(shared_data: Path):
    """Photographed 12x larger (3072 x 2304 px), the mask brought back to 256 x 192 matches the
    stored image's mask: Dice >= 0.95 on average. Measured with the session-13 model on the
    first 10 test images, segmented well or not (``isic_accuracy.size_shift``): mean 0.983 at
    8x and 0.982 at 16x, the lowest 0.908 and 0.898 (test_0001, a missed lesion)."""
    model = load_model("skin-lesion", device="cpu")
    dice = []
    for path in _isic_test_images(shared_data, 5):
        ref = model.predict(read_image(path)).mask
        big = np.asarray(Image.open(path).resize((3072, 2304), Image.Resampling.BICUBIC))
        pred = model.predict(big, is_rgb=True).mask
        assert pred.shape == big.shape[:2]  # on the photograph's grid
        back = resize_nearest(pred.astype(np.uint8), ref.shape) > 0
        dice.append(confusion_metrics(back, ref > 0)["dice"])
    assert np.mean(dice) >= 0.95 and min(dice) >= 0.9, dice


@pytest.mark.slow
def test_predict_cli_writes_the_mask_at_the_photograph_size(shared_data: Path, tmp_path: Path):
    [path] = _isic_test_images(shared_data, 1)
    photo = tmp_path / "clinic.jpg"
    Image.open(path).resize((1600, 1200), Image.Resampling.BICUBIC).save(photo, quality=95)
    out = tmp_path / "clinic_mask.png"
    assert main(["predict", "--model", "skin-lesion", "--input", str(photo), "--output",
                 str(out), "--device", "cpu"]) == 0
    mask, _ = read_label(out)
    assert mask.shape == (1200, 1600)
    ref = load_model("skin-lesion", device="cpu").predict(read_image(path)).mask
    back = resize_nearest(mask.astype(np.uint8), ref.shape) > 0
    assert confusion_metrics(back, ref > 0)["dice"] >= 0.95  # JPEG-saved, still the same mask
