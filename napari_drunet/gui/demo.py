"""``launch_demo``: napari with a sample image, segmented, and the plugin's widgets docked."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

SAMPLES = ("fundus", "hippocampus")


def untrained_model(spatial_dims: int, in_channels: int, folder: str | Path | None = None) -> Path:
    """Save a freshly initialised (untrained) DRU-Net and return its file (demo fallback)."""
    import torch

    from ..core.image.normalization import default_spec
    from ..core.models.model import Model
    from ..core.nets.networks import build_model

    torch.manual_seed(0)
    features = (16, 32, 64, 128) if spatial_dims == 2 else (8, 16, 32)
    net = build_model("drunet", spatial_dims=spatial_dims, in_channels=in_channels,
                      out_channels=1, features=features)
    meta = {"normalization": default_spec(), "label_names": {"0": "background", "1": "object"},
            "threshold": 0.5}
    folder = Path(folder or tempfile.mkdtemp(prefix="drunet-demo-"))
    return Model(net, meta, device="cpu", name="untrained").save(folder / "untrained.safetensors")


def launch_demo(model: str | Path | None = None, sample: str = "fundus", run: bool = True,
                device: str = "auto", segment: bool = True, viewer: Any = None) -> Any:
    """Open napari with ``sample`` segmented by ``model`` and every widget docked.

    Parameters
    ----------
    model : str or path, optional
        Packaged model name or checkpoint file; default: the packaged model that fits the
        sample (``retina-vessels`` / ``hippocampus``). An unknown packaged name falls back, with a
        warning, to an untrained network (so the demo still shows the whole loop).
    sample : {'fundus', 'hippocampus'}
        Sample image.
    run : bool
        Start napari's event loop (``False``: return the viewer at once, e.g. for tests).
    segment : bool
        Start segmenting right away (in a background worker).
    viewer : napari.Viewer, optional
        Use this viewer instead of opening a new one.

    Returns
    -------
    napari.Viewer
    """
    import napari

    from .. import _sample_data
    from ..core.errors import InputError
    from ..core.models.model import list_models
    from .corrections import CorrectionsWidget
    from .finetune import FinetuneWidget
    from .segment import SegmentWidget
    from .versions import VersionsWidget

    if sample not in SAMPLES:
        raise InputError(f"unknown sample {sample!r}; choose {' or '.join(SAMPLES)}")
    layers = getattr(_sample_data, f"sample_{sample}")()
    viewer = viewer if viewer is not None else napari.Viewer()
    for data, kwargs, kind in layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widgets = {"Segment": SegmentWidget(viewer), "Corrections": CorrectionsWidget(viewer),
               "Fine-tune": FinetuneWidget(viewer), "Model versions": VersionsWidget(viewer)}
    for name, widget in widgets.items():
        viewer.window.add_dock_widget(widget, name=name, area="right", tabify=name != "Segment")
    seg = widgets["Segment"]
    source = str(model or _fitting_model(layers[0]))
    if not Path(source).is_file() and source not in list_models():
        first = layers[0]
        spatial = 3 if sample == "hippocampus" else 2
        channels = 3 if first[1].get("rgb") else 1
        warnings.warn(f"model {source!r} is not available; the demo uses an UNTRAINED network "
                      "(its output is meaningless until you fine-tune it)", stacklevel=2)
        source = str(untrained_model(spatial, channels))
    seg.set_model_source(source)
    if device in [seg.device_combo.itemText(i) for i in range(seg.device_combo.count())]:
        seg.device_combo.setCurrentText(device)
    if segment:
        seg.run()
    if run:
        napari.run()
    return viewer


def _fitting_model(layer_tuple: tuple[Any, dict[str, Any], str]) -> str:
    """The packaged model that fits a sample layer (``retina-vessels`` when none is installed)."""
    import numpy as np

    from ..core.models.fit import ImageKind, proposal

    data, kwargs = np.asarray(layer_tuple[0]), layer_tuple[1]
    rgb = bool(kwargs.get("rgb"))
    kind = ImageKind(data.ndim - rgb, 3 if rgb else 1, rgb, data.shape[:data.ndim - rgb])
    return proposal(kind) or "retina-vessels"
