"""Every model shipped in napari_drunet/weights: size limit, model card, loads and predicts."""

from __future__ import annotations

import numpy as np
import pytest

from napari_drunet.core.models.model import list_models, load_model, model_card, model_path

PACKAGED = list_models()


#: What a card must show besides the common sections: the simulated-shift table for the models
#: learnt from many images; the 6-study brain-tumour model says instead that it is a
#: demonstration and how its input must be prepared.
EXTRA_SECTIONS = {"brain-tumour": ("## Limits", "not a validated tumour model", "z-scored")}


def test_the_named_models_are_shipped():
    assert {"retina-vessels", "hippocampus", "hippocampus-robust", "skin-lesion",
            "brain-tumour"} <= set(PACKAGED)


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_model_is_small_documented_and_runs(name: str):
    assert model_path(name).stat().st_size <= 10 * 1024 * 1024
    card = model_card(name)
    for section in ("**Intended use:**", "not for diagnosis", "Training data and terms",
                    "## Held-out results",
                    *EXTRA_SECTIONS.get(name, ("## Robustness to simulated",))):
        assert section in card, section
    model = load_model(name, device="cpu")
    assert model.meta.get("preprocess"), "scale recipe (FOV diameter or spacing) recorded"
    rng = np.random.default_rng(0)
    if model.spatial_dims == 2:
        image = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
        pred = model.predict(image, is_rgb=True)
        assert pred.mask.shape == (96, 96)
    else:
        channels = model.meta["arch_kwargs"]["in_channels"]
        volume = rng.normal(size=(channels, 24, 32, 24)).astype(np.float32)
        pred = model.predict(volume, channel_axis=0)
        assert pred.mask.shape == (24, 32, 24)
        assert pred.probabilities.shape == (model.out_channels, 24, 32, 24)
    assert np.isfinite(pred.probabilities).all()
