"""A napari layer backed by a dask array is segmented tile by tile (core.lazy), not loaded."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask is not installed")

from napari_drunet.core.infer import lazy  # noqa: E402
from napari_drunet.gui.segment import SegmentWidget  # noqa: E402

pytestmark = pytest.mark.gui


def test_dask_layer_is_segmented_tile_by_tile(make_napari_viewer, qtbot, tiny_ckpt, make_disc,
                                              monkeypatch):
    vol = np.stack([make_disc(32, s % 3) * (1 + s) for s in range(5)])
    reads: list[tuple] = []
    original = lazy.LazyVolume.read

    def counting_read(self, key):
        block = original(self, key)
        reads.append(block.shape)
        return block

    monkeypatch.setattr(lazy.LazyVolume, "read", counting_read)
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(vol, chunks=(1, 16, 16)), name="big")
    seg = SegmentWidget(viewer)
    seg.set_model_source(str(tiny_ckpt))
    job = seg.run()
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    assert job.error is None, job.error
    labels = viewer.layers["big labels"].data
    from napari_drunet.core.models.model import load_model

    expect = load_model(tiny_ckpt, "cpu").predict(vol).mask
    np.testing.assert_array_equal(np.asarray(labels), expect)
    assert reads and all(shape[1:] == (32, 32) for shape in reads)  # one slice per read
