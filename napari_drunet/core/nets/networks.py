"""Segmentation networks (2D/3D U-Net family) and their registry.

Every network maps ``(N, in_channels, *spatial)`` to logits ``(N, out_channels, *spatial)`` for
any spatial size: the input is padded (reflect, or zeros when too small to reflect) to a multiple
of ``2 ** (len(features) - 1)`` and the output is cropped back. ``out_channels == 1`` means binary
(apply a sigmoid), ``>= 2`` multi-class (softmax, class 0 = background).

Each network exposes ``.config`` (its constructor kwargs plus ``'arch'``, JSON types only, so
``build_model(**net.config)`` rebuilds it), ``.encoder`` (``nn.ModuleList`` of the encoder levels
including the bridge, e.g. for freezing during fine-tuning) and :meth:`~UNetBase.decoder_parameters`.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from napari_drunet.core.nets.blocks import (
    ACTS,
    NORMS,
    AttentionGate,
    DoubleConv,
    RCNNBlock,
    ResConvUnit,
    ResidualUnit,
    RRCNNBlock,
    check_spatial_dims,
    conv,
    conv_transpose,
    max_pool,
)

DEFAULT_FEATURES = (16, 32, 64, 128, 256)
UP_MODES = ("transpose", "interpolate")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class _DecoderLevel(nn.Module):
    """Up-sample the coarser features, (gate and) concatenate the skip, apply ``block``."""

    def __init__(self, spatial_dims: int, coarse: int, fine: int, block: nn.Module,
                 up_mode: str, gate: AttentionGate | None = None) -> None:
        super().__init__()
        if up_mode == "transpose":
            self.up: nn.Module = conv_transpose(spatial_dims, coarse, fine)
        else:
            mode = "bilinear" if spatial_dims == 2 else "trilinear"
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode=mode, align_corners=False),
                                    conv(spatial_dims, coarse, fine, kernel_size=1))
        self.gate = gate
        self.block = block

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            skip = self.gate(skip, x)
        return self.block(torch.cat([skip, self.up(x)], dim=1))


class UNetBase(nn.Module):
    """Shared encoder/decoder skeleton; subclasses define :meth:`make_block` (one level's unit).

    Parameters
    ----------
    spatial_dims : int
        2 (images ``(N, C, H, W)``) or 3 (volumes ``(N, C, Z, Y, X)``).
    in_channels : int
        Number of input channels (e.g. 3 for RGB fundus images, 4 for multi-modal MRI).
    out_channels : int
        1 for binary segmentation (sigmoid logits), >= 2 for softmax logits over classes
        (including background).
    features : sequence of int
        Channel width per level, finest first; ``len(features)`` is the depth and the last entry
        is the bridge (bottleneck). At least two levels.
    dropout : float
        Channel dropout probability in ``[0, 1)`` (where it is placed depends on the family).
    act : {'relu', 'prelu', 'leakyrelu'}
        Activation.
    norm : {'batch', 'instance', 'group', 'none'}
        Normalisation.
    up_mode : {'transpose', 'interpolate'}
        Decoder up-sampling: 2x2 transposed convolution, or linear up-sampling + 1x1 convolution.
    """

    arch = ""
    description = ""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1,
                 features: Sequence[int] = DEFAULT_FEATURES, dropout: float = 0.0,
                 act: str = "relu", norm: str = "batch", up_mode: str = "transpose",
                 **extra: Any) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims)
        in_channels = _check_int("in_channels", in_channels, 1)
        out_channels = _check_int("out_channels", out_channels, 1)
        if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
            raise ValueError(f"features must be a sequence of channel widths, got {features!r}")
        features = [_check_int("each entry of features", f, 1) for f in features]
        if len(features) < 2:
            raise ValueError(f"features needs at least 2 levels (encoder + bridge), got {features}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        if act not in ACTS:
            raise ValueError(f"act must be one of {', '.join(ACTS)}; got {act!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
        if up_mode not in UP_MODES:
            raise ValueError(f"up_mode must be one of {', '.join(UP_MODES)}; got {up_mode!r}")
        self.spatial_dims = spatial_dims
        self.in_channels, self.out_channels = in_channels, out_channels
        self.features = tuple(features)
        self.multiple = 2 ** (len(features) - 1)
        self.dropout, self.act, self.norm = float(dropout), act, norm
        self.extra = extra
        self.config: dict[str, Any] = {
            "arch": self.arch, "spatial_dims": spatial_dims, "in_channels": in_channels,
            "out_channels": out_channels, "features": list(features), "dropout": float(dropout),
            "act": act, "norm": norm, "up_mode": up_mode, **extra}

        self.encoder = nn.ModuleList()
        prev = in_channels
        for level, width in enumerate(features):
            block = self.make_block(prev, width)
            self.encoder.append(block if level == 0 else
                                nn.Sequential(max_pool(spatial_dims), block))
            prev = width
        self.decoder = nn.ModuleList()
        for level in range(len(features) - 2, -1, -1):
            fine, coarse = features[level], features[level + 1]
            self.decoder.append(_DecoderLevel(spatial_dims, coarse, fine,
                                              self.make_block(2 * fine, fine), up_mode,
                                              self.make_gate(fine, coarse)))
        self.head = conv(spatial_dims, features[0], out_channels, kernel_size=1)

    def make_block(self, in_channels: int, out_channels: int) -> nn.Module:
        """Return the unit of one encoder/decoder level (family specific)."""
        raise NotImplementedError

    def make_gate(self, skip_channels: int, gating_channels: int) -> AttentionGate | None:
        """Return the module gating a skip connection, or ``None`` (no gate)."""
        return None

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Parameters outside :attr:`encoder` (decoder levels and output head)."""
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in enc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tracing = torch.jit.is_tracing()
        if not tracing and (x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels):
            raise ValueError(
                f"{type(self).__name__} expects input (N, {self.in_channels}, *spatial) with "
                f"{self.spatial_dims} spatial axes, got shape {tuple(x.shape)}")
        size = x.shape[2:]
        x, before = _pad_to_multiple(x, self.multiple, always=tracing)
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        x = skips.pop()
        for level in self.decoder:
            x = level(x, skips.pop())
        out = self.head(x)
        index = [slice(None), slice(None)] + [slice(b, b + s) for b, s in zip(before, size, strict=True)]
        return out[tuple(index)]


def _pad_to_multiple(x: torch.Tensor, multiple: int,
                     always: bool = False) -> tuple[torch.Tensor, list[int]]:
    """Pad the spatial axes of ``x`` (about centred) up to a multiple; return the leading pads.

    ``always`` pads even by zero (so that a traced graph keeps the padding for other sizes).
    """
    before: list[int] = []
    pads: list[int] = []
    reflect = True
    for s in x.shape[2:]:
        total = (multiple - s % multiple) % multiple
        b = total // 2
        before.append(b)
        pads = [b, total - b] + pads  # F.pad lists the last axis first
        reflect = reflect and bool(total - b < s)
    if not always and not any(pads):
        return x, before
    mode = "reflect" if reflect else "constant"
    return nn.functional.pad(x, pads, mode=mode), before


class DRUNet(UNetBase):
    """Deep Residual U-Net: :class:`~napari_drunet.core.nets.blocks.ResidualUnit` at every encoder
    level, the bridge and every decoder level; batch norm, dropout inside every unit, U-Net skip
    concatenation.

    Examples
    --------
    >>> net = DRUNet(spatial_dims=2, in_channels=3, out_channels=1, features=(8, 16, 32))
    >>> net(torch.zeros(1, 3, 37, 45)).shape
    torch.Size([1, 1, 37, 45])
    """

    arch = "drunet"
    description = "Deep Residual U-Net: residual units with dropout at every level and the bridge"

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1,
                 features: Sequence[int] = DEFAULT_FEATURES, dropout: float = 0.1,
                 act: str = "relu", norm: str = "batch", up_mode: str = "transpose") -> None:
        super().__init__(spatial_dims, in_channels, out_channels, features, dropout, act, norm,
                         up_mode)

    def make_block(self, in_channels: int, out_channels: int) -> nn.Module:
        return ResidualUnit(self.spatial_dims, in_channels, out_channels, norm=self.norm,
                            act=self.act, dropout=self.dropout)


class UNet(UNetBase):
    """Plain U-Net (Ronneberger et al., 2015): two ``conv-norm-act`` per level.

    Examples
    --------
    >>> net = UNet(spatial_dims=3, in_channels=2, out_channels=3, features=(8, 16, 32))
    >>> net(torch.zeros(1, 2, 13, 17, 19)).shape
    torch.Size([1, 3, 13, 17, 19])
    """

    arch = "unet"
    description = "Plain U-Net: two conv-norm-act per level"

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1,
                 features: Sequence[int] = DEFAULT_FEATURES, dropout: float = 0.0,
                 act: str = "relu", norm: str = "batch", up_mode: str = "transpose") -> None:
        super().__init__(spatial_dims, in_channels, out_channels, features, dropout, act, norm,
                         up_mode)

    def make_block(self, in_channels: int, out_channels: int) -> nn.Module:
        return DoubleConv(self.spatial_dims, in_channels, out_channels, norm=self.norm,
                          act=self.act, dropout=self.dropout)


class ResUNet(UNet):
    """ResU-Net baseline of Alom et al. (2018): residual convolutional units
    (:class:`~napari_drunet.core.nets.blocks.ResConvUnit`: 1x1 conv, two conv-norm-act, sum), no
    recurrence.

    Examples
    --------
    >>> net = ResUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(8, 16, 32))
    >>> net(torch.zeros(2, 1, 32, 30)).shape
    torch.Size([2, 2, 32, 30])
    """

    arch = "resunet"
    description = "ResU-Net (Alom et al. 2018 baseline): residual conv units, no recurrence"

    def make_block(self, in_channels: int, out_channels: int) -> nn.Module:
        return ResConvUnit(self.spatial_dims, in_channels, out_channels, norm=self.norm,
                           act=self.act, dropout=self.dropout)


class RUNet(UNetBase):
    """RU-Net (Alom et al., 2018): recurrent convolutional units (``t`` steps), no residual.

    ``t`` (int >= 1, default 2) is the number of recurrent steps of each recurrent layer.

    Examples
    --------
    >>> net = RUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(8, 16), t=2)
    >>> net(torch.zeros(1, 1, 20, 21)).shape
    torch.Size([1, 1, 20, 21])
    """

    arch = "runet"
    description = "RU-Net (Alom et al. 2018): recurrent conv units (t=2), no residual"
    unit = RCNNBlock

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1,
                 features: Sequence[int] = DEFAULT_FEATURES, dropout: float = 0.0,
                 act: str = "relu", norm: str = "batch", up_mode: str = "transpose",
                 t: int = 2) -> None:
        self.t = _check_int("t", t, 1)
        super().__init__(spatial_dims, in_channels, out_channels, features, dropout, act, norm,
                         up_mode, t=self.t)

    def make_block(self, in_channels: int, out_channels: int) -> nn.Module:
        return self.unit(self.spatial_dims, in_channels, out_channels, t=self.t, norm=self.norm,
                         act=self.act, dropout=self.dropout)


class R2UNet(RUNet):
    """R2U-Net (Alom et al., 2018): recurrent residual convolutional units (RRCNN, ``t`` steps).

    Examples
    --------
    >>> net = R2UNet(spatial_dims=3, in_channels=1, out_channels=1, features=(8, 16), t=2)
    >>> net(torch.zeros(1, 1, 9, 10, 11)).shape
    torch.Size([1, 1, 9, 10, 11])
    """

    arch = "r2unet"
    description = "R2U-Net (Alom et al. 2018): recurrent residual conv units (RRCNN, t=2)"
    unit = RRCNNBlock


class AttentionUNet(UNet):
    """Attention U-Net (Oktay et al., 2018): plain U-Net levels with additive attention gates
    (:class:`~napari_drunet.core.nets.blocks.AttentionGate`) on every skip connection.

    Examples
    --------
    >>> net = AttentionUNet(spatial_dims=2, in_channels=4, out_channels=3, features=(8, 16, 32))
    >>> net(torch.zeros(1, 4, 37, 45)).shape
    torch.Size([1, 3, 37, 45])
    """

    arch = "attention_unet"
    description = "Attention U-Net (Oktay et al. 2018): additive attention gates on skips"

    def make_gate(self, skip_channels: int, gating_channels: int) -> AttentionGate:
        return AttentionGate(self.spatial_dims, skip_channels, gating_channels, norm=self.norm)


ARCHITECTURES: dict[str, type[UNetBase]] = {
    cls.arch: cls for cls in (DRUNet, UNet, ResUNet, RUNet, R2UNet, AttentionUNet)}


def list_architectures() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(ARCHITECTURES)


def build_model(arch: str, **cfg: Any) -> UNetBase:
    """Build network ``arch`` (see :data:`ARCHITECTURES`) from keyword arguments.

    Raises
    ------
    ValueError
        Unknown architecture, unknown keyword or invalid value.

    Examples
    --------
    >>> net = build_model("drunet", in_channels=3, features=(8, 16, 32))
    >>> build_model(**net.config).config == net.config
    True
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of "
                         f"{', '.join(list_architectures())}")
    cls = ARCHITECTURES[arch]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) for {arch}: {', '.join(unknown)}; "
                         f"allowed: {', '.join(allowed)}")
    if isinstance(cfg.get("features"), list):
        cfg["features"] = tuple(cfg["features"])
    return cls(**cfg)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (only ``requires_grad`` ones if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def describe_architectures(**cfg: Any) -> list[dict[str, Any]]:
    """One row per architecture: ``name``, ``description``, ``params`` (2D, 1 in, 1 out unless
    overridden by ``cfg``)."""
    base = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, **cfg}
    rows = []
    for name, cls in ARCHITECTURES.items():
        with torch.device("meta"):
            net = build_model(name, **base)
        rows.append({"name": name, "description": cls.description,
                     "params": count_parameters(net)})
    return rows


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``module`` with every batch norm that directly follows a
    convolution inside an ``nn.Sequential`` folded into that convolution (replaced by
    ``nn.Identity``). Outputs are unchanged up to rounding; use for inference only.
    """
    folded = copy.deepcopy(module).eval()
    convs = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    bns = (nn.BatchNorm2d, nn.BatchNorm3d)
    for seq in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:], strict=False):
            c, bn = seq._modules[a], seq._modules[b]
            if isinstance(c, convs) and isinstance(bn, bns) and bn.running_mean is not None:
                transpose = isinstance(c, (nn.ConvTranspose2d, nn.ConvTranspose3d))
                seq._modules[a] = fuse_conv_bn_eval(c, bn, transpose=transpose)
                seq._modules[b] = nn.Identity()
    return folded
