"""Conversions between napari layers and the engine's arrays (geometry kept aligned)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import InputError
from ..core.infer.lazy import ChannelFirst, is_lazy

SOURCE_KEYS = ("drunet_source", "source")
ROLE_KEY = "napari_drunet_role"  # layer.metadata key of layers the plugin derived from a result
DERIVED_ROLES = ("probability", "uncertainty")
# class k has colour CLASS_COLORS[k] in every labels layer the plugin creates (Segment results,
# cases shown from a project, corrections) and in the Segment legend: label 1 (a binary model's
# foreground) bright cyan, which stands out on fundus photographs and MRI alike, then other
# distinct bright colours (cycling beyond the last one)
CLASS_COLORS = ((0.0, 0.0, 0.0, 0.0), (0.0, 1.0, 1.0, 1.0), (1.0, 1.0, 0.0, 1.0),
                (1.0, 0.0, 1.0, 1.0), (0.5, 1.0, 0.0, 1.0), (1.0, 0.5, 0.0, 1.0),
                (0.3, 0.5, 1.0, 1.0))
LABEL_OPACITY = 0.6


def layer_role(layer: Any) -> str | None:
    """``'probability'`` / ``'uncertainty'`` for layers the plugin created from a result."""
    meta = getattr(layer, "metadata", None) or {}
    role = meta.get(ROLE_KEY)
    return role if isinstance(role, str) else None


def label_style() -> dict[str, Any]:
    """``add_labels`` keywords of the plugin's class colours (:data:`CLASS_COLORS`), opacity
    0.6: given to the constructor, the layer is drawn once in them (setting them afterwards
    recoloured and redrew it, twice)."""
    from napari.utils.colormaps import CyclicLabelColormap

    return {"colormap": CyclicLabelColormap(colors=CLASS_COLORS, background_value=0),
            "opacity": LABEL_OPACITY}


def class_color(index: int) -> tuple[float, ...]:
    """RGBA of class ``index`` as :func:`label_style` shows it (index 0: transparent)."""
    n = len(CLASS_COLORS) - 1
    return CLASS_COLORS[0] if index == 0 else CLASS_COLORS[(index - 1) % n + 1]


def _layer_source(layer: Any) -> dict[str, Any] | None:
    meta = getattr(layer, "metadata", None) or {}
    for key in SOURCE_KEYS:
        src = meta.get(key)
        if isinstance(src, dict) and "spacing" in src:
            return src
    return None


def layer_channels(layer: Any) -> np.ndarray:
    """Image layer data as channel-first ``(C, *spatial)``."""
    if getattr(layer, "multiscale", False):
        raise InputError(f"layer '{layer.name}' is multiscale; use a single-resolution image")
    if is_lazy(layer.data) and not getattr(layer, "rgb", False):
        return ChannelFirst(layer.data)  # dask / zarr: segmented tile by tile, never loaded
    data = np.asarray(layer.data)
    if getattr(layer, "rgb", False):
        return np.moveaxis(data[..., :3], -1, 0)
    return data[None]


def image_from_layers(layers: list[Any]) -> Any:
    """Stack image layers (each one or several channels) into one ``ImageData``."""
    from ..core.image.io import ImageData

    if not layers:
        raise InputError("select at least one image layer")
    parts = [layer_channels(layer) for layer in layers]
    shapes = {p.shape[1:] for p in parts}
    if len(shapes) != 1:
        raise InputError(f"selected image layers differ in shape: {sorted(shapes)}")
    first = layers[0]
    spatial = parts[0].ndim - 1
    if spatial not in (2, 3):
        raise InputError(f"layer '{first.name}' has {spatial} spatial axes; need 2D or 3D")
    array = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    src = _layer_source(first) or {}
    spacing = src.get("spacing") or [float(s) for s in first.scale[-spatial:]]
    meta = dict(src.get("meta") or {})
    return ImageData(array=array, spacing=tuple(spacing), affine=src.get("affine"),
                     path=src.get("path"), format=src.get("format", "tiff"),
                     is_rgb=bool(len(layers) == 1 and getattr(first, "rgb", False)), meta=meta)


def geometry_kwargs(layer: Any, spatial: int) -> dict[str, Any]:
    """scale / translate / rotate / shear of ``layer`` restricted to its spatial axes.

    An RGB layer's geometry already excludes the colour axis, so it carries over as is.
    """
    out: dict[str, Any] = {"scale": tuple(layer.scale[-spatial:]),
                           "translate": tuple(layer.translate[-spatial:])}
    affine = getattr(layer, "affine", None)
    if affine is not None and np.asarray(affine.affine_matrix).shape[0] == spatial + 1:
        out["affine"] = np.asarray(affine.affine_matrix)
    return out


def slice_index(viewer: Any, layer: Any) -> int:
    """Index along the layer's first spatial axis at the viewer's current position."""
    point = np.asarray(viewer.dims.point)
    data_pt = layer.world_to_data(point[-layer.ndim:]) if len(point) >= layer.ndim else None
    if data_pt is None:
        return 0
    idx = int(round(float(np.asarray(data_pt)[0])))
    return int(np.clip(idx, 0, layer.data.shape[0] - 1))


def set_slice(viewer: Any, layer: Any, index: int) -> None:
    """Move the viewer so that ``layer`` shows slice ``index`` of its first axis."""
    axis = viewer.dims.ndim - layer.ndim
    world = layer.data_to_world([index] + [0] * (layer.ndim - 1))
    viewer.dims.set_point(axis, float(np.asarray(world)[0]))


def foreground_probability(prob: np.ndarray) -> np.ndarray:
    """``(K, *spatial)`` probabilities -> foreground probability map ``(*spatial)``."""
    prob = np.asarray(prob, np.float32)
    return prob[0] if prob.shape[0] == 1 else 1.0 - prob[0]


def unique_layer_name(viewer: Any, base: str) -> str:
    """``base`` or ``base [n]`` so that it does not clash with an existing layer."""
    names = {layer.name for layer in viewer.layers}
    name, i = base, 1
    while name in names:
        i += 1
        name = f"{base} [{i}]"
    return name


def source_metadata(image: Any) -> dict[str, Any]:
    """``layer.metadata`` entries that tie a layer to the scan ``image`` (an ``ImageData``).

    Every layer the plugin creates from an image carries them, so that the writer gives a saved
    mask the scan's exact affine, qform/sform and units (the keys the reader sets).
    """
    return {"affine": image.affine, "source": image.to_source()}


def add_image_layers(viewer: Any, image: Any, name: str, geometry: dict[str, Any] | None = None
                     ) -> list[Any]:
    """Show an ``ImageData`` (RGB photo, one channel, or one layer per channel)."""
    arr = np.asarray(image.array)
    spatial = arr.ndim - 1
    geometry = dict(geometry or {"scale": tuple(image.spacing)})
    meta = source_metadata(image)
    if getattr(image, "is_rgb", False) and arr.shape[0] in (3, 4) and spatial == 2:
        return [viewer.add_image(np.moveaxis(arr, 0, -1), name=name, rgb=True, metadata=meta,
                                 **geometry)]
    if arr.shape[0] == 1:
        return [viewer.add_image(arr[0], name=name, metadata=meta, **geometry)]
    layers = []
    for c in range(arr.shape[0]):
        layers.append(viewer.add_image(arr[c], name=f"{name} c{c}", metadata=dict(meta),
                                       blending="additive", **geometry))
    return layers
