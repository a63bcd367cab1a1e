"""What a model is for: which images it fits (one check for ``Model.predict``, the CLI and
the GUI) and the names of its classes.

A model's card metadata (``meta["card"]``, stored in the checkpoint) says what it was trained
on::

    {"modality": "colour fundus photograph", "dims": [2], "channels": "rgb",
     "example": "a DRIVE fundus photograph, 565 x 584 px RGB TIFF"}

``dims``: the numbers of spatial axes of the images it segments (a 2D model without a card
also segments volumes slice by slice); ``channels``: ``"rgb"``, ``"grey"`` or ``"<n>-channel"``
(e.g. ``"2-channel"`` for FLAIR + T1c); ``example``
(optional): one line naming an image it was made for, so a user can tell whether hers is like
it. A model without a card is judged by its architecture only, so home-trained models keep
working as before.

>>> kind = ImageKind(ndim=3, channels=1, is_rgb=False, shape=(32, 47, 41))
>>> fit_problem({"card": {"dims": [2], "channels": "rgb"}}, kind, "retina-vessels")  # doctest: +SKIP
"model 'retina-vessels' is 2D, for RGB images; this image is a 3D grey volume (32 x 47 x 41)"
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

CARD_KEY = "card"


@dataclass(frozen=True)
class ImageKind:
    """What an image is, as far as fitting a model goes.

    Attributes
    ----------
    ndim : int
        Spatial axes (2 or 3).
    channels : int
        Channels (an RGB photo has 3).
    is_rgb : bool
        A colour photo (channels are red, green, blue).
    shape : tuple of int
        Spatial shape (for messages).
    """

    ndim: int
    channels: int
    is_rgb: bool
    shape: tuple[int, ...] = ()

    @classmethod
    def of(cls, arr_shape: tuple[int, ...], is_rgb: bool) -> ImageKind:
        """Kind of a channel-first array ``(C, *spatial)``."""
        return cls(len(arr_shape) - 1, int(arr_shape[0]), bool(is_rgb), tuple(arr_shape[1:]))

    def describe(self) -> str:
        size = " x ".join(str(s) for s in self.shape)
        colour = "RGB" if self.is_rgb else ("grey" if self.channels == 1
                                           else f"{self.channels}-channel")
        what = "image" if self.ndim == 2 else "volume"
        return f"{self.ndim}D {colour} {what}" + (f" ({size})" if size else "")


def model_dims(meta: dict[str, Any]) -> list[int]:
    """Spatial dimensions of the images the model segments."""
    card = meta.get(CARD_KEY) or {}
    if isinstance(card.get("dims"), list) and card["dims"]:
        return [int(d) for d in card["dims"]]
    dims = int((meta.get("arch_kwargs") or {}).get("spatial_dims", 2))
    return [3] if dims == 3 else [2, 3]  # a 2D network also runs slice by slice


def model_channels(meta: dict[str, Any]) -> str:
    """``'rgb'``, ``'grey'`` or ``'<n>-channel'``."""
    card = meta.get(CARD_KEY) or {}
    given = str(card.get("channels", ""))
    if given in ("rgb", "grey") or (given.endswith("-channel") and given[:-8].isdigit()):
        return given
    n = int((meta.get("arch_kwargs") or {}).get("in_channels", 1))
    return "grey" if n == 1 else ("rgb" if n == 3 else f"{n}-channel")


def label_names(meta: dict[str, Any]) -> dict[int, str]:
    """Class index -> name from a recipe, background included (defaults for unnamed classes)."""
    names = {int(k): str(v) for k, v in (meta.get("label_names") or {}).items()
             if str(k).isdigit()}
    n = max(2, int((meta.get("arch_kwargs") or {}).get("out_channels", 1)))
    defaults = {0: "background"} | ({1: "foreground"} if n == 2 else
                                    {i: f"class {i}" for i in range(1, n)})
    return {i: names.get(i, defaults[i]) for i in range(n)}


def describe_model(meta: dict[str, Any]) -> str:
    """E.g. ``"2D, for RGB images (colour fundus photograph)"``."""
    dims = "/".join(f"{d}D" for d in model_dims(meta))
    channels = model_channels(meta)
    channels = channels.upper() if channels == "rgb" else channels
    modality = (meta.get(CARD_KEY) or {}).get("modality")
    return f"{dims}, for {channels} images" + (f" ({modality})" if modality else "")


def fit_summary(meta: dict[str, Any]) -> str:
    """What images the model fits, with the card's example when it has one: e.g.
    ``"2D, for RGB images (colour fundus photograph); e.g. a DRIVE fundus photograph, ..."``.
    """
    example = (meta.get(CARD_KEY) or {}).get("example")
    return describe_model(meta) + (f"; e.g. {example}" if example else "")


def converts_channels(want: int | None, have: int, is_rgb: bool) -> bool:
    """Whether an image of ``have`` channels can feed a model of ``want`` input channels: the
    same count, or what ``InputRecipe.fix_channels`` converts (RGB to luminance for a
    1-channel model, grey repeated for an RGB model)."""
    return (want is None or have == want or (want == 1 and is_rgb and have in (3, 4))
            or (want == 3 and have == 1))


def fit_problem(meta: dict[str, Any], kind: ImageKind, name: str = "model") -> str | None:
    """Why the model cannot segment an image of ``kind`` (one line), or ``None`` if it can.

    Channel counts that ``Model.prepare`` converts (RGB to luminance, grey repeated to RGB)
    are not problems here: they come back as warnings with the prediction. Other counts
    (a FLAIR + T1c study for a 1-channel model) are.
    """
    text = f"model '{name}' is {describe_model(meta)}; this image is a {kind.describe()}"
    if kind.ndim not in model_dims(meta):
        if _photo_read_as_volume(kind):
            text += (" -- if it is an RGB photo, pass is_rgb=True or channel_axis=-1 "
                     "(in napari: an RGB layer)")
        return text
    want = (meta.get("arch_kwargs") or {}).get("in_channels")
    if not converts_channels(None if want is None else int(want), kind.channels, kind.is_rgb):
        return (f"model '{name}' expects {want} channel(s) ({describe_model(meta)}); this "
                f"image is a {kind.describe()}")
    return None


def _photo_read_as_volume(kind: ImageKind) -> bool:
    return kind.ndim == 3 and not kind.is_rgb and bool(kind.shape) and kind.shape[-1] in (3, 4)


def score(meta: dict[str, Any], kind: ImageKind) -> int:
    """How well a fitting model matches: 2 = dimensions and colour, 1 = dimensions only,
    -1 = does not fit."""
    if fit_problem(meta, kind) is not None:
        return -1
    channels = model_channels(meta)
    exact = channels == ("rgb" if kind.is_rgb else "grey" if kind.channels == 1
                         else f"{kind.channels}-channel")
    card_dims = (meta.get(CARD_KEY) or {}).get("dims")
    return 2 if exact and card_dims else 1


def best_model(candidates: Iterable[tuple[str, dict[str, Any]]], kind: ImageKind) -> str | None:
    """Name of the first best-matching ``(name, meta)`` candidate, ``None`` if none fits."""
    best, best_score = None, 0
    for name, meta in candidates:
        s = score(meta, kind)
        if s > best_score:
            best, best_score = name, s
    return best


def packaged_metas() -> list[tuple[str, dict[str, Any]]]:
    """``(name, meta)`` of the packaged models (headers only: cheap)."""
    from .checkpoint import read_meta
    from .packaged import list_models, model_path

    return [(name, read_meta(model_path(name))) for name in list_models()]


def proposal(kind: ImageKind, exclude: str | None = None) -> str | None:
    """The packaged model that best fits an image of ``kind`` (not ``exclude``)."""
    return best_model(((n, m) for n, m in packaged_metas() if n != exclude), kind)


def check_fit(meta: dict[str, Any], kind: ImageKind, name: str = "model") -> None:
    """Raise :class:`InputError` naming the fitting packaged model when the model does not fit.
    """
    from ..errors import InputError

    problem = fit_problem(meta, kind, name)
    if problem is None:
        return
    # a photo read as a volume needs is_rgb, not a 3D model
    other = None if _photo_read_as_volume(kind) else proposal(kind, exclude=name)
    if other is not None:
        problem += f"; the packaged model '{other}' fits it"
    raise InputError(problem)


def channel_first(arr: np.ndarray, is_rgb: bool | None, channel_axis: int | None,
                  spatial_dims: int, in_channels: int) -> tuple[np.ndarray, bool]:
    """A plain array as ``(C, *spatial)`` and whether it is an RGB photo.

    ``is_rgb=None`` guesses for a 2D model: ``(H, W, 3|4)`` is an RGB photo when the model
    takes RGB or one channel (the README's ``model.predict(photo)``), ``(C, H, W)`` with
    ``C`` = the model's channels is channel-first, anything else a volume segmented slice by
    slice. A shape that reads both ways raises :class:`InputError` naming ``is_rgb`` and
    ``channel_axis`` rather than guessing.
    """
    from ..errors import InputError

    if channel_axis is not None:
        return np.moveaxis(arr, channel_axis, 0), bool(is_rgb)
    if is_rgb:
        if arr.shape[-1] not in (3, 4):
            raise InputError(f"an RGB image needs 3 or 4 values on its last axis, got "
                             f"shape {arr.shape}")
        return np.moveaxis(arr[..., :3], -1, 0), True
    if arr.ndim != 3 or spatial_dims == 3:
        return (arr[None] if arr.ndim in (2, 3) else arr), False
    first = arr.shape[0] == in_channels
    photo = is_rgb is None and arr.shape[-1] in (3, 4) and in_channels in (1, 3)
    if first and photo:
        raise InputError(f"image of shape {arr.shape} is ambiguous: pass is_rgb=True for an "
                         "RGB photo (H, W, 3|4), or channel_axis=0 for channel-first (C, H, W)")
    if photo:
        return np.moveaxis(arr[..., :3], -1, 0), True
    return (arr if first else arr[None]), False
