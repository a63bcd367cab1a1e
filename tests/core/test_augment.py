"""Rotation / zoom augmentation: geometry of the warp, defaults that change nothing, padding;
image-quality degradation (blur, noise, JPEG)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_drunet.core.errors import InputError
from napari_drunet.core.train.augment import (
    Augmenter,
    degrade_quality,
    jpeg_roundtrip,
    source_window,
    warp_window,
)
from napari_drunet.core.train.config import TrainConfig
from napari_drunet.core.train.sampling import PatchSampler, PreparedCase


def _quarter_turn(nd: int, a: int, b: int) -> np.ndarray:
    m = np.eye(nd)
    m[a, a] = m[b, b] = 0.0
    m[a, b], m[b, a] = -1.0, 1.0
    return m


def test_quarter_turn_about_the_centre_equals_rot90_2d_and_3d():
    a = np.arange(30, dtype=np.float32).reshape(5, 6)
    out = warp_window(a[None], np.zeros(2), (2.0, 2.5), (6, 5), _quarter_turn(2, 0, 1), order=0)
    np.testing.assert_array_equal(out[0], np.rot90(a, -1))
    v = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    out = warp_window(v, np.zeros(3), (1.5, 2.0, 2.5), (4, 6, 5), _quarter_turn(3, 1, 2), order=0)
    np.testing.assert_array_equal(out, np.rot90(v, -1, axes=(1, 2)))
    assert out.dtype == v.dtype  # labels keep their integer type


def test_window_offset_and_outside_points_read_zero():
    a = np.arange(64, dtype=np.float32).reshape(8, 8)
    # the same crop seen through a window that starts at (2, 3): identity map
    out = warp_window(a[2:, 3:][None], np.array([2, 3]), (4.5, 4.5), (4, 4), np.eye(2), order=1)
    np.testing.assert_allclose(out[0], a[3:7, 3:7])
    out = warp_window(a[None], np.zeros(2), (3.5, 3.5), (12, 12), np.eye(2), order=0)[0]
    assert out[0, 0] == 0 and out[2, 2] == a[0, 0] and out[-1, -1] == 0


def test_source_window_covers_the_rotated_and_zoomed_patch():
    t = np.deg2rad(45)
    m = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) / 0.8  # zoom out x0.8
    lo, size = source_window((50.0, 60.0), (20, 20), m)
    half_diag = 9.5 * np.sqrt(2) / 0.8
    assert np.all(lo <= np.array([50, 60]) - half_diag)
    assert np.all(lo + size - 1 >= np.array([50, 60]) + half_diag)


def test_defaults_draw_no_matrix_and_consume_no_random_numbers():
    aug = Augmenter(rng=3)
    state = aug.rng.bit_generator.state
    assert aug.draw_matrix(2) is None and aug.draw_matrix(3) is None
    assert aug.rng.bit_generator.state == state  # old seeds give the old patch sequence


@pytest.mark.parametrize("nd", [2, 3])
def test_drawn_matrices_are_rotations_times_a_bounded_zoom(nd):
    aug = Augmenter(rotate=30, scale=0.25, spatial_prob=1.0, rng=0)
    for _ in range(50):
        m = aug.draw_matrix(nd)
        zoom = abs(np.linalg.det(m)) ** (-1.0 / nd)
        assert 1 / 1.25 - 1e-9 <= zoom <= 1.25 + 1e-9
        r = m * zoom
        np.testing.assert_allclose(r @ r.T, np.eye(nd), atol=1e-9)
        if nd == 2:  # one in-plane angle, at most 30 degrees
            assert abs(np.degrees(np.arctan2(r[1, 0], r[0, 0]))) <= 30 + 1e-9
    assert Augmenter(rotate=30, scale=0.25, spatial_prob=0.0, rng=0).draw_matrix(2) is None


def test_rotated_patches_keep_image_and_label_aligned():
    yy, xx = np.mgrid[:64, :64]
    label = ((yy - 30) ** 2 + (xx - 36) ** 2 <= 100).astype(np.int64)
    label[(yy > 45) & (xx < 20)] = 1  # an asymmetric second blob
    case = PreparedCase("c", label[None].astype(np.float32), label)
    aug = Augmenter(flip=False, rot90=False, intensity=0, noise=0, rotate=180, scale=0.3,
                    spatial_prob=1.0, rng=1)
    sampler = PatchSampler([case], (32, 32), batch_size=16, fg_fraction=1.0, rng=2, augmenter=aug)
    batch = sampler.sample()
    inside = batch.weight > 0
    agree = ((batch.image[:, 0] > 0.5) == (batch.label > 0))[inside].mean()
    assert agree > 0.97
    assert batch.label.sum() > 0 and set(np.unique(batch.label)) <= {0, 1}


def test_pixels_from_outside_the_image_get_zero_weight():
    case = PreparedCase("s", np.ones((1, 12, 12), np.float32), np.ones((12, 12), np.int64))
    seed_aug = Augmenter(rotate=45, scale=0.2, spatial_prob=1.0, rng=5)
    m = seed_aug.draw_matrix(2)
    aug = Augmenter(flip=False, rot90=False, intensity=0, noise=0, rotate=45, scale=0.2,
                    spatial_prob=1.0, rng=5)
    img, lab, w, _ = PatchSampler([case], (40, 40), rng=0, augmenter=aug).sample_patch()
    expected = 144 / abs(np.linalg.det(m))  # the image's area as seen in the patch
    assert abs(w.sum() - expected) < 0.15 * expected
    assert np.all(lab[w == 0] == 0) and np.all(lab[w > 0] == 1)


def test_training_options_are_checked():
    with pytest.raises(InputError, match="rotate"):
        TrainConfig(rotate=200).validate()
    with pytest.raises(InputError, match="scale"):
        TrainConfig(scale=-0.1).validate()
    with pytest.raises(InputError, match="spatial_prob"):
        Augmenter(spatial_prob=1.5)
    with pytest.raises(InputError, match="rotate"):
        Augmenter(rotate=-1)
    with pytest.raises(InputError, match="degrade"):
        TrainConfig(degrade=1.5).validate()
    with pytest.raises(InputError, match="degrade"):
        Augmenter(degrade=-0.1)


def _vessel_image(channels: int = 3, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    lines = ((np.abs(xx - yy) < 2) | (np.abs(xx - size // 3) < 1)).astype(np.float32)
    return np.stack([lines * (c + 1) - 0.5 for c in range(channels)]).astype(np.float32)


def test_jpeg_roundtrip_keeps_range_and_loses_more_at_low_quality():
    img = _vessel_image()
    hi, lo = jpeg_roundtrip(img, 95), jpeg_roundtrip(img, 10)
    assert hi.shape == lo.shape == img.shape and hi.dtype == np.float32
    err_hi, err_lo = np.abs(hi - img).mean(), np.abs(lo - img).mean()
    assert err_hi < 0.05 * np.ptp(img) and err_lo > 2 * err_hi
    gray = jpeg_roundtrip(img[:1], 50)
    assert gray.shape == (1, 64, 64)
    np.testing.assert_allclose(gray.min(), img[0].min(), atol=0.1)  # own range mapped back


def test_degradation_changes_the_image_only_and_is_seeded():
    img, lab, w = _vessel_image(), np.zeros((64, 64), np.int64), np.ones((64, 64), np.float32)
    lab[10:20, 10:20] = 1
    aug = Augmenter(flip=False, rot90=False, intensity=0, noise=0, degrade=1.0, rng=3)
    out, lab2, w2 = aug(img, lab, w)
    assert not np.allclose(out, img)
    np.testing.assert_array_equal(lab2, lab)
    np.testing.assert_array_equal(w2, w)
    again = Augmenter(flip=False, rot90=False, intensity=0, noise=0, degrade=1.0, rng=3)
    np.testing.assert_array_equal(again(img, lab, w)[0], out)
    # 3D patches get blur and/or noise (no JPEG): blur alone leaves a flat volume unchanged
    flat = np.zeros((1, 32, 32, 32), np.float32)
    changed = [not np.array_equal(degrade_quality(flat, np.random.default_rng(s)), flat)
               for s in range(20)]
    assert 0 < sum(changed) < 20


def test_degradation_off_draws_no_random_numbers():
    img, lab, w = _vessel_image(), np.zeros((64, 64), np.int64), np.ones((64, 64), np.float32)
    a, b = Augmenter(rng=4), Augmenter(degrade=0.0, rng=4)
    np.testing.assert_array_equal(a(img, lab, w)[0], b(img, lab, w)[0])
    assert a.rng.random() == b.rng.random()
