"""Building blocks shared by the segmentation networks (2D and 3D).

Factories (:func:`conv`, :func:`norm_layer`, :func:`act_layer`, :func:`dropout_layer`) pick the
right ``nn.Module`` for ``spatial_dims``; the blocks below are the per-level units of the network
families in :mod:`napari_drunet.core.nets.networks`:

* :class:`ConvNormAct` -- convolution, normalisation, activation (optionally dropout);
* :class:`DoubleConv` -- the plain U-Net level (two :class:`ConvNormAct`);
* :class:`ResidualUnit` -- two convolutions with an identity (or 1x1 projection) shortcut and
  dropout between them (DRU-Net);
* :class:`ResConvUnit` -- Alom et al.'s residual convolutional unit (1x1 conv, two convs, sum);
* :class:`RecurrentBlock`, :class:`RCNNBlock`, :class:`RRCNNBlock` -- recurrent (residual)
  convolutional units of RU-Net / R2U-Net (Alom et al., 2018);
* :class:`AttentionGate` -- additive attention gate of Attention U-Net (Oktay et al., 2018).

Conv/norm pairs always sit next to each other inside an ``nn.Sequential`` so that
:func:`napari_drunet.core.nets.networks.fold_batchnorm` can fold them for inference.
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("batch", "instance", "group", "none")
ACTS = ("relu", "prelu", "leakyrelu")


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise ``ValueError``."""
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def conv(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
         stride: int = 1, bias: bool = True) -> nn.Module:
    """``nn.Conv2d``/``nn.Conv3d`` with 'same' padding for odd ``kernel_size`` and stride 1."""
    cls = nn.Conv2d if check_spatial_dims(spatial_dims) == 2 else nn.Conv3d
    return cls(in_channels, out_channels, kernel_size, stride=stride,
               padding=(kernel_size - 1) // 2 if stride == 1 else 0, bias=bias)


def conv_transpose(spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """Learned 2x up-sampling: transposed convolution with kernel 2, stride 2."""
    cls = nn.ConvTranspose2d if check_spatial_dims(spatial_dims) == 2 else nn.ConvTranspose3d
    return cls(in_channels, out_channels, kernel_size=2, stride=2)


def max_pool(spatial_dims: int) -> nn.Module:
    """2x max-pooling."""
    return nn.MaxPool2d(2) if check_spatial_dims(spatial_dims) == 2 else nn.MaxPool3d(2)


def _groups(channels: int, max_groups: int = 8) -> int:
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


def norm_layer(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    """Normalisation layer: ``'batch'``, ``'instance'`` (affine), ``'group'`` (<= 8 groups), ``'none'``."""
    if norm == "batch":
        return nn.BatchNorm2d(channels) if spatial_dims == 2 else nn.BatchNorm3d(channels)
    if norm == "instance":
        cls = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
        return cls(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(_groups(channels), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")


def act_layer(act: str, channels: int) -> nn.Module:
    """Activation: ``'relu'``, ``'prelu'`` (one slope per channel) or ``'leakyrelu'`` (0.01)."""
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "prelu":
        return nn.PReLU(channels)
    if act == "leakyrelu":
        return nn.LeakyReLU(0.01, inplace=True)
    raise ValueError(f"act must be one of {', '.join(ACTS)}; got {act!r}")


def dropout_layer(spatial_dims: int, p: float) -> nn.Module:
    """Channel dropout (``nn.Dropout2d``/``nn.Dropout3d``); ``nn.Identity`` when ``p == 0``."""
    if p <= 0:
        return nn.Identity()
    return nn.Dropout2d(p) if spatial_dims == 2 else nn.Dropout3d(p)


class ConvNormAct(nn.Sequential):
    """``conv(k) -> norm -> act [-> dropout]``; the conv has a bias only when ``norm='none'``."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *,
                 kernel_size: int = 3, norm: str = "batch", act: str = "relu",
                 dropout: float = 0.0, with_act: bool = True) -> None:
        layers = [conv(spatial_dims, in_channels, out_channels, kernel_size, bias=norm == "none"),
                  norm_layer(norm, spatial_dims, out_channels)]
        if with_act:
            layers.append(act_layer(act, out_channels))
        if dropout > 0:
            layers.append(dropout_layer(spatial_dims, dropout))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Plain U-Net level: two ``conv-norm-act``; dropout (if any) after the second."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *,
                 norm: str = "batch", act: str = "relu", dropout: float = 0.0) -> None:
        super().__init__(
            ConvNormAct(spatial_dims, in_channels, out_channels, norm=norm, act=act),
            ConvNormAct(spatial_dims, out_channels, out_channels, norm=norm, act=act,
                        dropout=dropout),
        )


class ResidualUnit(nn.Module):
    """Residual unit of DRU-Net: ``act(F(x) + S(x))``.

    ``F = conv-norm-act -> dropout -> conv-norm`` and the shortcut ``S`` is the identity when the
    channel count is unchanged, otherwise a 1x1 projection ``conv-norm`` (He et al., 2016).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *,
                 norm: str = "batch", act: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(spatial_dims, in_channels, out_channels, norm=norm, act=act,
                        dropout=dropout),
            ConvNormAct(spatial_dims, out_channels, out_channels, norm=norm, with_act=False),
        )
        if in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size=1,
                                        norm=norm, with_act=False)
        self.act = act_layer(act, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        out += self.shortcut(x)  # in place: no extra full-size tensor (the body ends in a norm/conv)
        return self.act(out)


class ResConvUnit(nn.Module):
    """Residual convolutional unit of Alom et al.'s ResU-Net baseline.

    ``x' = conv1x1(x)``; ``y = x' + conv-norm-act(conv-norm-act(x'))`` (no activation after the
    sum, as in the reference R2U-Net code); dropout (if any) is applied to ``y``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *,
                 norm: str = "batch", act: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.project = conv(spatial_dims, in_channels, out_channels, kernel_size=1)
        self.body = DoubleConv(spatial_dims, out_channels, out_channels, norm=norm, act=act)
        self.drop = dropout_layer(spatial_dims, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        return self.drop(x + self.body(x))


class RecurrentBlock(nn.Module):
    """Recurrent convolutional layer (RCL) unfolded for ``t`` steps with shared weights.

    ``h_0 = f(x)``, ``h_k = f(x + h_{k-1})`` for ``k = 1..t`` with ``f = conv-norm-act``; channels
    are unchanged (Alom et al., 2018, Fig. 3d).
    """

    def __init__(self, spatial_dims: int, channels: int, *, t: int = 2, norm: str = "batch",
                 act: str = "relu") -> None:
        super().__init__()
        if t < 1:
            raise ValueError(f"recurrence steps t must be >= 1, got {t}")
        self.t = int(t)
        self.conv = ConvNormAct(spatial_dims, channels, channels, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        for _ in range(self.t):
            h = self.conv(x + h)
        return h


class RCNNBlock(nn.Module):
    """RU-Net unit: 1x1 projection then two :class:`RecurrentBlock` (no residual sum)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, t: int = 2,
                 norm: str = "batch", act: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.project = conv(spatial_dims, in_channels, out_channels, kernel_size=1)
        self.body = nn.Sequential(
            RecurrentBlock(spatial_dims, out_channels, t=t, norm=norm, act=act),
            RecurrentBlock(spatial_dims, out_channels, t=t, norm=norm, act=act),
        )
        self.drop = dropout_layer(spatial_dims, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.body(self.project(x)))


class RRCNNBlock(RCNNBlock):
    """R2U-Net unit (RRCNN): like :class:`RCNNBlock` plus the residual sum ``x' + RCNN(x')``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        return self.drop(x + self.body(x))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al., 2018, grid attention with sub-sampling 2).

    ``x`` (skip features, fine) is reduced by a stride-2 convolution ``theta`` to the grid of the
    gating signal ``g`` (decoder features one level coarser), ``q = psi(relu(theta(x) + phi(g)))``
    gives a sigmoid attention map that is up-sampled (linear interpolation) to ``x``'s size and
    multiplies ``x``; a 1x1 ``conv-norm`` ``W`` follows, as in the reference implementation.
    """

    def __init__(self, spatial_dims: int, in_channels: int, gating_channels: int,
                 inter_channels: int | None = None, *, norm: str = "batch") -> None:
        super().__init__()
        inter = inter_channels or max(in_channels // 2, 1)
        self.theta = conv(spatial_dims, in_channels, inter, kernel_size=2, stride=2, bias=False)
        self.phi = conv(spatial_dims, gating_channels, inter, kernel_size=1)
        self.psi = conv(spatial_dims, inter, 1, kernel_size=1)
        self.out = ConvNormAct(spatial_dims, in_channels, in_channels, kernel_size=1, norm=norm,
                               with_act=False)
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def attention(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention coefficients in [0, 1], shape ``(N, 1, *x.shape[2:])``."""
        theta = self.theta(x)
        phi = nn.functional.interpolate(self.phi(g), size=theta.shape[2:], mode=self.mode,
                                        align_corners=False)
        q = torch.sigmoid(self.psi(torch.relu(theta + phi)))
        return nn.functional.interpolate(q, size=x.shape[2:], mode=self.mode, align_corners=False)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.out(x * self.attention(x, g))
