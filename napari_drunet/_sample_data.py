"""npe2 sample data: a fundus photograph (2D RGB) and a hippocampus MRI crop (3D).

Sources and licenses (see also ``napari_drunet/samples/README.md``):

* ``fundus``: ``skimage.data.retina()``, the file ``skimage/data/retina.jpg`` shipped inside the
  scikit-image wheel (no download): "Fundus photograph of normal left eye", Mikael Häggström,
  CC0 1.0 public domain dedication. 1411 x 1411 RGB.
* ``hippocampus``: ``napari_drunet/samples/hippocampus_150.nii.gz``, case 150 of the Medical
  Segmentation Decathlon Task04 Hippocampus (T1 MRI crop around one hippocampus, 37 x 49 x 34
  voxels of 1 mm), CC-BY-SA 4.0, Simpson et al. 2019 / Antonelli et al. 2022; a held-out case
  of the packaged ``hippocampus`` models (numbers divisible by 5 were never trained on), so the
  first 3D run shows what the model does on data it has not seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .core.errors import InputError
from .core.image.io import read_image

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
HIPPOCAMPUS_MRI = SAMPLES_DIR / "hippocampus_150.nii.gz"
HIPPOCAMPUS_LAYER = "hippocampus MRI"


def _retina_path() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).resolve().parent / "retina.jpg"


def sample_paths() -> dict[str, Path]:
    """Files behind the samples: ``{'fundus': retina.jpg, 'hippocampus': hippocampus_150.nii.gz}``.
    """
    paths = {"fundus": _retina_path(), "hippocampus": HIPPOCAMPUS_MRI}
    for key, p in paths.items():
        if not p.is_file():
            raise InputError(f"sample '{key}' is missing from this installation: {p}")
    return paths


def sample_fundus() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """2D RGB fundus photograph (CC0) as an RGB image layer."""
    img = read_image(sample_paths()["fundus"])
    return [(np.moveaxis(img.array, 0, -1), {"name": "fundus", "rgb": True,
                                             "metadata": {"source": img.to_source()}}, "image")]


def sample_hippocampus() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """3D T1 hippocampus crop (MSD Task04 case 150, CC-BY-SA 4.0) with its voxel spacing."""
    img = read_image(sample_paths()["hippocampus"])
    return [(img.array[0], {"name": HIPPOCAMPUS_LAYER, "scale": tuple(img.spacing),
                            "metadata": {"affine": img.affine, "source": img.to_source()}},
             "image")]
