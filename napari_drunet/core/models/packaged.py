"""The packaged models: ``napari_drunet/weights/<name>.safetensors`` (with ``<name>.md`` cards).

Apart from :mod:`napari_drunet.core.models.model` so that the model-fit checks (``core.fit``) can list
them without importing the model class that uses those checks.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"


def list_models() -> list[str]:
    """Names of the packaged models (``napari_drunet/weights/*.safetensors``)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name[: -len(".safetensors")] for p in WEIGHTS_DIR.glob("*.safetensors"))


def model_path(name: str) -> Path:
    """File of the packaged model ``name`` (CheckpointError naming the packaged ones if unknown)."""
    if name not in list_models():
        available = ", ".join(list_models()) or "none"
        raise CheckpointError(f"unknown model {name!r}: not a file and not a packaged model "
                              f"(packaged: {available})")
    return WEIGHTS_DIR / f"{name}.safetensors"


def card_path(name: str) -> Path:
    """The model card ``<name>.md`` beside the packaged model (it may not exist)."""
    return WEIGHTS_DIR / f"{name}.md"
