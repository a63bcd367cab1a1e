"""The input recipe: how an image becomes the network's input, and a prediction comes back.

One object, :class:`InputRecipe`, holds every step between a user's image and the network:

1. **channels** -- the image read as ``(C, *spatial)``; an RGB photo for a 1-channel model
   becomes luminance, a one-channel image for an RGB model is repeated;
2. **rescale** -- to the scale the model was trained at (:mod:`.rescale`): the fundus FOV
   diameter (``fov``), the voxel spacing (``spacing``) or the photograph's long side
   (``size``);
3. **normalisation** -- ``meta["normalization"]`` at that scale (see :mod:`.normalization`;
   for fundus photographs from other cameras ``fundus_local``: local contrast inside the FOV,
   at a scale relative to its diameter);
4. **axis order** -- a 3D volume transposed to the order of the training volumes, from the
   header or by a search (:mod:`.orientation`).

:meth:`InputRecipe.prepare` returns a :class:`Prepared` (the network-ready array and what is
needed to go back); :meth:`InputRecipe.restore` brings probabilities to the source grid.
Prediction, Monte-Carlo dropout, batch-norm adaptation and the training sampler all prepare
their images here, so training and prediction see the same input by construction.

The recipe is stored in the checkpoint as it always was: ``meta["normalization"]`` and the
entries of ``meta["preprocess"]`` (``fov_diameter`` + ``mask_outside_fov``, ``spacing``,
``long_side``, ``orientation``, ``axis_search``, ``channels``); :meth:`InputRecipe.from_meta`
reads every existing model file, :meth:`InputRecipe.to_meta` writes the same entries back.
A new option is one field here, its key in :meth:`~InputRecipe.from_meta` /
:meth:`~InputRecipe.to_meta` / :func:`check_preprocess`, and its step in
:meth:`~InputRecipe.prepare_iter`.

>>> recipe = InputRecipe.from_meta({"preprocess": {"long_side": 256}}, in_channels=3)
>>> recipe.rescale, recipe.target
('size', 256.0)
>>> prepared = recipe.prepare(np.zeros((3, 768, 1024), np.float32))
>>> prepared.array.shape
(3, 192, 256)
>>> recipe.restore(np.zeros((1, 192, 256), np.float32), prepared).shape
(1, 768, 1024)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from ..errors import InputError
from ..image.normalization import normalize, sanitize
from ..image.rescale import Rescale, plan_rescale, resize_nearest
from ..infer.orientation import AXIS_MODES, AxisOrder, plan_axis_order
from ..progress import Progress, run_to_end
from .fit import ImageKind, channel_first, converts_channels
from .preprocess import CHANNEL_MODES, KNOWN_KEYS, RESCALE_KEYS, RESCALE_MODES, check_preprocess

if TYPE_CHECKING:
    from typing import TypeAlias

    from numpy.typing import ArrayLike
    from torch import nn

    from ..image.data import ImageData
    from ..infer.predict import InferenceConfig

    #: what :meth:`InputRecipe.read` (hence ``Model.predict``) accepts: an ``ImageData`` (its
    #: spacing and header kept) or an array-like (numpy, a napari layer's data, dask, zarr)
    ImageInput: TypeAlias = ImageData | ArrayLike

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601
def is_image_data(image: object) -> TypeGuard[ImageData]:
    """True for an :class:`~napari_drunet.core.image.io.ImageData` (channel-first array + spacing)."""
    return hasattr(image, "array") and hasattr(image, "spacing")


@dataclass
class Prepared:
    """An image prepared by :meth:`InputRecipe.prepare`.

    Attributes
    ----------
    array : ndarray
        Network input ``(C, *spatial)`` float32: channels fixed, normalised, at the model's
        scale and in its axis order.
    source_shape : tuple of int
        Spatial shape of the source image (the grid :meth:`restore` returns to).
    rescale : Rescale
        The planned resampling (and the fundus FOV, on the source grid, when one was found).
    order : AxisOrder
        The axis order the array was brought to.
    notes : list of str
        Conversions worth telling the user (channels, NaN values, rescaling).
    probabilities : ndarray or None
        Probabilities an axis-order search already computed for ``array`` (in the network's
        order; usable as the prediction), else ``None``.
    """

    array: np.ndarray
    source_shape: tuple[int, ...]
    rescale: Rescale
    order: AxisOrder
    notes: list[str] = field(default_factory=list)
    probabilities: np.ndarray | None = None

    @property
    def fov(self) -> np.ndarray | None:
        """Field of view found in a fundus photograph (source grid), else ``None``."""
        return self.rescale.fov

    def to_network_grid(self, spatial_map: np.ndarray) -> np.ndarray:
        """A label / mask / weight map ``(*spatial)`` on the source grid brought to the
        network's grid: nearest-neighbour resize, then the same axis order (dtype kept)."""
        out = np.asarray(spatial_map)
        if self.rescale.active:
            out = resize_nearest(out, self.rescale.target_shape)
        return self.order.apply_spatial(out)

    def restore(self, pred: np.ndarray) -> np.ndarray:
        """Probabilities ``(K, *network grid)`` back on the source grid (see
        :meth:`InputRecipe.restore`)."""
        return self.rescale.restore(self.order.restore(pred))


@dataclass(frozen=True)
class InputRecipe:
    """How images are prepared for one model (see the module docstring).

    Parameters
    ----------
    in_channels : int, optional
        Channels the network takes; ``None`` keeps the image's (a model yet to be built).
    spatial_dims : int
        2 or 3 (a 2D model segments volumes slice by slice).
    channels : str
        Channel handling, one of :data:`CHANNEL_MODES`.
    normalization : dict, optional
        Normalisation spec (:mod:`.normalization`); ``None`` = the package default.
    rescale : str
        One of :data:`RESCALE_MODES`: ``fov`` (fundus FOV diameter, single photographs),
        ``size`` (a photograph's long side, aspect kept, single photographs), ``spacing``
        (voxel spacing of files that record one), ``none``.
    target : float or tuple of float, optional
        The rescale target: FOV diameter or long side in pixels, or spacing per axis.
    mask_outside_fov : bool
        ``fov`` mode: predictions outside the found FOV are set to background.
    orientation : str, optional
        Axis codes (``"RAS"``) of the training volumes: volumes with an affine are reoriented.
    axis_search : bool
        Volumes without orientation are predicted in the six axis orders, the most confident
        kept.
    extra : dict
        ``meta["preprocess"]`` entries this version does not know (written back unchanged).
    check : callable, optional
        ``check(ImageKind)`` raising :class:`InputError` for an image the model does not fit
        (:func:`~napari_drunet.core.models.fit.check_fit`); not stored.
    """

    in_channels: int | None = None
    spatial_dims: int = 2
    channels: str = "auto"
    normalization: dict[str, Any] | None = None
    rescale: str = "none"
    target: float | tuple[float, ...] | None = None
    mask_outside_fov: bool = True
    orientation: str | None = None
    axis_search: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[ImageKind], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.channels not in CHANNEL_MODES:
            raise InputError(f"channel mode must be one of {', '.join(CHANNEL_MODES)}; got "
                             f"{self.channels!r}")
        if self.rescale not in RESCALE_MODES:
            raise InputError(f"rescale mode must be one of {', '.join(RESCALE_MODES)}; got "
                             f"{self.rescale!r}")
        if self.rescale != "none" and self.target is None:
            raise InputError(f"rescale mode {self.rescale!r} needs a target")

    # ------------------------------------------------------------------ checkpoint recipe
    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None, *, in_channels: int | None = None,
                  spatial_dims: int | None = None,
                  check: Callable[[ImageKind], None] | None = None) -> InputRecipe:
        """The recipe of a checkpoint's ``meta`` (``normalization`` and ``preprocess``);
        channels and dimensions from the arguments, else from ``meta["arch_kwargs"]``.

        A ``preprocess`` with several scale keys uses the first of ``fov_diameter``,
        ``long_side``, ``spacing`` (as models written before this object behave).
        """
        meta = meta or {}
        pre = dict(meta.get("preprocess") or {})
        check_preprocess(pre)
        kwargs = meta.get("arch_kwargs") or {}
        if in_channels is None and kwargs.get("in_channels") is not None:
            in_channels = int(kwargs["in_channels"])
        mode, target, chosen = "none", None, None
        for name, key in RESCALE_KEYS.items():
            if pre.get(key):
                mode, chosen = name, key
                target = tuple(float(v) for v in pre[key]) if name == "spacing" \
                    else float(pre[key])
                break
        # another scale key beside the chosen one is kept as it was written
        extra = {k: v for k, v in pre.items() if k not in KNOWN_KEYS
                 or (k in RESCALE_KEYS.values() and k != chosen)}
        return cls(in_channels=in_channels,
                   spatial_dims=int(spatial_dims or kwargs.get("spatial_dims", 2)),
                   channels=str(pre.get("channels", "auto")),
                   normalization=meta.get("normalization"), rescale=mode, target=target,
                   mask_outside_fov=bool(pre.get("mask_outside_fov", True)),
                   orientation=pre.get("orientation"), axis_search=bool(pre.get("axis_search")),
                   extra=extra, check=check)

    def preprocess(self) -> dict[str, Any]:
        """The ``meta["preprocess"]`` entries of this recipe (plain JSON types)."""
        pre: dict[str, Any] = dict(self.extra)
        if self.rescale != "none":
            target = self.target
            pre[RESCALE_KEYS[self.rescale]] = list(target) if isinstance(target, tuple) \
                else target
        if self.rescale == "fov":
            pre["mask_outside_fov"] = self.mask_outside_fov
        if self.orientation:
            pre["orientation"] = self.orientation
        if self.axis_search:
            pre["axis_search"] = True
        if self.channels != "auto":
            pre["channels"] = self.channels
        return pre

    def to_meta(self) -> dict[str, Any]:
        """``{"normalization": ..., "preprocess": ...}`` to store in a checkpoint (an empty
        ``preprocess`` is left out, as models without a scale recipe have none)."""
        meta: dict[str, Any] = {"normalization": self.normalization}
        pre = self.preprocess()
        if pre:
            meta["preprocess"] = pre
        return meta

    def replace(self, **changes: Any) -> InputRecipe:
        """A copy with ``changes`` (field names) applied."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------------ the steps
    def read(self, image: ImageInput, is_rgb: bool | None = None, channel_axis: int | None = None,
             ) -> tuple[np.ndarray, bool, list[str]]:
        """``image`` as a channel-first real array ``(C, *spatial)``, whether it is an RGB
        photo, and notes (NaN/Inf found); see :meth:`Model.prepare` for the accepted layouts.
        """
        notes: list[str] = []
        if is_image_data(image):
            arr = np.asarray(image.array)
            rgb = bool(getattr(image, "is_rgb", False)) if is_rgb is None else is_rgb
        elif self.in_channels is None:  # no model yet: channel-first unless told otherwise
            arr = np.asarray(image)
            arr, rgb = np.moveaxis(arr, channel_axis or 0, 0), bool(is_rgb)
        else:
            arr, rgb = channel_first(np.asarray(image), is_rgb, channel_axis, self.spatial_dims,
                                     self.in_channels)
        if arr.ndim not in (3, 4) or min(arr.shape) < 1:
            raise InputError(f"cannot use an image of shape {arr.shape}: expected (*spatial) or "
                             "(C, *spatial) with 2 or 3 spatial axes")
        if arr.dtype.kind == "O":  # e.g. a list of Python numbers
            try:
                arr = arr.astype(np.float32)
            except (TypeError, ValueError):
                raise InputError("image holds non-numeric values") from None
        if arr.dtype.kind not in "biuf":
            raise InputError(f"cannot segment an image of dtype {arr.dtype}; it must hold real "
                             "numbers (bool, integer or float)")
        if arr.dtype.kind == "f":
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            if bad:
                notes.append(f"{bad} NaN/Inf value(s) replaced by finite values before "
                             "prediction")
        return arr, rgb, notes

    def fix_channels(self, arr: np.ndarray, rgb: bool, name: str = "model",
                     ) -> tuple[np.ndarray, list[str]]:
        """``arr`` ``(C, *spatial)`` with the model's channel count, and a note on what was
        done; a mismatch the channel mode cannot fix raises :class:`InputError`."""
        c, want = arr.shape[0], self.in_channels
        if not converts_channels(want, c, rgb):
            raise InputError(f"model '{name}' expects {want} channel(s) but the image has {c} "
                             f"(shape {arr.shape})")
        if want is None or c == want:
            return arr, []
        if want == 1 and rgb and c in (3, 4):
            return (np.tensordot(LUMA, arr[:3].astype(np.float32), axes=1)[None],
                    ["RGB image converted to grayscale (luminance) for a 1-channel model"])
        return (np.repeat(arr, 3, axis=0),  # grey for an RGB model, the last conversion
                ["grayscale image repeated to 3 channels for an RGB model"])

    def normalize(self, arr: np.ndarray, normalized: bool = False,
                  fov: np.ndarray | None = None) -> np.ndarray:
        """float32 ``arr`` normalised with the recipe's spec (``fov``: its FOV mask, when found
        already); with ``normalized=True`` used as given, except that NaN/Inf must not reach
        the network."""
        if normalized:
            return sanitize(arr.astype(np.uint8) if arr.dtype == bool else arr)[0]
        return normalize(arr, self.normalization, fov)

    def network_input(self, image: ImageInput, *, is_rgb: bool | None = None,
                      channel_axis: int | None = None, normalized: bool = False,
                      name: str = "model") -> tuple[np.ndarray, list[str]]:
        """Channels fixed and normalised ``(C, *spatial)`` float32 (source grid), and notes."""
        arr, notes = self.channel_input(image, is_rgb=is_rgb, channel_axis=channel_axis,
                                        name=name)
        return self.normalize(arr, normalized), notes

    def channel_input(self, image: ImageInput, *, is_rgb: bool | None = None,
                      channel_axis: int | None = None, name: str = "model"
                      ) -> tuple[np.ndarray, list[str]]:
        """``(C, *spatial)`` with the model's channels (source grid, values as read), and
        notes; an image the model's card does not cover raises :class:`InputError`."""
        arr, rgb, notes = self.read(image, is_rgb, channel_axis)
        if self.check is not None:
            self.check(ImageKind.of(arr.shape, rgb))
        arr, more = self.fix_channels(arr, rgb, name)
        return arr, notes + more

    def plan_rescale(self, arr: np.ndarray, spacing: Sequence[float] | None = None) -> Rescale:
        """The resampling that brings ``arr`` ``(C, *spatial)`` to the model's scale."""
        return plan_rescale(arr, self.preprocess(), spacing)

    def prepare_iter(self, image: ImageInput, *, is_rgb: bool | None = None,
                     channel_axis: int | None = None, normalized: bool = False,
                     network: nn.Module | None = None, cfg: InferenceConfig | None = None,
                     axis_order: str = "auto", info: dict[str, Any] | None = None,
                     name: str = "model") -> Generator[Progress, None, Prepared]:
        """Prepare ``image`` for the network, yielding progress (an axis search predicts).

        Parameters
        ----------
        image : ImageData or array
            See :meth:`Model.prepare`; an ``ImageData`` brings its spacing and affine.
        is_rgb, channel_axis : optional
            Layout of a plain array.
        normalized : bool
            The image is normalised already (only NaN/Inf are replaced).
        network, cfg : optional
            The network (and inference options) an axis-order search runs; without a network
            the array keeps its axis order.
        axis_order : {'auto', 'search', 'keep'}
            See :mod:`.orientation`.
        info : dict, optional
            Receives ``warnings`` (conversions, rescaling, reorientation) and the search's
            run details.
        name : str
            Model name for messages.

        Returns
        -------
        Prepared
        """
        if axis_order not in AXIS_MODES:
            raise InputError(f"axis_order must be one of {', '.join(AXIS_MODES)}; got "
                             f"{axis_order!r}")
        warnings = (info if info is not None else {}).setdefault("warnings", [])
        arr, notes = self.channel_input(image, is_rgb=is_rgb, channel_axis=channel_axis,
                                        name=name)
        warnings.extend(notes)
        arr = sanitize(arr)[0]  # NaN/Inf replaced before a resampling could spread them
        plan = self.plan_rescale(arr, getattr(image, "spacing", None))
        if plan.reason:
            warnings.append(plan.reason)
            notes.append(plan.reason)
        # normalised at the model's scale: the statistics of the grid the network sees, and a
        # clinic's 3000-px photograph is normalised after shrinking to ~600 px, not before;
        # a photograph kept at its size has the FOV the plan found, not searched again
        arr = self.normalize(plan.apply(arr), normalized, None if plan.active else plan.fov)
        order, prob = AxisOrder(tuple(range(arr.ndim - 1))), None
        if network is not None:
            if cfg is None:
                from ..infer.predict import InferenceConfig

                cfg = InferenceConfig()
            order, prob = yield from plan_axis_order(network, arr, cfg, axis_order,
                                                     self.preprocess(),
                                                     getattr(image, "affine", None), info)
        return Prepared(order.apply(arr), plan.shape, plan, order, notes, prob)

    def prepare(self, image: ImageInput, **kwargs: Any) -> Prepared:
        """:meth:`prepare_iter` run to the end (same arguments)."""
        return run_to_end(self.prepare_iter(image, **kwargs))

    def restore(self, pred: np.ndarray, prepared: Prepared) -> np.ndarray:
        """Probabilities (or any float maps) ``(K, *network grid)`` of ``prepared`` back on the
        source grid: axis order undone, resampled back (linear, clipped to [0, 1]), and set to
        background outside a fundus FOV when the recipe masks it."""
        return prepared.restore(pred)
