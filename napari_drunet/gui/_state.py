"""State shared by the plugin's widgets of one viewer: project, loaded models, last result.

Widgets get it with :func:`get_state(viewer)`; they talk to each other through its psygnal
signals (emitted on the GUI thread only).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal

from . import _warmup

PROJECT_ACTIVE = "project: active version"
BROWSE = "Browse checkpoint…"


@dataclass
class SegmentResult:
    """A segmentation shown in the viewer, ready to become a project case."""

    labels_layer: Any
    image: Any  # core.io.ImageData
    prediction: np.ndarray
    probabilities: np.ndarray | None
    model_source: str
    model_version: str | None
    image_layers: list[str] = field(default_factory=list)


class PluginState:
    """Per-viewer state. Models are cached by ``(source, device)``; loading is thread-safe."""

    project_changed = Signal()
    versions_changed = Signal()
    cases_changed = Signal()
    case_updated = Signal(str)
    model_changed = Signal(str)
    result_added = Signal(object)

    def __init__(self) -> None:
        self.project: Any = None  # core.project.Project
        self.last_result: SegmentResult | None = None
        self._models: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.flushers: list[Any] = []

    def flush_edits(self) -> None:
        """Ask every autosaving widget to write pending edits now (e.g. before training)."""
        for flush in list(self.flushers):
            flush()

    # ---------------------------------------------------------------- models
    def resolve_source(self, source: str) -> tuple[str, str | None]:
        """Turn a GUI model choice into ``(loadable name or path, project version or None)``."""
        if source == PROJECT_ACTIVE or source.startswith("project:"):
            if self.project is None:
                from ..core.errors import DataError

                raise DataError("open a corrections project to use its model versions")
            vid = self.project.versions.active if source == PROJECT_ACTIVE else source[8:]
            if vid is None:
                from ..core.errors import DataError

                raise DataError("the project has no model version yet")
            return str(self.project.versions.path(vid)), vid
        return source, None

    def get_model(self, source: str, device: str = "auto") -> Any:
        """Return the cached model for ``source`` (packaged name, file or project version)."""
        from ..core.models.model import load_model

        target, _ = self.resolve_source(source)
        key = (target, device)
        with self._lock:
            model = self._models.get(key)
        if model is None:
            model = load_model(target, device)
            with self._lock:
                model = self._models.setdefault(key, model)
        return model

    def cached_model(self, source: str) -> Any:
        """A loaded model for ``source`` on any device, or None."""
        target = self.resolve_source(source)[0]
        with self._lock:
            for (t, _device), model in self._models.items():
                if t == target:
                    return model
        return None

    def model_meta(self, source: str) -> dict[str, Any] | None:
        """The recipe of ``source`` (the loaded model's, else the file header's), or None.

        Cheap: only the safetensors header is read when the model is not loaded yet.
        """
        try:
            model = self.cached_model(source)
            if model is not None:
                return dict(model.meta)
            from ..core.models.checkpoint import read_meta
            from ..core.models.model import model_path

            target = Path(self.resolve_source(source)[0])
            return read_meta(target if target.is_file() else model_path(str(target)))
        except Exception:  # unknown, missing or invalid: the worker reports it on Run
            return None

    def put_model(self, target: str | Path, device: str, model: Any) -> None:
        """Install ``model`` as the live model for ``target`` (call on the GUI thread).

        The cache entry is replaced rather than the weights copied in place, so a job that is
        still running with the previous model finishes consistently.
        """
        with self._lock:
            self._models[(str(target), device)] = model

    def forget_models(self) -> None:
        """Drop cached models (e.g. after the project changed)."""
        with self._lock:
            self._models.clear()

    # ---------------------------------------------------------------- project
    def set_project(self, project: Any) -> None:
        """Make ``project`` current and tell the widgets."""
        self.project = project
        self.project_changed.emit()
        self.versions_changed.emit()


_STATES: dict[int, tuple[weakref.ref, PluginState]] = {}


def unwrap_viewer(viewer: Any) -> Any:
    """The viewer itself when napari hands plugins a (new, per-widget) ``PublicOnlyProxy``."""
    return getattr(viewer, "__wrapped__", viewer)


def get_state(viewer: Any) -> PluginState:
    """The :class:`PluginState` of ``viewer`` (created on first use)."""
    viewer = unwrap_viewer(viewer)
    _warmup.start()  # every widget of the plugin passes here when it is created
    key = id(viewer)
    entry = _STATES.get(key)
    if entry is not None and entry[0]() is viewer:
        return entry[1]
    state = PluginState()
    try:
        ref: Any = weakref.ref(viewer, lambda _r, k=key: _STATES.pop(k, None))
    except TypeError:  # not weak-referenceable: keep a strong reference

        def ref(v: Any = viewer) -> Any:
            return v

    _STATES[key] = (ref, state)
    return state
