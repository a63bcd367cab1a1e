"""Batch-norm statistics re-estimated on a new site's images (AdaBN): core.adapt."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_drunet.core.errors import InputError
from napari_drunet.core.image.io import ImageData
from napari_drunet.core.models.model import Model
from napari_drunet.core.nets.networks import build_model
from napari_drunet.core.progress import run_to_end
from napari_drunet.core.train.adapt import (
    _reflect_to_tile,
    adapt_batchnorm,
    batchnorm_layers,
    renormalize_iter,
)


def make_model(dims: int = 2, norm: str = "batch", dropout: float = 0.1) -> Model:
    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=dims, in_channels=1, out_channels=1,
                      features=(8, 16), dropout=dropout, norm=norm)
    return Model(net, {"normalization": {"mode": "zscore"}, "threshold": 0.5}, device="cpu",
                 name="tiny")


def images(n: int, shape=(32, 32), gain: float = 1.0, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = rng.normal(100, 20, shape)
        img[8:20, 8:20] += 80  # a bright square: channels respond unevenly
        out.append((gain * img).astype(np.float32))
    return out


def train_mode_statistics(model: Model, arr: np.ndarray) -> list[tuple]:
    """What torch's own batch norm records for one forward pass of ``arr`` (prepared input)."""
    net = copy.deepcopy(model.network)
    for m in batchnorm_layers(net):
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for m in net.modules():  # dropout off: its masks would change the statistics
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.eval()
    with torch.no_grad():
        net(torch.from_numpy(arr[None]))
    return [(m.running_mean.clone(), m.running_var.clone()) for m in batchnorm_layers(net)]


def test_statistics_are_those_of_the_new_images_and_the_original_is_kept():
    model = make_model()
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    (img,) = images(1)
    adapted = adapt_batchnorm(model, [img], tile_size=32, device="cpu")
    # one image = one tile: the statistics of a train-mode pass over the prepared image
    expected = train_mode_statistics(model, model.prepare(img))
    got = batchnorm_layers(adapted.network)
    assert len(got) == len(expected) > 4
    for m, (mean, var) in zip(got, expected, strict=True):
        torch.testing.assert_close(m.running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m.running_var, var, rtol=1e-4, atol=1e-5)
        assert m.momentum == 0.1 and not m.training  # restored for later fine-tuning
    for k, v in model.network.state_dict().items():  # the source model is untouched
        torch.testing.assert_close(v, before[k])
    # only statistics change: learned weights are identical
    new = adapted.network.state_dict()
    for k, v in before.items():
        if "running_" not in k and "num_batches" not in k:
            torch.testing.assert_close(new[k], v)
    info = adapted.meta["adaptation"]
    assert info["images"] == 1 and info["batches"] == 1 and info["layers"] == len(got)
    assert info["source"] == "tiny"


def test_renormalized_model_has_the_statistics_of_the_new_input():
    """A new normalisation: weights kept, statistics those of the images prepared the new way
    (not the old way), the spec recorded; the source model keeps its own."""
    model = make_model()
    imgs = images(2, gain=3.0)
    new = run_to_end(renormalize_iter(model, {"mode": "minmax"}, imgs, tile_size=32,
                                      device="cpu"))
    assert new.meta["normalization"]["mode"] == "minmax"
    assert model.meta["normalization"]["mode"] == "zscore"
    assert new.meta["adaptation"]["normalization"] == "minmax"
    same = adapt_batchnorm(new, imgs, tile_size=32, device="cpu")  # statistics already those
    old_way = adapt_batchnorm(model, imgs, tile_size=32, device="cpu")
    for a, b in zip(batchnorm_layers(new.network), batchnorm_layers(same.network), strict=True):
        torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-4, atol=1e-5)
    first = batchnorm_layers(new.network)[0].running_mean
    assert not torch.allclose(first, batchnorm_layers(old_way.network)[0].running_mean)
    conv = [k for k in model.network.state_dict() if k.endswith("weight")][0]
    torch.testing.assert_close(new.network.state_dict()[conv], model.network.state_dict()[conv])


def test_every_batch_of_tiles_counts_and_predictions_follow():
    model = make_model()
    imgs = images(3, gain=1.0)
    adapted = adapt_batchnorm(model, imgs, tile_size=32, device="cpu")
    assert adapted.meta["adaptation"]["batches"] == 3
    first = batchnorm_layers(adapted.network)[0]
    per_image = [train_mode_statistics(model, model.prepare(i))[0][0] for i in imgs]
    torch.testing.assert_close(first.running_mean, torch.stack(per_image).mean(0), rtol=1e-4,
                               atol=1e-5)
    # the adapted model predicts differently from the source (its statistics were not these)
    a = adapted.predict(imgs[0]).probabilities
    b = model.predict(imgs[0]).probabilities
    assert np.abs(a - b).max() > 1e-3


def test_images_smaller_than_the_tile_are_reflected_not_zero_padded():
    arr = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    out = _reflect_to_tile(arr, (8, 6))
    assert out.shape == (2, 8, 6)
    np.testing.assert_array_equal(out[:, 1:6], arr)  # 1 row before, 2 after
    np.testing.assert_array_equal(out[:, 0], arr[:, 1])  # reflected, not zeros
    assert _reflect_to_tile(arr, None) is arr and _reflect_to_tile(arr, 4) is arr
    tiny = np.ones((1, 2, 2), np.float32)
    assert _reflect_to_tile(tiny, 9).shape == (1, 9, 9)  # wider than the image itself
    # the adaptation sees the reflected image: the same statistics as a train-mode pass on it
    model = make_model()
    (img,) = images(1, shape=(24, 20))
    adapted = adapt_batchnorm(model, [img], tile_size=32, device="cpu")
    padded = _reflect_to_tile(model.prepare(img), 32)
    mean, _ = train_mode_statistics(model, padded)[0]
    torch.testing.assert_close(batchnorm_layers(adapted.network)[0].running_mean, mean,
                               rtol=1e-4, atol=1e-5)


def test_3d_volumes_with_their_header():
    model = make_model(dims=3)
    vols = [ImageData(v[None], spacing=(1.0, 1.0, 1.0), affine=np.eye(4))
            for v in images(2, shape=(16, 16, 16))]
    adapted = adapt_batchnorm(model, vols, tile_size=16, device="cpu")
    assert adapted.meta["adaptation"]["images"] == 2
    assert adapted.predict(vols[0]).mask.shape == (16, 16, 16)


def test_refusals():
    with pytest.raises(InputError, match="no images"):
        adapt_batchnorm(make_model(), [])
    with pytest.raises(InputError, match="no batch-norm"):
        adapt_batchnorm(make_model(norm="instance"), images(1))


@pytest.mark.slow
def test_blurred_mri_site_recovers_without_labels(hippocampus_root: Path, tmp_path: Path,
                                                  bench_script):
    """The packaged hippocampus model on blurred scans (another scanner): re-estimating its
    statistics on 4 blurred training volumes raises Dice on 3 blurred validation volumes."""
    from napari_drunet.core.models.model import load_model
    from napari_drunet.core.train.dataset import load_dataset

    script = bench_script("mri_adaptation")
    script.split_msd(hippocampus_root, tmp_path)
    train, _ = load_dataset(tmp_path / "train.json", "training", allow_outside=True)
    val, _ = load_dataset(tmp_path / "val.json", "training", allow_outside=True)
    site = script.shifted_cases(train[:4], "blur sigma 1")
    blurred = script.shifted_cases(val[:3], "blur sigma 1")
    model = load_model("hippocampus", "cpu")
    adapted = adapt_batchnorm(model, [c.image for c in site])
    before, after = np.mean(script.score(model, blurred)), np.mean(script.score(adapted, blurred))
    assert after > before + 0.03, (before, after)


def test_public_api_name():
    import napari_drunet

    assert napari_drunet.adapt_batchnorm is adapt_batchnorm
    assert "adapt_batchnorm" in napari_drunet.__all__


def test_lazy_images_are_read_one_at_a_time():
    from napari_drunet.core.train.adapt import LazyImages

    loaded: list[int] = []
    imgs = images(3)

    def load(i: int) -> np.ndarray:
        loaded.append(i)
        return imgs[i]

    lazy = LazyImages(range(3), load)
    assert len(lazy) == 3 and loaded == []
    adapted = adapt_batchnorm(make_model(), lazy, tile_size=32, device="cpu")
    assert loaded == [0, 1, 2] and adapted.meta["adaptation"]["images"] == 3
    eager = adapt_batchnorm(make_model(), imgs, tile_size=32, device="cpu")
    for a, b in zip(batchnorm_layers(adapted.network), batchnorm_layers(eager.network),
                    strict=True):
        torch.testing.assert_close(a.running_mean, b.running_mean)
