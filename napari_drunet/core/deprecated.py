"""Old module paths of the core, from before it was grouped by job, still importable.

``import napari_drunet.core.model`` (or ``from napari_drunet.core.io import read_image``) gives
the module at its new place, :mod:`napari_drunet.core.models.model`, with a
``DeprecationWarning`` naming that place. One finder serves every old path of :data:`MOVED`;
it is installed when :mod:`napari_drunet.core` is imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: old public module -> its module now (the private ``_*`` modules were never API)
MOVED = {
    "napari_drunet.core.io": "napari_drunet.core.image.io",
    "napari_drunet.core.dicom": "napari_drunet.core.image.dicom",
    "napari_drunet.core.dicom_write": "napari_drunet.core.image.dicom_write",
    "napari_drunet.core.normalization": "napari_drunet.core.image.normalization",
    "napari_drunet.core.rescale": "napari_drunet.core.image.rescale",
    "napari_drunet.core.blocks": "napari_drunet.core.nets.blocks",
    "napari_drunet.core.networks": "napari_drunet.core.nets.networks",
    "napari_drunet.core.metrics": "napari_drunet.core.evaluation.metrics",
    "napari_drunet.core.inference": "napari_drunet.core.infer.predict",
    "napari_drunet.core.lazy": "napari_drunet.core.infer.lazy",
    "napari_drunet.core.orientation": "napari_drunet.core.infer.orientation",
    "napari_drunet.core.checkpoint": "napari_drunet.core.models.checkpoint",
    "napari_drunet.core.packaged": "napari_drunet.core.models.packaged",
    "napari_drunet.core.fit": "napari_drunet.core.models.fit",
    "napari_drunet.core.model": "napari_drunet.core.models.model",
    "napari_drunet.core.widen": "napari_drunet.core.models.widen",
    "napari_drunet.core.export": "napari_drunet.core.models.export",
    "napari_drunet.core.bioimageio": "napari_drunet.core.models.bioimageio",
    "napari_drunet.core.train_config": "napari_drunet.core.train.config",
    "napari_drunet.core.dataset": "napari_drunet.core.train.dataset",
    "napari_drunet.core.sampling": "napari_drunet.core.train.sampling",
    "napari_drunet.core.augment": "napari_drunet.core.train.augment",
    "napari_drunet.core.losses": "napari_drunet.core.train.losses",
    "napari_drunet.core.distributed": "napari_drunet.core.train.distributed",
    "napari_drunet.core.training": "napari_drunet.core.train.loop",
    "napari_drunet.core.adapt": "napari_drunet.core.train.adapt",
    "napari_drunet.core.project": "napari_drunet.core.correction.project",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of :data:`MOVED` and loads it as the module at its new path."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path will be removed",
                      DeprecationWarning, stacklevel=2)
        # the same module object under both names: one set of globals, so a monkeypatch on
        # either path is seen by both
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module at the new path is already loaded."""


def install() -> None:
    """Put the finder at the end of ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
