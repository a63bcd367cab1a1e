"""Label-map clean-up after thresholding, recorded in a model's recipe.

A dermoscopy photograph is taken of one lesion (the ISIC convention), and a hippocampus crop holds
one structure per class: for such models the recipe can ask for ``largest_object`` (an
:class:`~napari_drunet.core.infer.config.InferenceConfig` field, default off), which keeps the
largest connected object of each class and fills the background holes inside it. Vessel trees and
multifocal tumours must not use it; the choice is made on validation images
(``benchmarks/isic_accuracy.py --largest-object``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def keep_largest_objects(labels: np.ndarray) -> np.ndarray:
    """``labels`` with only the largest connected object of each class (full connectivity),
    its background holes filled; removed objects become background (0). A new array of the
    same dtype; holes that hold another class keep it."""
    labels = np.asarray(labels)
    out = np.zeros_like(labels)
    structure = ndi.generate_binary_structure(labels.ndim, labels.ndim)
    for k in np.unique(labels):
        if k == 0:
            continue
        comp, n = ndi.label(labels == k, structure=structure)
        largest = comp == 1 + int(np.argmax(np.bincount(comp.ravel())[1:])) if n > 1 else comp > 0
        # filled holes take background pixels only, and none a previous class already holds
        keep = ndi.binary_fill_holes(largest) & ((labels == k) | ((labels == 0) & (out == 0)))
        out[keep] = k
    return out
