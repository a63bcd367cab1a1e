"""Does this model fit this image: the packaged models' cards, and the refusal with a proposal."""

from __future__ import annotations

import numpy as np
import pytest

from napari_drunet.core.errors import InputError
from napari_drunet.core.models.fit import (
    ImageKind,
    best_model,
    fit_problem,
    fit_summary,
    proposal,
)
from napari_drunet.core.models.model import list_models, load_model

FUNDUS = {"card": {"modality": "colour fundus photograph", "dims": [2], "channels": "rgb"},
          "arch_kwargs": {"spatial_dims": 2, "in_channels": 3}}
MRI = {"card": {"modality": "T1 MRI crop", "dims": [3], "channels": "grey"},
       "arch_kwargs": {"spatial_dims": 3, "in_channels": 1}}
VOLUME = ImageKind(3, 1, False, (32, 47, 41))
PHOTO = ImageKind(2, 3, True, (584, 565))


def test_cards_say_what_each_packaged_model_segments():
    names = list_models()
    if "retina-vessels" not in names or "hippocampus" not in names:
        pytest.skip("packaged weights not installed")
    assert fit_problem(load_model("retina-vessels", "cpu").meta, PHOTO) is None
    assert "3D grey volume (32 x 47 x 41)" in fit_problem(
        load_model("retina-vessels", "cpu").meta, VOLUME, "retina-vessels")
    assert "2D RGB image" in fit_problem(load_model("hippocampus", "cpu").meta, PHOTO)
    assert proposal(VOLUME) == "hippocampus"
    assert proposal(PHOTO) == "retina-vessels"
    if "brain-tumour" in names:  # a FLAIR + T1c study: the model with two input channels
        study = ImageKind(3, 2, False, (155, 240, 240))
        assert proposal(study) == "brain-tumour"
        # a 1-channel model cannot take it: it is refused, not proposed
        assert proposal(study, exclude="brain-tumour") is None
        assert "3D 2-channel volume" in fit_problem(load_model("hippocampus", "cpu").meta, study)


def test_fit_summary_adds_the_cards_example_when_there_is_one():
    plain = "2D, for RGB images (colour fundus photograph)"
    assert fit_summary(FUNDUS) == plain
    with_example = {**FUNDUS, "card": {**FUNDUS["card"], "example": "a 565 x 584 px TIFF"}}
    assert fit_summary(with_example) == plain + "; e.g. a 565 x 584 px TIFF"
    assert fit_summary({"arch_kwargs": {"spatial_dims": 3}}) == "3D, for grey images"


@pytest.mark.parametrize("name", list_models())
def test_every_packaged_card_gives_an_example_image(name: str):
    card = load_model(name, "cpu").meta["card"]
    assert {"modality", "dims", "channels", "example"} <= set(card)
    assert isinstance(card["example"], str) and "\n" not in card["example"]
    assert len(card["example"]) > 20  # names an image: source, size, format


def test_fundus_model_refuses_a_grey_volume_and_names_the_fitting_model():
    if "retina-vessels" not in list_models():
        pytest.skip("packaged weights not installed")
    model = load_model("retina-vessels", "cpu")
    volume = np.random.default_rng(0).random((20, 40, 36)).astype(np.float32)
    with pytest.raises(InputError, match=r"is 2D, for RGB images \(colour fundus photograph\); "
                                         r"this image is a 3D grey volume .*'hippocampus' fits"):
        model.predict(volume)


def test_best_model_prefers_matching_colour_and_ignores_models_that_do_not_fit():
    plain2d = {"arch_kwargs": {"spatial_dims": 2, "in_channels": 1}}  # no card: any 2D/3D
    assert best_model([("fundus", FUNDUS), ("mri", MRI)], VOLUME) == "mri"
    assert best_model([("plain", plain2d), ("mri", MRI)], VOLUME) == "mri"
    assert best_model([("fundus", FUNDUS)], VOLUME) is None
    assert best_model([("mri", MRI), ("fundus", FUNDUS)], PHOTO) == "fundus"
    assert fit_problem(plain2d, VOLUME) is None  # home-trained 2D models still run slice-wise


def test_message_suggests_is_rgb_for_a_photo_read_as_a_volume():
    text = fit_problem(FUNDUS, ImageKind(3, 1, False, (584, 565, 3)), "m")
    assert "is_rgb=True" in text and "channel_axis=-1" in text


def test_model_without_card_keeps_slice_by_slice_volumes(tmp_path):
    import torch

    from napari_drunet.core.models.model import Model
    from napari_drunet.core.nets.networks import build_model

    torch.manual_seed(0)
    net = build_model("drunet", spatial_dims=2, in_channels=1, out_channels=1, features=[8, 16])
    pred = Model(net, {}, device="cpu").predict(np.random.default_rng(0).random((3, 32, 32)))
    assert pred.mask.shape == (3, 32, 32)
    with pytest.raises(InputError, match="is 3D"):
        Model(build_model("drunet", spatial_dims=3, in_channels=1, out_channels=1,
                          features=[8, 16]), {"card": MRI["card"]}, device="cpu").predict(
            np.zeros((32, 32), np.float32))


def test_photo_read_as_a_volume_gets_the_is_rgb_hint_not_a_3d_model():
    if "retina-vessels" not in list_models():
        pytest.skip("packaged weights not installed")
    photo = np.random.default_rng(0).integers(0, 255, (64, 60, 3), dtype=np.uint8)
    with pytest.raises(InputError, match="is_rgb=True") as info:
        load_model("retina-vessels", "cpu").predict(photo, is_rgb=False)
    assert "hippocampus" not in str(info.value)


def test_cli_refuses_the_fundus_model_on_the_3d_sample_in_one_line(tmp_path, capsys):
    if "retina-vessels" not in list_models():
        pytest.skip("packaged weights not installed")
    from napari_drunet._sample_data import sample_paths
    from napari_drunet.cli import main

    rc = main(["predict", "--model", "retina-vessels", "--input",
               str(sample_paths()["hippocampus"]), "--output", str(tmp_path / "out"),
               "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: model 'retina-vessels' is 2D") and "'hippocampus' fits" in err
