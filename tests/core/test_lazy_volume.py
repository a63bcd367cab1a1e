"""Lazy (zarr / dask) volumes segmented tile by tile: same result as in memory, never loaded
whole, peak memory within the output plus two tile batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

zarr = pytest.importorskip("zarr", reason="zarr is not installed")

from napari_drunet.core.image.normalization import fit_normalization, normalize  # noqa: E402
from napari_drunet.core.infer.lazy import ChannelFirst, LazyVolume  # noqa: E402
from napari_drunet.core.models.model import Model  # noqa: E402
from napari_drunet.core.nets.networks import build_model  # noqa: E402

RNG = np.random.default_rng(11)
SPEC = {"mode": "percentile_zscore", "lower": 0.5, "upper": 99.5}


def _model(dims: int, **meta) -> Model:
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=dims, in_channels=1, out_channels=1, features=(4, 8))
    return Model(net.eval(), {"normalization": SPEC, "threshold": 0.5, **meta}, device="cpu")


def _zarr(tmp_path, vol: np.ndarray, chunks) -> zarr.Array:
    arr = zarr.open_array(str(tmp_path / "v.zarr"), mode="w", shape=vol.shape, chunks=chunks,
                          dtype=vol.dtype)
    arr[:] = vol
    return arr


class ReadLog:
    """A zarr array that records every block read and refuses to be converted whole."""

    def __init__(self, array) -> None:
        self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, []

    def __getitem__(self, key):
        block = self.array[key]
        self.reads.append(block.size)
        return block

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole lazy volume was converted to numpy")


def test_zarr_and_dask_volumes_match_the_in_memory_prediction(tmp_path):
    import dask.array as da

    vol = (RNG.normal(100, 20, (40, 70, 50)) + 60 * (RNG.random((40, 70, 50)) > 0.9))
    vol = vol.astype(np.float32)
    arr = _zarr(tmp_path, vol, (16, 32, 32))
    model = _model(3)
    eager = model.predict(vol, tile_size=32)
    for lazy in (arr, da.from_zarr(arr)):
        pred = model.predict(lazy, tile_size=32)
        assert pred.info["lazy"] and pred.info["tiles"] == eager.info["tiles"] > 1
        np.testing.assert_allclose(pred.probabilities, eager.probabilities, atol=1e-6)
        np.testing.assert_array_equal(pred.mask, eager.mask)


@pytest.mark.parametrize("axis", [0, 2])
def test_2d_model_runs_slice_by_slice_on_a_lazy_volume(tmp_path, axis):
    vol = RNG.integers(0, 1000, (6, 40, 36)).astype(np.uint16)
    arr = _zarr(tmp_path, vol, (2, 20, 20))
    model = _model(2)
    eager = model.predict(vol, slice_axis=axis, tile_size=16)
    pred = model.predict(arr, slice_axis=axis, tile_size=16)
    assert pred.info["mode"] == "2d-slices"
    np.testing.assert_allclose(pred.probabilities, eager.probabilities, atol=1e-6)


def test_the_volume_is_read_tile_by_tile_never_whole(tmp_path):
    vol = RNG.normal(0, 1, (64, 96, 80)).astype(np.float32)
    log = ReadLog(_zarr(tmp_path, vol, (16, 32, 32)))
    pred = _model(3).predict(log, tile_size=32, batch_size=2)
    assert pred.mask.shape == vol.shape
    tile_reads = log.reads[1:]  # the first read is the normalisation sample (the image is small)
    assert max(tile_reads) <= 32 ** 3 and len(tile_reads) == pred.info["tiles"]


def test_statistics_of_a_large_volume_come_from_an_even_subsample(tmp_path):
    vol = RNG.gamma(2.0, 50.0, (40, 300, 300)).astype(np.float32)  # 3.6 M voxels > 1 M sampled
    log = ReadLog(_zarr(tmp_path, vol, (8, 100, 100)))
    volume = LazyVolume(ChannelFirst(log), SPEC)
    assert max(log.reads) == 300 * 300  # one plane at a time
    full = fit_normalization(vol[None], SPEC)[0]
    np.testing.assert_allclose(volume.params[0], full, rtol=0.03)
    tile = volume.read((slice(None), slice(0, 8), slice(0, 50), slice(0, 50)))
    ref = normalize(vol[None], SPEC)[:, :8, :50, :50]
    np.testing.assert_allclose(tile, ref, atol=0.05)


def test_preprocessing_that_needs_the_whole_image_is_reported(tmp_path):
    vol = RNG.normal(0, 1, (20, 24, 24)).astype(np.float32)
    model = _model(3, preprocess={"spacing": [1.0, 1.0, 1.0]})
    pred = model.predict(_zarr(tmp_path, vol, (10, 12, 12)), tile_size=16)
    assert any("stored scale" in w and "spacing" in w for w in pred.info["warnings"])


def test_peak_memory_is_the_output_plus_two_tile_batches(tmp_path, bench_script):
    """numpy's peak (tracemalloc) while segmenting a 64x256x256 zarr volume stays within the
    float32 probabilities + uint8 mask + 2 tile batches; loading it first costs the volume."""
    bench = bench_script("lazy_volume_memory")
    volume = bench.write_volume(tmp_path / "v.zarr", (64, 256, 256), (32, 64, 64))
    lazy = bench.measure(volume, tile=48, batch=2, net="conv")
    assert lazy["within_budget"], lazy
    eager = bench.measure(volume, tile=48, batch=2, eager=True, net="conv")
    input_mb = 64 * 256 * 256 * 4 / 2 ** 20  # the float32 copy of the loaded volume
    assert eager["numpy_peak_mb"] > lazy["numpy_peak_mb"] + 0.9 * input_mb
    assert eager["foreground"] == pytest.approx(lazy["foreground"], abs=1e-3)
