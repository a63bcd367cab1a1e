"""Intensity normalization: modes, masks, dtypes, degenerate and non-finite inputs."""

from __future__ import annotations

import numpy as np
import pytest

from napari_drunet.core.errors import InputError
from napari_drunet.core.image.normalization import (
    check_finite,
    default_spec,
    normalize,
    sanitize,
    validate_spec,
)

RNG = np.random.default_rng(1)


def test_percentile_zscore_clips_outliers_per_channel():
    img = np.stack([RNG.normal(100, 10, (32, 32)), RNG.normal(-5, 2, (32, 32))]).astype(np.float32)
    img[0, 0, 0] = 1e6  # outlier
    out = normalize(img, {"mode": "percentile_zscore", "lower": 1, "upper": 99})
    assert out.dtype == np.float32 and out.shape == img.shape
    for c in range(2):
        assert abs(float(out[c].mean())) < 1e-3 and abs(float(out[c].std()) - 1) < 1e-3
    assert out[0, 0, 0] == pytest.approx(out[0].max())  # outlier clipped to the upper percentile
    assert out[0].max() < 4


def test_zscore_and_minmax_exact():
    img = np.arange(24, dtype=np.int16).reshape(1, 2, 3, 4)
    z = normalize(img, {"mode": "zscore"})
    ref = (img - img.mean()) / img.std()
    np.testing.assert_allclose(z, ref, rtol=1e-5)
    m = normalize(img, {"mode": "minmax"})
    assert m.min() == 0.0 and m.max() == 1.0
    np.testing.assert_allclose(m, img / 23.0, rtol=1e-6)
    n = normalize(img, {"mode": "none"})
    assert n.dtype == np.float32
    np.testing.assert_array_equal(n, img)


def test_mask_nonzero_uses_foreground_and_zeroes_background():
    img = np.zeros((1, 16, 16), np.float32)
    img[0, 4:12, 4:12] = RNG.normal(50, 5, (8, 8))
    out = normalize(img, {"mode": "zscore", "mask_nonzero": True})
    fg = out[0, 4:12, 4:12]
    assert abs(float(fg.mean())) < 1e-4 and abs(float(fg.std()) - 1) < 1e-3
    assert np.all(out[0, :4] == 0)
    whole = normalize(img, {"mode": "zscore"})
    assert whole[0, 0, 0] < 0  # without the mask background is below the mean
    assert default_spec("mri")["mask_nonzero"] is True


@pytest.mark.parametrize("dtype", [bool, np.int8, np.uint8, np.uint16, np.int32, np.float16,
                                   np.float64])
def test_dtypes(dtype):
    img = (RNG.random((2, 8, 8)) * 100).astype(dtype) if dtype is not bool else RNG.random((2, 8, 8)) > 0.5
    for mode in ("percentile_zscore", "zscore", "minmax", "none"):
        out = normalize(img, {"mode": mode})
        assert out.dtype == np.float32 and out.shape == img.shape and np.isfinite(out).all()


def test_float64_beyond_float32_range_stays_finite():
    img = np.array([[[1e300, -1e300], [0.0, 1.0]]])
    out = normalize(img, {"mode": "minmax"})
    assert np.isfinite(out).all()


@pytest.mark.parametrize("mode", ["percentile_zscore", "zscore", "minmax"])
def test_constant_image_gives_zeros(mode):
    for value in (0, 7, -1e4):
        out = normalize(np.full((1, 5, 5, 5), value, np.float32), {"mode": mode})
        assert np.all(out == 0)
    out = normalize(np.zeros((1, 4, 4)), {"mode": mode, "mask_nonzero": True})  # empty mask
    assert np.all(out == 0)


def test_nonfinite_values_replaced():
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    img[0, 0, 0], img[0, 1, 1], img[0, 2, 2] = np.nan, np.inf, -np.inf
    assert check_finite(img) == 3 and check_finite(img.astype(np.int32) * 0) == 0
    clean, n = sanitize(img)
    assert n == 3 and np.isfinite(clean).all()
    assert clean[0, 1, 1] == 15 and clean[0, 2, 2] == 1 and clean[0, 0, 0] == 1
    for mode in ("percentile_zscore", "zscore", "minmax", "none"):
        assert np.isfinite(normalize(img, {"mode": mode})).all()
    allnan = np.full((2, 3, 3), np.nan, np.float32)
    allnan[1] = 1.0
    assert np.all(normalize(allnan) == 0)


def test_input_not_modified():
    img = RNG.random((1, 6, 6)).astype(np.float32)
    keep = img.copy()
    normalize(img)
    normalize(img, {"mode": "none"})
    np.testing.assert_array_equal(img, keep)


def test_spec_validation():
    assert validate_spec(None) == default_spec()
    full = validate_spec({"mode": "zscore"})
    assert full["mode"] == "zscore" and full["lower"] == 0.5 and full["upper"] == 99.5
    for bad in ({"mode": "histogram"}, {"lower": 60, "upper": 40}, {"upper": 101},
                {"lower": "a"}, {"scale": 2}, "zscore"):
        with pytest.raises(InputError):
            validate_spec(bad)
    with pytest.raises(InputError):
        default_spec("ultrasound-3000")
    with pytest.raises(InputError):
        normalize(np.zeros(5))


def _fundus(size: int, gain=(1.0, 1.0, 1.0), ramp: bool = False) -> np.ndarray:
    """A synthetic fundus photograph (3, size, size): bright disc, dark border, a thin dark
    vessel; ``gain`` per channel and an optional left-to-right illumination ramp."""
    yy, xx = np.mgrid[:size, :size] / size
    fov = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.45 ** 2
    img = np.zeros((3, size, size), np.float32)
    base = np.array([180.0, 90.0, 40.0])[:, None, None] * np.asarray(gain)[:, None, None]
    img[:, fov] = base[:, 0]
    vessel = fov & (np.abs(yy - xx) < 1.5 / 64)
    img[:, vessel] *= 0.7
    if ramp:
        img *= np.linspace(0.5, 1.2, size, dtype=np.float32)[None, None, :]
    return img


def test_fundus_local_removes_illumination_and_colour_and_keeps_vessels():
    from napari_drunet.core.image.rescale import fov_mask

    plain = normalize(_fundus(128), {"mode": "fundus_local"})
    shifted = normalize(_fundus(128, gain=(0.6, 1.3, 0.4), ramp=True), {"mode": "fundus_local"})
    fov = fov_mask(_fundus(128))
    inner = np.zeros_like(fov)
    inner[30:98, 30:98] = True
    vessel = inner & (np.abs(np.subtract.outer(np.arange(128), np.arange(128))) < 1)
    for out in (plain, shifted):
        assert out.dtype == np.float32 and out.shape == (3, 128, 128)
        assert np.all(out[:, ~fov] == -8.0)  # -2 * clip outside the FOV
        assert np.abs(out[:, fov]).max() <= 4.0
        assert out[1][vessel].mean() < -1.0 < 0.0 < out[1][inner & ~vessel].mean() + 0.5
    # camera gains and a strong illumination ramp change the normalised image little
    assert np.abs(plain[:, inner] - shifted[:, inner]).mean() < 0.1
    # the FOV is found again on the normalised image (rescaling plans on it)
    assert np.array_equal(fov_mask(plain), fov)


def test_fundus_local_scale_follows_the_fov():
    """The same photograph at twice the resolution gives the same input (downsampled)."""
    small = normalize(_fundus(96), {"mode": "fundus_local"})
    big = normalize(np.repeat(np.repeat(_fundus(96), 2, axis=1), 2, axis=2),
                    {"mode": "fundus_local"})
    inner = (slice(None), slice(30, 66), slice(30, 66))
    assert np.abs(small[inner] - big[:, ::2, ::2][inner]).mean() < 0.15


def test_fundus_local_options_are_checked_and_only_kept_for_that_mode():
    spec = validate_spec({"mode": "fundus_local"})
    assert spec["sigma"] == 0.05 and spec["clip"] == 4.0
    assert "sigma" not in validate_spec({"mode": "zscore", "sigma": 0.1})
    for bad in ({"sigma": 0.0}, {"sigma": 0.9}, {"clip": -1}, {"sigma": "wide"}):
        with pytest.raises(InputError):
            validate_spec({"mode": "fundus_local", **bad})
    with pytest.raises(InputError, match="2D photographs"):
        normalize(np.zeros((1, 4, 8, 8), np.float32), {"mode": "fundus_local"})
    from napari_drunet.core.image.normalization import fit_normalization

    with pytest.raises(InputError, match="whole photographs"):
        fit_normalization(_fundus(32), {"mode": "fundus_local"})
