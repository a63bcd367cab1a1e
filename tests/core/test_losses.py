"""Tests of napari_drunet.core.train.losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_drunet.core.errors import DrunetError
from napari_drunet.core.train.losses import LOSSES, LossInputError, build_loss, list_losses

ALL_NAMES = ["bce", "dice", "bce_dice", "ce", "focal", "ce_dice", "auto"]
MULTI_OK = [n for n in ALL_NAMES if n != "bce"]
SHAPES = [(8, 8), (4, 6, 5)]  # 2D and 3D spatial shapes


def make_batch(k: int, spatial: tuple[int, ...], n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((n, k, *spatial), generator=g, requires_grad=True)
    target = torch.randint(0, max(k, 2), (n, *spatial), generator=g)
    return logits, target, g


def perfect_logits(target: torch.Tensor, k: int, scale: float = 20.0) -> torch.Tensor:
    if k == 1:
        return (target.float() * 2 - 1).unsqueeze(1) * scale
    return F.one_hot(target, k).movedim(-1, 1).float() * 2 * scale - scale


def test_registry():
    assert list_losses() == sorted(ALL_NAMES)
    assert set(LOSSES) == set(ALL_NAMES)
    with pytest.raises(LossInputError, match="unknown loss"):
        build_loss("nope")
    with pytest.raises(DrunetError):
        build_loss("focal", gamma=2, nonsense=1)
    with pytest.raises(ValueError):
        build_loss("focal", gamma=-1)
    assert build_loss("BCE-Dice").config["name"] == "bce_dice"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_config_roundtrip(name):
    hybrid = name in ("bce_dice", "ce_dice", "auto")
    loss = build_loss(name, dice_weight=0.5) if hybrid else build_loss(name)
    cfg = dict(loss.config)
    again = build_loss(cfg.pop("name"), **cfg)
    assert again.config == loss.config
    logits, target, _ = make_batch(1, (6, 6))
    assert torch.allclose(loss(logits, target), again(logits, target))


@pytest.mark.parametrize("spatial", SHAPES)
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_shapes_values_and_perfect_prediction(name, k, spatial):
    loss = build_loss(name)
    logits, target, _ = make_batch(k, spatial)
    if name == "bce" and k > 1:
        with pytest.raises(LossInputError, match="'ce'"):
            loss(logits, target)
        return
    value = loss(logits, target)
    assert value.ndim == 0 and torch.isfinite(value) and value > 0.1
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    perfect = loss(perfect_logits(target, k), target)
    assert 0 <= perfect < 1e-3
    assert perfect < value


@pytest.mark.parametrize(
    ("name", "k"), [(n, k) for n in ALL_NAMES for k in (1, 4) if not (n == "bce" and k > 1)]
)
def test_ignored_pixels_contribute_nothing(name, k):
    loss = build_loss(name)
    logits, target, g = make_batch(k, (4, 6, 6))
    weight = torch.rand(target.shape, generator=g) > 0.5
    value = loss(logits, target, weight)
    value.backward()
    ignored = ~weight
    assert ignored.any() and weight.any()
    grad = logits.grad.movedim(1, -1)  # (N, *spatial, K)
    assert torch.equal(grad[ignored], torch.zeros_like(grad[ignored]))
    assert (grad[weight] != 0).any()
    # changing logits and labels at ignored pixels leaves the value unchanged
    other = logits.detach().clone().movedim(1, -1)
    other[ignored] = torch.randn(other[ignored].shape, generator=g) * 10
    other_target = target.clone()
    other_target[ignored] = 255  # out-of-range labels are fine where ignored
    again = loss(other.movedim(-1, 1), other_target, weight.float())
    assert torch.allclose(value, again, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("name", MULTI_OK)
def test_all_ignored_gives_zero(name, k):
    loss = build_loss(name)
    logits, target, _ = make_batch(k, (8, 8))
    value = loss(logits, target, torch.zeros(target.shape))
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits.grad))


def test_weighted_ce_matches_explicit_formula():
    logits, target, g = make_batch(3, (5, 7))
    weight = torch.rand(target.shape, generator=g)
    nll = F.cross_entropy(logits, target, reduction="none")
    expected = (nll * weight).sum() / weight.sum()
    assert torch.allclose(build_loss("ce")(logits, target, weight), expected, atol=1e-6)
    # bool mask = mean over selected pixels only
    mask = weight > 0.3
    assert torch.allclose(build_loss("ce")(logits, target, mask), nll[mask].mean(), atol=1e-6)


def test_class_weights_match_torch():
    logits, target, _ = make_batch(3, (6, 6))
    cw = [0.2, 1.0, 3.0]
    got = build_loss("ce", class_weights=cw)(logits, target)
    expected = F.cross_entropy(logits, target, weight=torch.tensor(cw))
    assert torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(LossInputError, match="class_weights"):
        build_loss("ce", class_weights=[1.0, 2.0])(logits, target)


def test_binary_ce_is_bce_and_two_class_softmax():
    logits, target, _ = make_batch(1, (6, 6))
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], target.float())
    assert torch.allclose(build_loss("bce")(logits, target), bce, atol=1e-6)
    assert torch.allclose(build_loss("ce")(logits, target), bce, atol=1e-6)
    two = torch.cat([torch.zeros_like(logits), logits], dim=1)
    assert torch.allclose(build_loss("ce")(two, target), bce, atol=1e-6)
    assert torch.allclose(build_loss("dice")(two, target), build_loss("dice")(logits, target))


@pytest.mark.parametrize("k", [1, 3])
def test_focal_gamma_zero_is_cross_entropy_and_focuses(k):
    logits, target, _ = make_batch(k, (6, 6))
    ce = build_loss("ce")(logits, target)
    assert torch.allclose(build_loss("focal", gamma=0)(logits, target), ce, atol=1e-6)
    focal = build_loss("focal")(logits, target)
    assert 0 < focal < ce
    # explicit formula with gamma = 2
    logp = (
        -F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), reduction="none")
        if k == 1
        else F.log_softmax(logits, 1).gather(1, target[:, None])[:, 0]
    )
    expected = (-((1 - logp.exp()) ** 2) * logp).mean()
    assert torch.allclose(focal, expected, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_dice_matches_monai_batch_dice(k):
    monai_losses = pytest.importorskip("monai.losses")
    logits, target, g = make_batch(k, (2, 9, 7), seed=3)
    ours = build_loss("dice")(logits, target)
    if k == 1:
        ref = monai_losses.DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
        expected = ref(logits, target[:, None].float())
    else:
        ref = monai_losses.DiceLoss(
            softmax=True,
            to_onehot_y=True,
            include_background=False,
            batch=True,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )
        expected = ref(logits, target[:, None])
    assert torch.allclose(ours, expected, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3])
def test_dice_range_and_empty_patches(k):
    dice = build_loss("dice")
    for seed in range(5):
        logits, target, g = make_batch(k, (8, 8), seed=seed)
        logits = logits * 5
        weight = torch.rand(target.shape, generator=g)
        for w in (None, weight):
            value = dice(logits, target, w).item()
            assert 0.0 <= value <= 1.0
    # patch without foreground: finite, pushes foreground probability down
    empty = torch.zeros(2, 8, 8, dtype=torch.long)
    low = dice(perfect_logits(empty, k), empty)
    high = dice(-perfect_logits(empty, k), empty)
    assert torch.isfinite(low) and torch.isfinite(high) and low < 0.05 and high > 0.99


@pytest.mark.parametrize("include_background", [False, True])
def test_weighted_dice_matches_explicit_formula(include_background):
    logits, target, g = make_batch(3, (2, 5, 6), seed=7)
    weight = torch.rand(target.shape, generator=g) * (torch.rand(target.shape, generator=g) > 0.3)
    loss = build_loss("dice", include_background=include_background)
    prob = torch.softmax(logits, 1)
    dices = []
    for c in range(0 if include_background else 1, 3):
        p, t = prob[:, c], (target == c).float()
        inter = (weight * p * t).sum()
        dices.append((2 * inter + 1e-5) / ((weight * p).sum() + (weight * t).sum() + 1e-5))
    expected = 1 - torch.stack(dices).mean()
    assert torch.allclose(loss(logits, target, weight), expected, atol=1e-6)
    # ignored pixels get no gradient even when the background class is averaged
    loss(logits, target, weight).backward()
    grad = logits.grad.movedim(1, -1)
    assert torch.equal(grad[weight == 0], torch.zeros_like(grad[weight == 0]))


def test_hybrid_is_weighted_sum():
    logits, target, g = make_batch(1, (6, 6))
    weight = torch.rand(target.shape, generator=g)
    bce = build_loss("bce")(logits, target, weight)
    dice = build_loss("dice")(logits, target, weight)
    hybrid = build_loss("bce_dice", bce_weight=0.3, dice_weight=2.0)(logits, target, weight)
    assert torch.allclose(hybrid, 0.3 * bce + 2.0 * dice, atol=1e-6)
    logits3, target3, _ = make_batch(3, (6, 6))
    ce = build_loss("ce")(logits3, target3)
    dice3 = build_loss("dice")(logits3, target3)
    for name in ("ce_dice", "bce_dice", "auto"):
        assert torch.allclose(build_loss(name)(logits3, target3), ce + dice3, atol=1e-6)


def test_input_validation():
    loss = build_loss("ce")
    logits, target, _ = make_batch(3, (6, 6))
    assert torch.allclose(loss(logits, target[:, None]), loss(logits, target))  # (N,1,...) ok
    with pytest.raises(LossInputError, match="integer"):
        loss(logits, target.float())
    with pytest.raises(LossInputError, match="outside"):
        loss(logits, target + 1)
    with pytest.raises(LossInputError, match="outside"):
        build_loss("bce")(logits[:, :1], target)  # label 2 with a binary network
    with pytest.raises(LossInputError, match="shape"):
        loss(logits, target[:, :5])
    with pytest.raises(LossInputError, match="non-negative"):
        loss(logits, target, -torch.ones(target.shape))
    with pytest.raises(LossInputError, match="weight shape"):
        loss(logits, target, torch.ones(2, 5, 5))


def test_half_precision_logits():
    logits, target, _ = make_batch(3, (6, 6))
    value = build_loss("ce_dice")(logits.detach().bfloat16(), target)
    assert value.dtype == torch.float32 and torch.isfinite(value)
