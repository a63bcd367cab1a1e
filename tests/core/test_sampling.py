"""Patch sampler and augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_drunet.core.errors import InputError
from napari_drunet.core.train.sampling import Augmenter, PatchSampler, PreparedCase, crop_padded


def _case(name="a", shape=(64, 64), channels=1, seed=0, fg=None):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(channels, *shape)).astype(np.float32)
    label = np.zeros(shape, np.int64)
    if fg is not None:
        label[fg] = 1
    return PreparedCase(name, image, label)


def test_shapes_2d_3d_and_slices():
    case2 = _case(shape=(40, 50), channels=3)
    b = PatchSampler([case2], (16, 24), batch_size=5, rng=0).sample()
    assert b.image.shape == (5, 3, 16, 24) and b.image.dtype == np.float32
    assert b.label.shape == (5, 16, 24) and b.label.dtype == np.int64
    assert b.weight.shape == (5, 16, 24) and b.weight.dtype == np.float32
    assert b.names == ["a"] * 5
    vol = _case(shape=(6, 20, 30))
    assert PatchSampler([vol], (4, 16, 16), rng=0).sample().image.shape == (4, 1, 4, 16, 16)
    # 2D model on a 3D volume: slices across slice_axis
    b = PatchSampler([vol], (16, 8), batch_size=3, rng=0, slice_axis=2).sample()
    assert b.image.shape == (3, 1, 16, 8)
    with pytest.raises(InputError):
        PatchSampler([case2], (4, 16, 16))  # 3D model on a 2D image
    with pytest.raises(InputError):
        PatchSampler([case2], (16, 16), spatial_dims=3)


def test_slices_come_from_the_volume():
    vol = np.arange(5 * 8 * 8, dtype=np.float32).reshape(1, 5, 8, 8)
    case = PreparedCase("v", vol, np.zeros((5, 8, 8), np.int64))
    img, _, w, _ = PatchSampler([case], (8, 8), rng=3).sample_patch(biased=False)
    assert w.min() == 1.0  # patch equals the slice: nothing padded
    z = int(img[0, 0, 0]) // 64
    np.testing.assert_array_equal(img[0], vol[0, z])


def test_foreground_bias_rate():
    # one foreground pixel in a large image: random patches almost never contain it
    case = _case(shape=(200, 200), fg=(slice(150, 151), slice(30, 31)))
    for fraction in (0.0, 0.33, 0.8):
        sampler = PatchSampler([case], (16, 16), batch_size=50, fg_fraction=fraction, rng=1)
        hits = sum(int(sampler.sample().label.any(axis=(1, 2)).sum()) for _ in range(20))
        rate = hits / 1000
        chance = 16 * 16 / 200 ** 2  # a random patch covering the pixel
        assert abs(rate - fraction) < 0.06 + chance, (fraction, rate)


def test_foreground_bias_picks_each_class_and_focus():
    label = np.zeros((300, 300), np.int64)
    label[10, 10] = 1
    label[290, 290] = 2
    focus = np.zeros((300, 300), bool)
    focus[150, 150] = True
    case = PreparedCase("m", np.zeros((1, 300, 300), np.float32), label, focus=focus)
    sampler = PatchSampler([case], (8, 8), fg_fraction=1.0, rng=0)
    counts = {1: 0, 2: 0, "focus": 0}
    for _ in range(300):
        img, lab, _, _ = sampler.sample_patch()
        if (lab == 1).any():
            counts[1] += 1
        elif (lab == 2).any():
            counts[2] += 1
        else:
            counts["focus"] += 1
    assert all(70 < v < 130 for v in counts.values()), counts


def test_padding_has_zero_weight_and_reflected_image():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 10, 12)).astype(np.float32)
    label = np.ones((10, 12), np.int64)
    case = PreparedCase("s", image, label)
    # patch larger than the image: the whole image is inside, the rest is padding
    sampler = PatchSampler([case], (32, 32), batch_size=20, rng=0, fg_fraction=0.5)
    b = sampler.sample()
    assert np.all(b.weight.sum(axis=(1, 2)) == 10 * 12)
    assert np.all(b.label[b.weight == 0] == 0) and np.all(b.label[b.weight == 1] == 1)
    assert np.all(np.isfinite(b.image)) and np.all(b.image[:, :, b.weight[0] == 0] != 0)
    # a case weight map: padded pixels 0, inner pixels keep the map's values
    weight = np.full((10, 12), 0.5, np.float32)
    case_w = PreparedCase("w", image, label, weight=weight)
    b = PatchSampler([case_w], (16, 16), batch_size=10, rng=0).sample()
    assert set(np.unique(b.weight)) <= {0.0, 0.5} and (b.weight == 0).any()


def test_crop_padded_reflects():
    a = np.arange(5.0)
    np.testing.assert_array_equal(crop_padded(a, [-2], [9], mode="reflect"),
                                  [2, 1, 0, 1, 2, 3, 4, 3, 2])
    np.testing.assert_array_equal(crop_padded(a, [3], [4]), [3, 4, 0, 0])


def test_region_mask_and_counted_pixels_restrict_random_centres():
    mask = np.zeros((100, 100), bool)
    mask[80:, 80:] = True
    case = PreparedCase("r", np.zeros((1, 100, 100), np.float32),
                        np.zeros((100, 100), np.int64), mask=mask)
    sampler = PatchSampler([case], (4, 4), rng=0, fg_fraction=0.0)
    marker = np.zeros((100, 100), np.float32)
    marker[76:, 76:] = 1  # any 4x4 patch centred in the mask lies here
    case.image = marker[None]
    assert all(sampler.sample_patch()[0].min() == 1 for _ in range(50))


def test_determinism():
    case = _case(shape=(50, 50), fg=(slice(10, 20), slice(10, 20)))
    a = PatchSampler([case], (16, 16), rng=7, augmenter=Augmenter(rng=8)).sample()
    b = PatchSampler([case], (16, 16), rng=7, augmenter=Augmenter(rng=8)).sample()
    c = PatchSampler([case], (16, 16), rng=9, augmenter=Augmenter(rng=8)).sample()
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("shape", [(16, 16), (4, 16, 16), (8, 12)])
def test_augmentation_consistent_between_image_label_weight(shape):
    """Geometric transforms move image, label and weight together."""
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, size=shape)
    image = np.stack([label.astype(np.float32), -label.astype(np.float32)])
    weight = (label + 1).astype(np.float32)
    aug = Augmenter(intensity=0.0, noise=0.0, rng=1)
    changed = 0
    for _ in range(20):
        img, lab, w = aug(image, label, weight)
        assert img.shape == image.shape and lab.shape == label.shape
        np.testing.assert_array_equal(img[0], lab.astype(np.float32))
        np.testing.assert_array_equal(img[1], -lab.astype(np.float32))
        np.testing.assert_array_equal(w, lab + 1)
        changed += not np.array_equal(lab, label)
    assert changed > 5


def test_rotations_only_for_square_planes():
    label = np.arange(8 * 12).reshape(8, 12)
    aug = Augmenter(flip=False, rot90=True, intensity=0, noise=0, rng=0)
    for _ in range(10):
        _, lab, _ = aug(label[None].astype(np.float32), label, label.astype(np.float32))
        np.testing.assert_array_equal(lab, label)
    square = np.arange(64).reshape(8, 8)
    seen = {aug(square[None].astype(np.float32), square, square * 1.0)[1].tobytes()
            for _ in range(40)}
    assert len(seen) == 4


def test_intensity_and_noise_change_image_only():
    label = np.zeros((16, 16), np.int64)
    image = np.ones((2, 16, 16), np.float32)
    aug = Augmenter(flip=False, rot90=False, intensity=0.2, noise=0.05, gamma=0.3, rng=0)
    img, lab, w = aug(image, label, np.ones((16, 16), np.float32))
    assert img.dtype == np.float32 and not np.allclose(img, image)
    assert abs(float(img.mean()) - 1.0) < 0.5
    np.testing.assert_array_equal(lab, label)
    with pytest.raises(InputError):
        Augmenter(noise=-1)
