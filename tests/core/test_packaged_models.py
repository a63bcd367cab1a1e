"""Every model shipped in napari_drunet/weights: size limit, model card, loads and predicts."""

from __future__ import annotations

import numpy as np
import pytest

from napari_drunet.core.models.model import list_models, load_model, model_card, model_path

PACKAGED = list_models()


def test_the_named_models_are_shipped():
    assert {"retina-vessels", "hippocampus", "hippocampus-robust"} <= set(PACKAGED)


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_model_is_small_documented_and_runs(name: str):
    assert model_path(name).stat().st_size <= 10 * 1024 * 1024
    card = model_card(name)
    for section in ("**Intended use:**", "not for diagnosis", "Training data and terms",
                    "## Held-out results", "## Robustness to simulated"):
        assert section in card, section
    model = load_model(name, device="cpu")
    assert model.meta.get("preprocess"), "scale recipe (FOV diameter or spacing) recorded"
    rng = np.random.default_rng(0)
    if model.spatial_dims == 2:
        image = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
        pred = model.predict(image, is_rgb=True)
        assert pred.mask.shape == (96, 96)
    else:
        pred = model.predict(rng.normal(size=(24, 32, 24)).astype(np.float32))
        assert pred.mask.shape == (24, 32, 24)
        assert pred.probabilities.shape == (model.out_channels, 24, 32, 24)
    assert np.isfinite(pred.probabilities).all()
