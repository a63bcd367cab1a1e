"""The Corrections widget's cases: their files read and written off the GUI thread, a case
read back as layers, the case list's lines.

Reading the compressed arrays of a case and writing a new one held the GUI thread 0.2-3 s
(docs/performance.md, GUI stalls): these generators run in a worker (``_workers.start_job``);
what they hand back is shown by :func:`show_record` one layer per event-loop turn.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from ..core.progress import Progress
from ._layers import add_image_layers, label_style, source_metadata
from ._state import SegmentResult


def write_case(project: Any, name: str, result: SegmentResult, current: np.ndarray,
               geometry: dict[str, list[float]], model: Callable[[], Any]
               ) -> Generator[Progress, None, str]:
    """Store ``result`` as case ``name`` with ``current`` (the labels as the user left them)
    as its correction; ``model()`` gives the model to register when the project has no
    version of ``result.model_source`` yet (it may load it). Returns ``name``."""
    yield Progress(0, None, f"writing case '{name}'")
    version = result.model_version or _version_for(project, result.model_source, model)
    project.add_case(name, result.image, result.prediction, result.probabilities,
                     model_version=version,
                     meta={"image_layers": result.image_layers, "geometry": geometry})
    if not np.array_equal(current, result.prediction):
        project.save_correction(name, current)
    return name


def _version_for(project: Any, source: str, model: Callable[[], Any]) -> str:
    """Project version of the model ``source``, registered (weights written) if new."""
    for v in project.versions.entries():
        if v.get("source") == source:
            return v["id"]
    return project.versions.add(model(), parent=None, metrics={}, data=[], source=source)


def read_case(project: Any, name: str) -> Generator[Progress, None, Any]:
    """Read case ``name`` (``core.project.CaseRecord``)."""
    yield Progress(0, None, f"reading case '{name}'")
    return project.load_case(name)


def show_record(viewer: Any, rec: Any, model_meta: dict[str, Any] | None
                ) -> Generator[None, None, Any]:
    """Add the image layer(s), then (next step) the labels layer of the case ``rec``, with its
    stored geometry and the plugin's class colours; returns the labels layer.

    ``model_meta``: the recipe of the model version that predicted the case (binary or not).
    """
    name = rec.name
    geometry = rec.meta.get("meta", {}).get("geometry") or {"scale": list(rec.image.spacing)}
    geometry = {k: tuple(v) for k, v in geometry.items()}
    add_image_layers(viewer, rec.image, f"{name} image", geometry)
    yield  # the event loop runs between the layers
    kwargs = (model_meta or {}).get("arch_kwargs") or {}
    binary = int(kwargs.get("out_channels", 1)) == 1 if model_meta else None
    meta = {"drunet": {"model_version": rec.meta.get("model_version"), "binary": binary},
            **source_metadata(rec.image)}
    return viewer.add_labels(rec.correction, name=f"{name} labels", metadata=meta,
                             **geometry, **label_style())


def case_line(project: Any, name: str) -> str:
    """The case list's line of case ``name``: model version, how much was fixed, review."""
    m = project.case_meta(name)
    tags = [f"fix Dice {m['fix_dice']:.3f}", f"{100 * m['changed_fraction']:.1f}% changed"]
    if m["reviewed_all"]:
        tags.append("reviewed")
    elif m["reviewed_slices"]:
        tags.append(f"{len(m['reviewed_slices'])} slice(s) reviewed")
    if name in project.feedback.holdout:
        tags.append("held back")
    return f"{name}  [{m['model_version'] or '-'}]  " + ", ".join(tags)


def rounds_line(project: Any) -> str:
    """How much was fixed per model version (empty before the first case)."""
    rounds = project.feedback.fix_stats()["rounds"]
    return "how much was fixed, per model version: " + "; ".join(
        f"{r['model_version']}: Dice {r['mean_fix_dice']:.3f}, "
        f"{100 * r['mean_changed_fraction']:.1f}% changed ({r['n_cases']})"
        for r in rounds) if rounds else ""
