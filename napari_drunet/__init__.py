"""napari-drunet: Deep Residual U-Net segmentation with correction-driven fine-tuning."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "list_models", "adapt_batchnorm"]


def __getattr__(name: str):
    # Lazy: importing the package (e.g. by napari's plugin discovery) must not import torch.
    if name in ("load_model", "list_models"):
        from .core.models import model

        return getattr(model, name)
    if name == "adapt_batchnorm":
        from .core.train import adapt

        return adapt.adapt_batchnorm
    raise AttributeError(name)
