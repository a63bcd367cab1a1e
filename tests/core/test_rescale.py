from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_drunet.core.image.rescale import fov_diameter, fov_mask, plan_rescale, resize_linear
from napari_drunet.core.models.model import Model
from napari_drunet.core.nets.networks import build_model

from ..conftest import fundus_disk


def test_fov_found_and_diameter_measured():
    img = fundus_disk(200, 160)
    mask = fov_mask(img)
    assert abs(fov_diameter(mask) - 160) <= 3
    assert abs(mask.mean() - np.pi * 80 ** 2 / 200 ** 2) < 0.02


def test_no_fov_border_means_unknown_scale():
    img = np.random.default_rng(1).normal(100, 10, (3, 64, 64)).astype(np.float32)
    assert fov_diameter(fov_mask(img)) is None
    plan = plan_rescale(img, {"fov_diameter": 32})
    assert not plan.active and plan.fov is None


def test_fov_rescale_plan_and_restore():
    img = fundus_disk(200, 160)
    plan = plan_rescale(img, {"fov_diameter": 80})
    assert plan.active and plan.target_shape in ((100, 100), (101, 101), (99, 99))
    small = plan.apply(img)
    assert small.shape[1:] == plan.target_shape
    prob = np.full((1, *plan.target_shape), 0.7, np.float32)
    back = plan.restore(prob)
    assert back.shape == (1, 200, 200)
    assert back[0, 0, 0] == 0.0 and abs(back[0, 100, 100] - 0.7) < 1e-5  # outside FOV cleared


def test_within_tolerance_is_not_resampled():
    img = fundus_disk(120, 100)
    assert not plan_rescale(img, {"fov_diameter": 108}).active
    vol = np.zeros((1, 10, 12, 14), np.float32)
    assert not plan_rescale(vol, {"spacing": [1, 1, 1]}, spacing=(1.1, 1.0, 0.9)).active
    plan = plan_rescale(vol, {"spacing": [1, 1, 1]}, spacing=(2.0, 1.0, 0.5))
    assert plan.target_shape == (20, 12, 7)


def test_model_predict_uses_recorded_scale():
    net = build_model("unet", in_channels=3, features=(4, 8))
    model = Model(net, {"preprocess": {"fov_diameter": 80}}, device="cpu")
    pred = model.predict(fundus_disk(200, 160))
    assert pred.mask.shape == (200, 200) and pred.probabilities.shape == (1, 200, 200)
    assert any("rescaled" in w for w in pred.info["warnings"])
    assert pred.probabilities[0, 0, 0] == 0.0


def test_mc_dropout_uses_recorded_scale_and_fov():
    net = build_model("drunet", in_channels=3, features=(4, 8), dropout=0.3)
    model = Model(net, {"preprocess": {"fov_diameter": 80}}, device="cpu")
    mean, unc = model.mc_dropout(fundus_disk(200, 160), n=2)
    assert mean.shape == (1, 200, 200) and unc.shape == (200, 200)
    assert unc[0, 0] == 0.0 and mean[0, 0, 0] == 0.0  # outside the FOV


def test_finetuning_cases_are_brought_to_the_model_scale():
    from napari_drunet.core.train.dataset import Case
    from napari_drunet.core.train.sampling import prepare_case

    img = fundus_disk(200, 160)
    label = np.zeros((200, 200), np.uint8)
    label[90:110, 20:180] = 1
    case = Case.from_arrays("c", img, label)
    pc = prepare_case(case, None, preprocess={"fov_diameter": 80})
    assert pc.image.shape[1:] == pc.label.shape == pc.mask.shape
    assert abs(pc.image.shape[1] - 100) <= 1
    assert set(np.unique(pc.label)) == {0, 1}
    assert not pc.mask[0, 0] and pc.mask[50, 50]


def _skimage_resize(arr: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """The linear resize as it was written with skimage (the reference of ``resize_linear``)."""
    from skimage.transform import resize

    shrink = any(t < s for t, s in zip(spatial, arr.shape[1:], strict=True))
    return np.stack([resize(ch, spatial, order=1, anti_aliasing=shrink, preserve_range=True,
                            mode="edge") for ch in arr.astype(np.float32)])


@pytest.mark.parametrize(("shape", "target"), [
    ((3, 700, 605), (584, 505)),     # a STARE photograph to DRIVE's FOV
    ((2, 90, 70), (360, 280)),       # probabilities back to a 4x larger photograph
    ((1, 50, 61), (37, 90)),         # one axis shrunk, the other enlarged
    ((2, 30, 40, 50), (45, 33, 77)),  # a volume resampled to another spacing
    ((1, 5, 1), (3, 4)),
])
def test_resize_linear_is_skimages_anti_aliased_linear_resize(shape, target):
    arr = np.random.default_rng(2).uniform(0, 255, shape).astype(np.float32)
    new = resize_linear(arr, target)
    assert new.shape == (shape[0], *target) and new.dtype == np.float32
    np.testing.assert_allclose(new, _skimage_resize(arr, target), atol=2e-4)


def _scipy_fov_mask(image: np.ndarray) -> np.ndarray:
    """``fov_mask`` as written with scipy's morphology (the reference of the faster one)."""
    chan = image[0].astype(np.float32)
    lo, hi = np.percentile(chan, [1, 99])
    mask = ndimage.binary_opening(chan > lo + 0.15 * (hi - lo), iterations=2)
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.ones(chan.shape, bool)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)


def test_fov_mask_is_the_scipy_morphology():
    rng = np.random.default_rng(4)
    photo = fundus_disk(200, 160)
    photo[:, rng.random(photo.shape[1:]) < 0.05] = 0  # dark specks: holes, and specks outside
    photo[:, 95:105, 60:140] = 0  # a dark bar across the FOV: a hole to fill
    cases = [photo]
    for _ in range(20):
        x = rng.uniform(0, 255, (3, int(rng.integers(5, 60)), int(rng.integers(5, 60))))
        x[:, rng.random(x.shape[1:]) < 0.3] = 0
        cases.append(x.astype(np.float32))
    for img in cases:
        np.testing.assert_array_equal(fov_mask(img), _scipy_fov_mask(img))
