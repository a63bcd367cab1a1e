"""The one input recipe: checkpoint round trip, train/predict parity, the size rescale mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from napari_drunet.core.errors import CheckpointError, InputError
from napari_drunet.core.image.io import ImageData, read_image, read_label
from napari_drunet.core.image.normalization import normalize, validate_spec
from napari_drunet.core.image.rescale import resize_nearest
from napari_drunet.core.models.checkpoint import read_meta
from napari_drunet.core.models.model import Model, load_model
from napari_drunet.core.models.packaged import list_models, model_path
from napari_drunet.core.models.preprocess import check_preprocess
from napari_drunet.core.models.recipe import InputRecipe
from napari_drunet.core.nets.networks import build_model
from napari_drunet.core.train.dataset import Case
from napari_drunet.core.train.sampling import prepare_case
from napari_drunet.core.train.setup import training_recipe

from ..conftest import fundus_disk


# ------------------------------------------------------------------------ checkpoint recipe
@pytest.mark.parametrize("name", list_models())
def test_packaged_recipes_read_and_write_back_unchanged(name):
    meta = read_meta(model_path(name))
    recipe = InputRecipe.from_meta(meta)
    assert recipe.in_channels == meta["arch_kwargs"]["in_channels"]
    assert recipe.rescale in ("fov", "spacing", "size")  # size: skin-lesion
    assert recipe.to_meta() == {"normalization": meta["normalization"],
                                "preprocess": meta["preprocess"]}


def test_recipe_fields_from_old_and_new_entries():
    old = InputRecipe.from_meta({"preprocess": {"fov_diameter": 540}})
    assert (old.rescale, old.target, old.mask_outside_fov) == ("fov", 540.0, True)
    vol = InputRecipe.from_meta({"preprocess": {"spacing": [1, 1, 2], "orientation": "RAS",
                                                "axis_search": True}})
    assert (vol.rescale, vol.target, vol.orientation, vol.axis_search) == \
        ("spacing", (1.0, 1.0, 2.0), "RAS", True)
    assert InputRecipe.from_meta({}).to_meta() == {"normalization": None}
    future = {"preprocess": {"long_side": 256, "from_a_newer_version": 3}}
    assert InputRecipe.from_meta(future).to_meta()["preprocess"] == future["preprocess"]
    both = {"preprocess": {"fov_diameter": 500, "mask_outside_fov": False, "spacing": [1, 1]}}
    assert InputRecipe.from_meta(both).to_meta()["preprocess"] == both["preprocess"]


@pytest.mark.parametrize("pre", [{"long_side": 2}, {"long_side": "big"}, {"channels": "blue"},
                                 {"axis_search": "yes"}, {"spacing": [1.0]}, [1, 2]])
def test_unusable_preprocess_entries_are_refused(pre, tmp_path):
    with pytest.raises(InputError):
        check_preprocess(pre)
    net = build_model("unet", features=(4, 8))
    path = tmp_path / "m.safetensors"
    Model(net, device="cpu").save(path, preprocess=pre)
    with pytest.raises(CheckpointError, match="preprocess"):
        load_model(path, device="cpu")


# ------------------------------------------------------------------- train/predict parity
class _Inputs:
    """Records what a network is fed (crop of the padded whole-image tile)."""

    def __init__(self, net: nn.Module):
        self.seen: list[np.ndarray] = []
        net.register_forward_pre_hook(lambda _m, args: self.seen.append(args[0].numpy().copy()))

    def last(self, spatial: tuple[int, ...]) -> np.ndarray:
        return self.seen[-1][(0, slice(None), *(slice(0, s) for s in spatial))]


# whole image in one tile, on the caller's network (no folded copy)
_ONE_PASS = {"fold_bn": False, "channels_last": False, "tta": False}


def _parity(model: Model, image: ImageData, label: np.ndarray) -> None:
    inputs = _Inputs(model.network)
    recipe, network, search = training_recipe(model, validate_spec(model.normalization))
    case = prepare_case(Case("c", image, label), recipe=recipe, network=network, cfg=search)
    model.predict(image, **_ONE_PASS)
    fed = inputs.last(case.image.shape[1:])
    assert fed.shape == case.image.shape
    np.testing.assert_array_equal(fed, case.image)
    assert case.label.shape == case.image.shape[1:]


def test_training_case_equals_what_predict_feeds_a_fundus_model():
    net = build_model("unet", in_channels=3, features=(4, 8))
    model = Model(net, {"preprocess": {"fov_diameter": 80}}, device="cpu")
    label = np.zeros((160, 160), np.uint8)
    label[70:90, 20:140] = 1
    _parity(model, ImageData(fundus_disk(), (1.0, 1.0)), label)


def test_training_case_equals_what_predict_feeds_a_volume_model():
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, features=(4, 8))
    model = Model(net, {"normalization": {"mode": "zscore"},
                        "preprocess": {"spacing": [1.0, 1.0, 1.0], "orientation": "RAS"}},
                  device="cpu")
    rng = np.random.default_rng(3)
    vol = rng.uniform(0, 100, (1, 10, 16, 12)).astype(np.float32)
    affine = np.diag([-1.0, 1.0, 2.0, 1.0])  # LAS, z voxels of 2 mm: flipped and resampled
    image = ImageData(vol, (2.0, 1.0, 1.0), affine)
    label = (vol[0] > 60).astype(np.uint8)
    pred = model.predict(image, **_ONE_PASS)
    assert "axis_order" in pred.info and any("resampled" in w for w in pred.info["warnings"])
    _parity(model, image, label)


def test_rgb_case_for_a_grey_model_is_converted_as_at_prediction():
    net = build_model("unet", in_channels=1, features=(4, 8))
    model = Model(net, device="cpu")
    photo = ImageData(fundus_disk(64, 50), (1.0, 1.0), is_rgb=True)
    _parity(model, photo, np.zeros((64, 64), np.uint8))


# ------------------------------------------------------------------------- size rescale mode
class LocalContrast(nn.Module):
    """A fixed "network" that sees scale: foreground where a pixel is brighter than its 5 x 5
    neighbourhood. On a photograph shown 8x larger it meets flat plateaus instead."""

    in_channels, out_channels, spatial_dims = 3, 1, 2

    def __init__(self) -> None:
        super().__init__()
        self.blur = nn.AvgPool2d(5, stride=1, padding=2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x.mean(dim=1, keepdim=True)
        return 20.0 * (grey - self.blur(grey) - 0.05)


def _photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    small = ndimage.gaussian_filter(rng.normal(size=(3, 48, 64)), (0, 1.5, 1.5))
    return (100 + 400 * small).astype(np.float32)


def _agreement(model: Model, small: np.ndarray, factor: int) -> float:
    large = small.repeat(factor, 1).repeat(factor, 2)
    mask_small = model.predict(small).mask
    pred = model.predict(large)
    assert pred.mask.shape == large.shape[1:] and pred.probabilities.shape[1:] == large.shape[1:]
    expected = resize_nearest(mask_small, large.shape[1:])
    return float((pred.mask == expected).mean())


def test_size_mode_brings_a_large_photograph_to_the_model_scale_and_back():
    small = _photo()
    model = Model(LocalContrast(), {"preprocess": {"long_side": 64}}, device="cpu")
    plain = Model(LocalContrast(), {}, device="cpu")
    assert 0.2 < model.predict(small).mask.mean() < 0.6  # a real pattern to compare
    with_mode, without = _agreement(model, small, 8), _agreement(plain, small, 8)
    assert with_mode >= 0.9, with_mode
    assert without <= 0.75, without  # the test fails when the mode is ignored
    warnings = model.predict(small.repeat(8, 1).repeat(8, 2)).info["warnings"]
    assert any("long side" in w for w in warnings)


def test_size_mode_keeps_the_aspect_and_leaves_stacks_and_near_sizes_alone():
    recipe = InputRecipe.from_meta({"preprocess": {"long_side": 256}}, in_channels=3)
    tall = recipe.prepare(np.zeros((3, 3000, 2000), np.float32))
    assert tall.array.shape == (3, 256, 171) and tall.rescale.shape == (3000, 2000)
    assert not recipe.prepare(np.zeros((3, 192, 270), np.float32)).rescale.active
    stack = recipe.prepare(np.zeros((3, 4, 600, 800), np.float32))
    assert not stack.rescale.active and "stack" in stack.rescale.reason


def test_size_mode_reaches_the_training_cases():
    model = Model(LocalContrast(), {"preprocess": {"long_side": 64}}, device="cpu")
    photo = _photo().repeat(4, 1).repeat(4, 2)
    label = np.zeros(photo.shape[1:], np.uint8)
    label[40:120, 60:200] = 1
    recipe, network, search = training_recipe(model, validate_spec(None))
    case = prepare_case(Case("big", ImageData(photo, (1.0, 1.0)), label), recipe=recipe,
                        network=network, cfg=search)
    assert case.image.shape == (3, 48, 64) and case.label.shape == (48, 64)
    assert set(np.unique(case.label)) == {0, 1}


def test_size_mode_through_the_cli(tmp_path):
    from PIL import Image

    from napari_drunet import cli

    torch.manual_seed(0)
    path = tmp_path / "skin.safetensors"
    Model(build_model("unet", in_channels=3, features=(4, 8)), device="cpu").save(
        path, preprocess={"long_side": 64})
    big = np.clip(_photo().repeat(8, 1).repeat(8, 2), 0, 255).astype(np.uint8)
    Image.fromarray(np.moveaxis(big, 0, -1)).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    assert cli.main(["predict", "--model", str(path), "--input", str(tmp_path / "photo.png"),
                     "--output", str(out), "--device", "cpu"]) == 0
    written = sorted(out.iterdir())
    assert written and np.asarray(Image.open(written[0])).shape[:2] == (384, 512)


# ------------------------------------------------------------ packaged models on real data
def _old_recipe(model: Model, image: ImageData) -> np.ndarray:
    """The preparation as it was written in ``Model.predict_iter`` before the recipe object:
    channels (already right here), normalise, rescale, axis order, predict, back."""
    from napari_drunet.core.image.rescale import plan_rescale
    from napari_drunet.core.infer.orientation import plan_axis_order
    from napari_drunet.core.infer.predict import predict_iter
    from napari_drunet.core.progress import run_to_end

    cfg = model.inference_config()
    arr = normalize(np.asarray(image.array), model.normalization)
    plan = plan_rescale(arr, model.meta.get("preprocess"), image.spacing)
    arr = plan.apply(arr)
    order, prob = run_to_end(plan_axis_order(model.network, arr, cfg, "auto",
                                             model.meta.get("preprocess"), image.affine))
    if prob is None:
        prob = run_to_end(predict_iter(model.network, order.apply(arr), cfg))
    return plan.restore(order.restore(prob))


def test_packaged_models_predict_as_before_on_real_images(drive_root, hippocampus_root):
    photo = read_image(drive_root / "test" / "images" / "01_test.tif")
    volume = read_image(hippocampus_root / "imagesTr" / "hippocampus_001.nii.gz")
    for name, image in (("retina-vessels", photo), ("hippocampus", volume)):
        model = load_model(name, device="cpu")
        new = model.predict(image).probabilities
        old = _old_recipe(model, image)
        assert new.shape == old.shape
        assert float(np.abs(new - old).max()) < 1e-5, name
    model = load_model("hippocampus", device="cpu")
    label, _ = read_label(hippocampus_root / "labelsTr" / "hippocampus_001.nii.gz")
    _parity(model, volume, np.asarray(label))


def test_a_rescaled_image_is_normalised_at_the_model_scale():
    """The statistics are those of the grid the network sees (and a clinic's large photograph
    is normalised after shrinking, not before)."""
    from napari_drunet.core.image.rescale import resize_linear

    spec = {"mode": "percentile_zscore", "lower": 1.0, "upper": 99.0}
    recipe = InputRecipe.from_meta({"normalization": spec, "preprocess": {"long_side": 64}},
                                   in_channels=3)
    big = np.clip(_photo().repeat(8, 1).repeat(8, 2), 0, 255)
    prepared = recipe.prepare(big).array
    assert prepared.shape == (3, 48, 64)
    expected = normalize(resize_linear(big, (48, 64)), spec)
    np.testing.assert_allclose(prepared, expected, atol=1e-5)
    stale = resize_linear(normalize(big, spec), (48, 64))  # the order before: not what is fed
    assert float(np.abs(prepared - stale).max()) > 1e-3


def test_nan_background_does_not_spread_when_a_volume_is_resampled():
    """NaN outside the head (as some NIfTI tools write) is replaced before resampling, so the
    voxels next to it keep their interpolated values."""
    from napari_drunet.core.image.normalization import sanitize

    recipe = InputRecipe.from_meta({"normalization": {"mode": "zscore"},
                                    "preprocess": {"spacing": [1.0, 1.0, 1.0]}}, in_channels=1)
    vol = np.random.default_rng(5).uniform(50, 100, (1, 12, 40, 40)).astype(np.float32)
    vol[:, :, :, :10] = np.nan
    image = ImageData(vol, (1.0, 0.5, 0.5))
    prepared = recipe.prepare(image).array
    assert prepared.shape == (1, 12, 20, 20) and np.isfinite(prepared).all()
    clean = recipe.prepare(ImageData(sanitize(vol)[0], (1.0, 0.5, 0.5))).array
    np.testing.assert_allclose(prepared, clean, atol=1e-6)
