"""Big inputs: a size guard with an override, a memory check before inference, progress lines
without a terminal, and small images not padded beyond what the network needs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_helpers import save_tiny  # noqa: E402

from napari_drunet.cli import main  # noqa: E402
from napari_drunet.core.errors import InputError  # noqa: E402
from napari_drunet.core.models.model import Model, load_model  # noqa: E402


@pytest.fixture()
def model(tmp_path):
    return load_model(save_tiny(tmp_path / "m.safetensors"), "cpu")


def test_size_guard_refuses_then_override_runs(model):
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    with pytest.raises(InputError, match="size guard"):
        model.predict(image, max_image_pixels=1000)
    assert model.predict(image, max_image_pixels=None).mask.shape == (64, 64)
    assert model.predict(image, max_image_pixels=64 * 64).mask.shape == (64, 64)


def test_cli_size_guard_is_one_line_and_max_pixels_lifts_it(capsys, tmp_path, model):
    img = tmp_path / "a.tif"
    tifffile.imwrite(img, np.random.default_rng(0).random((64, 64)).astype(np.float32))
    argv = ["predict", "--model", str(tmp_path / "m.safetensors"), "--input", str(img),
            "--output", str(tmp_path / "o"), "--device", "cpu"]
    assert main([*argv, "--max-pixels", "1000"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--max-pixels 0" in err[0], err
    assert main([*argv, "--max-pixels", "0"]) == 0


def test_image_too_big_for_the_free_memory_is_refused_before_inference(model, monkeypatch):
    monkeypatch.setenv("NAPARI_DRUNET_MAX_MEMORY", "10K")
    with pytest.raises(InputError, match="GiB are free"):
        model.predict(np.zeros((64, 64), np.float32), max_image_pixels=None)


def test_small_images_are_not_padded_to_the_model_tile(model, monkeypatch):
    big_tile = Model(model.network, {**model.meta, "inference": {"tile_size": [576, 576]}},
                     device="cpu", name="t")
    seen = []
    cls = type(big_tile.network)
    real = cls.forward
    monkeypatch.setattr(cls, "forward", lambda self, x, *a, **k: seen.append(tuple(x.shape))
                        or real(self, x, *a, **k))
    pred = big_tile.predict(np.random.default_rng(0).random((4, 4)).astype(np.float32))
    assert pred.mask.shape == (4, 4)
    assert seen and all(s[2:] == (4, 4) for s in seen), seen  # network multiple 2: 4 x 4
    # the stored tile is the training patch: a larger image that fits one pass is not cut
    seen.clear()
    big_tile.predict(np.zeros((600, 40), np.float32))
    assert seen == [(1, 1, 600, 40)], seen
    # an explicit tile_size is still the tile
    seen.clear()
    big_tile.predict(np.zeros((600, 40), np.float32), tile_size=576)
    assert {s[2] for s in seen} == {576} and {s[3] for s in seen} == {40}


def test_long_jobs_print_progress_lines_without_a_terminal(capsys, monkeypatch):
    from napari_drunet.cli import progress
    from napari_drunet.core.progress import Progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)

    def job():
        for i in range(1, 4):
            yield Progress(i, 3, f"tile {i}/3")
        return "done"

    assert progress.drive(job(), "predict big.png") == "done"
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("predict big.png: ") for ln in lines), lines
    assert "3/3 (100 %)" in lines[-1]
