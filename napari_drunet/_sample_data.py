"""npe2 sample data: a fundus photograph (2D RGB) and a brain MRI volume (3D).

Sources and licenses (see also ``napari_drunet/samples/README.md``):

* ``fundus``: ``skimage.data.retina()``, the file ``skimage/data/retina.jpg`` shipped inside the
  scikit-image wheel (no download): "Fundus photograph of normal left eye", Mikael Häggström,
  CC0 1.0 public domain dedication. 1411 x 1411 RGB.
* ``hippocampus``: ``napari_drunet/samples/brain_t1.nii.gz``, a real T1-weighted brain MRI
  (33 x 41 x 25 voxels of 2 mm, SPM-normalised, cropped around the ventricles), a gzip copy of
  NiBabel's ``tests/data/anatomical.nii`` (MIT license). It is **not** a Medical Segmentation
  Decathlon hippocampus crop (CC-BY-SA 4.0 data is not shipped); it stands in for one to try the
  3D workflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .core.errors import InputError
from .core.io import read_image

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
BRAIN_MRI = SAMPLES_DIR / "brain_t1.nii.gz"


def _retina_path() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).resolve().parent / "retina.jpg"


def sample_paths() -> dict[str, Path]:
    """Files behind the samples: ``{'fundus': retina.jpg, 'hippocampus': brain_t1.nii.gz}``."""
    paths = {"fundus": _retina_path(), "hippocampus": BRAIN_MRI}
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
    """3D T1 brain MRI (MIT, from NiBabel) as an image layer with its voxel spacing."""
    img = read_image(sample_paths()["hippocampus"])
    return [(img.array[0], {"name": "brain MRI", "scale": tuple(img.spacing),
                            "metadata": {"affine": img.affine, "source": img.to_source()}},
             "image")]
