"""Tests of napari_drunet.core.evaluation.metrics (hand-computed cases and independent implementations)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from napari_drunet.core.errors import DrunetError
from napari_drunet.core.evaluation.metrics import (
    MetricInputError,
    confusion_counts,
    confusion_metrics,
    evaluate_case,
    format_table,
    hausdorff_distance,
    roc_auc,
    summarize,
)

CONF_NAMES = ("dice", "iou", "sensitivity", "specificity", "precision", "accuracy", "mcc")

# 4x4 example: tp = 3 at (0,0),(0,1),(1,0); fp = 2 at (0,2),(3,3); fn = 1 at (1,1); tn = 10
TRUTH = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool)
PRED = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], bool)


def blobs(shape, rng, frac=0.35, sigma=1.5):
    """Random smooth binary mask (non-empty with overwhelming probability)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > np.quantile(field, 1 - frac)


def test_hand_computed_4x4():
    assert confusion_counts(PRED, TRUTH) == (3, 2, 1, 10)
    m = confusion_metrics(PRED, TRUTH)
    expected = {
        "dice": 6 / 9,
        "iou": 3 / 6,
        "sensitivity": 3 / 4,
        "specificity": 10 / 12,
        "precision": 3 / 5,
        "accuracy": 13 / 16,
        "mcc": (3 * 10 - 2 * 1) / math.sqrt(5 * 4 * 12 * 11),
    }
    assert m.keys() == expected.keys()
    for k, v in expected.items():
        assert m[k] == pytest.approx(v, abs=1e-12), k


def test_mask_restricts_counting():
    fov = np.zeros((4, 4), bool)
    fov[:3, :3] = True  # fp (3,3) falls outside; inside: tp 3, fp 1 (0,2), fn 1, tn 4
    assert confusion_counts(PRED, TRUTH, fov) == (3, 1, 1, 4)
    m = confusion_metrics(PRED, TRUTH, fov)
    assert m["accuracy"] == pytest.approx(7 / 9)
    assert m["specificity"] == pytest.approx(4 / 5)
    # outside-mask pixels are irrelevant whatever they hold
    noisy = PRED.copy()
    noisy[~fov] = ~noisy[~fov]
    assert confusion_metrics(noisy, TRUTH, fov) == m


def test_edge_cases():
    empty = np.zeros((5, 5), bool)
    both_empty = confusion_metrics(empty, empty)
    assert all(both_empty[k] == 1.0 for k in CONF_NAMES)
    fp_only = empty.copy()
    fp_only[2, 2] = True
    m = confusion_metrics(fp_only, empty)  # empty truth, wrong prediction
    assert m["dice"] == 0 and m["iou"] == 0 and m["precision"] == 0 and m["mcc"] == 0
    assert math.isnan(m["sensitivity"])
    assert m["specificity"] == pytest.approx(24 / 25)
    m = confusion_metrics(empty, fp_only)  # missed everything
    assert m["dice"] == 0 and m["sensitivity"] == 0 and math.isnan(m["precision"])
    full = np.ones((5, 5), bool)
    assert confusion_metrics(full, full)["specificity"] == 1.0
    assert all(math.isnan(v) for v in confusion_metrics(PRED, TRUTH, np.zeros((4, 4))).values())
    with pytest.raises(MetricInputError):
        confusion_counts(PRED, TRUTH[:3])
    with pytest.raises(DrunetError):
        confusion_counts(PRED, TRUTH, np.ones((3, 3)))


@pytest.mark.parametrize("shape", [(24, 20), (10, 12, 9)])
def test_confusion_metrics_match_monai(shape):
    torch = pytest.importorskip("torch")
    mm = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(1)
    for _ in range(3):
        pred, truth = blobs(shape, rng), blobs(shape, rng)
        ours = confusion_metrics(pred, truth)
        yp = torch.as_tensor(pred[None, None], dtype=torch.float32)
        yt = torch.as_tensor(truth[None, None], dtype=torch.float32)
        cm = mm.get_confusion_matrix(yp, yt, include_background=True)
        tp, fp, tn, fn = (int(v) for v in cm[0, 0])
        assert confusion_counts(pred, truth) == (tp, fp, fn, tn)
        for name in ("sensitivity", "specificity", "precision", "accuracy", "mcc"):
            ref = mm.compute_confusion_matrix_metric(name, cm).item()
            assert ours[name] == pytest.approx(ref, abs=1e-6), name
        assert ours["dice"] == pytest.approx(mm.compute_dice(yp, yt).item(), abs=1e-6)
        assert ours["iou"] == pytest.approx(mm.compute_iou(yp, yt).item(), abs=1e-6)


def brute_force_auc(prob, truth):
    pos, neg = prob[truth], prob[~truth]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg))


def test_roc_auc_matches_brute_force_with_ties():
    rng = np.random.default_rng(2)
    for _ in range(10):
        truth = rng.random(300) < 0.3
        prob = np.round(rng.random(300) * 0.5 + 0.4 * truth, 1)  # coarse: many ties
        assert roc_auc(prob, truth) == pytest.approx(brute_force_auc(prob, truth), abs=1e-12)
    assert roc_auc(truth.astype(float), truth) == 1.0
    assert roc_auc(1.0 - truth, truth) == 0.0
    assert roc_auc(np.full(300, 0.5), truth) == 0.5
    assert math.isnan(roc_auc(prob, np.zeros(300, bool)))
    assert math.isnan(roc_auc(prob, np.ones(300, bool)))


def test_roc_auc_mask_and_sklearn():
    rng = np.random.default_rng(3)
    truth = rng.random((20, 20)) < 0.4
    prob = np.clip(rng.random((20, 20)) * 0.7 + 0.3 * truth, 0, 1)
    mask = rng.random((20, 20)) < 0.6
    expected = brute_force_auc(prob[mask], truth[mask])
    assert roc_auc(prob, truth, mask) == pytest.approx(expected, abs=1e-12)
    prob_outside = prob.copy()
    prob_outside[~mask] = 1.0 - truth[~mask]  # adversarial values outside the mask
    assert roc_auc(prob_outside, truth, mask) == pytest.approx(expected, abs=1e-12)
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        return
    assert roc_auc(prob, truth, mask) == pytest.approx(roc_auc_score(truth[mask], prob[mask]))


def test_hausdorff_hand_computed():
    a = np.zeros((5, 6), bool)
    b = np.zeros((5, 6), bool)
    a[0, 0] = True
    b[3, 4] = True
    assert hausdorff_distance(a, b) == pytest.approx(5.0)
    assert hausdorff_distance(a, b, spacing=(2.0, 1.0)) == pytest.approx(math.sqrt(36 + 16))
    # a square and the same square shifted by one row: HD = one row spacing
    sq = np.zeros((12, 12), bool)
    sq[3:8, 3:8] = True
    shifted = np.roll(sq, 1, axis=0)
    assert hausdorff_distance(sq, shifted, spacing=(0.7, 3.0)) == pytest.approx(0.7)
    assert hausdorff_distance(sq, sq) == 0.0
    empty = np.zeros_like(sq)
    assert hausdorff_distance(empty, empty) == 0.0
    assert hausdorff_distance(sq, empty) == math.inf
    assert hausdorff_distance(empty, sq, percentile=95) == math.inf
    # mask: a far-away false positive outside the mask does not count
    far = sq.copy()
    far[11, 11] = True
    mask = np.ones_like(sq)
    mask[10:, 10:] = False
    assert hausdorff_distance(far, sq) > 4
    assert hausdorff_distance(far, sq, mask=mask) == 0.0
    assert hausdorff_distance(sq, shifted, spacing=0.5) == pytest.approx(0.5)
    with pytest.raises(MetricInputError):
        hausdorff_distance(sq, sq, percentile=101)
    with pytest.raises(MetricInputError):
        hausdorff_distance(sq, shifted, spacing=(1.0, 0.0))
    with pytest.raises(MetricInputError, match="spacing"):
        hausdorff_distance(sq, shifted, spacing=(1.0, 1.0, 1.0))


@pytest.mark.parametrize(
    ("shape", "spacing"), [((40, 36), (0.6, 1.7)), ((14, 18, 16), (2.5, 0.8, 1.1))]
)
def test_hausdorff_matches_monai(shape, spacing):
    torch = pytest.importorskip("torch")
    mm = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(4)
    for _ in range(3):
        pred, truth = blobs(shape, rng, 0.2), blobs(shape, rng, 0.3)
        yp = torch.as_tensor(pred[None, None], dtype=torch.float32)
        yt = torch.as_tensor(truth[None, None], dtype=torch.float32)
        for percentile in (None, 95):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = mm.compute_hausdorff_distance(
                    yp, yt, include_background=True, percentile=percentile, spacing=spacing
                ).item()
            ours = hausdorff_distance(pred, truth, spacing, percentile or 100.0)
            assert ours == pytest.approx(ref, rel=1e-5), percentile
            assert hausdorff_distance(truth, pred, spacing, percentile or 100.0) == ours
        assert hausdorff_distance(pred, truth, spacing, 95) <= hausdorff_distance(
            pred, truth, spacing
        )


def test_evaluate_case_multiclass():
    rng = np.random.default_rng(5)
    truth = np.zeros((20, 20), int)
    truth[blobs((20, 20), rng, 0.3)] = 1
    truth[blobs((20, 20), rng, 0.2)] = 2
    pred = truth.copy()
    pred[:5] = 0
    prob = rng.random((3, 20, 20))
    prob /= prob.sum(0)
    res = evaluate_case(pred, truth, prob=prob, spacing=(1.0, 2.0))
    assert sorted(res["per_class"]) == [1, 2]
    for label in (1, 2):
        r = res["per_class"][label]
        ref = confusion_metrics(pred == label, truth == label)
        assert {k: r[k] for k in CONF_NAMES} == ref
        assert r["auc"] == roc_auc(prob[label], truth == label)
        assert r["hd"] == hausdorff_distance(pred == label, truth == label, (1.0, 2.0))
        assert r["hd95"] == hausdorff_distance(pred == label, truth == label, (1.0, 2.0), 95)
    assert res["mean"]["dice"] == pytest.approx(
        (res["per_class"][1]["dice"] + res["per_class"][2]["dice"]) / 2
    )
    # explicit labels incl. an absent class; hd off
    res = evaluate_case(pred, truth, labels=[3], hd=False)
    assert res["per_class"][3]["dice"] == 1.0 and "hd" not in res["per_class"][3]
    with pytest.raises(MetricInputError):
        evaluate_case(pred, truth, prob=prob[:2])  # no channel for class 2


def test_evaluate_case_binary_prob_mask_and_inf():
    truth = np.zeros((10, 10), int)
    truth[2:6, 2:6] = 1
    fov = np.ones((10, 10), bool)
    fov[8:] = False
    prob = np.where(truth == 1, 0.9, 0.1)
    res = evaluate_case(truth, truth, prob=prob[None], mask=fov)
    assert res["per_class"][1]["auc"] == 1.0 and res["per_class"][1]["hd"] == 0.0
    assert evaluate_case(truth, truth, prob=prob)["per_class"][1]["auc"] == 1.0  # (H, W) prob
    missed = evaluate_case(np.zeros_like(truth), truth)
    assert missed["per_class"][1]["hd"] == math.inf and missed["mean"]["hd"] == math.inf
    assert evaluate_case(np.zeros_like(truth), np.zeros_like(truth))["per_class"] == {}


def test_summarize_and_table():
    truth = np.zeros((10, 10), int)
    truth[2:6, 2:6] = 1
    good = truth.copy()
    good[2, 2] = 0
    cases = [
        evaluate_case(truth, truth),
        evaluate_case(good, truth),
        evaluate_case(np.zeros_like(truth), truth),
    ]
    s = summarize(cases)
    dices = [1.0, 30 / 31, 0.0]
    assert s["n_cases"] == 3
    assert s["dice"] == pytest.approx(np.mean(dices))
    assert s["per_class"][1]["dice"]["std"] == pytest.approx(np.std(dices))
    hd = s["per_class"][1]["hd"]
    assert hd["n"] == 2 and hd["n_inf"] == 1
    assert hd["mean"] == pytest.approx((0.0 + cases[1]["per_class"][1]["hd"]) / 2)
    # precision of the empty prediction is nan: nan-mean over the two defined cases
    assert s["per_class"][1]["precision"]["n"] == 2
    table = format_table(["a", "b", "c"], cases, label_names={1: "vessel"})
    lines = table.splitlines()
    assert lines[0].split() == ["case", "class", "dice", "iou", "sensitivity", "precision", "hd95"]
    assert len(lines) == 2 + 3 + 1
    assert lines[2].split()[:3] == ["a", "vessel", "1.0000"]
    assert lines[-1].startswith("mean") and f"{np.mean(dices):.4f}" in lines[-1]
    assert "(+1 inf)" in lines[-1] and "nan" in lines[4]
    with pytest.raises(MetricInputError):
        format_table(["a"], cases)


def test_roc_auc_large_input():
    rng = np.random.default_rng(6)
    truth = rng.random(2_000_000) < 0.1
    prob = rng.random(2_000_000).astype(np.float32)
    auc = roc_auc(prob, truth)
    assert 0.49 < auc < 0.51


def test_pooled_metrics_count_all_pixels_together():
    from napari_drunet.core.evaluation.metrics import PooledMetrics, confusion_metrics, roc_auc

    rng = np.random.default_rng(0)
    big_t = rng.random((40, 40)) > 0.8
    big_p = big_t ^ (rng.random((40, 40)) > 0.9)
    small_t = rng.random((6, 6)) > 0.5
    small_p = rng.random((6, 6)) > 0.5
    mask = rng.random((40, 40)) > 0.2
    probs = [rng.random((40, 40)).astype(np.float32), rng.random((1, 6, 6)).astype(np.float32)]
    pooled = PooledMetrics()
    pooled.add(big_p.astype(np.uint8), big_t.astype(np.uint8), mask=mask, prob=probs[0])
    pooled.add(small_p.astype(np.uint8), small_t.astype(np.uint8), prob=probs[1])
    res = pooled.result()[1]
    # same as one case made of all counted pixels
    all_p = np.concatenate([big_p[mask], small_p.ravel()])
    all_t = np.concatenate([big_t[mask], small_t.ravel()])
    for name, value in confusion_metrics(all_p, all_t).items():
        assert res[name] == pytest.approx(value), name
    assert res["auc"] == pytest.approx(roc_auc(np.concatenate([probs[0][mask],
                                                               probs[1].ravel()]), all_t))
    per_case_mean = (confusion_metrics(big_p, big_t, mask)["dice"]
                     + confusion_metrics(small_p, small_t)["dice"]) / 2
    assert abs(res["dice"] - per_case_mean) > 0.01  # the small case weighs less when pooled


def test_pooled_metrics_multiclass_and_missing_probabilities():
    from napari_drunet.core.evaluation.metrics import PooledMetrics

    pooled = PooledMetrics()
    pooled.add(np.array([1, 2, 0, 0]), np.array([1, 2, 2, 0]), prob=np.ones((3, 4)))
    pooled.add(np.array([0, 0]), np.array([0, 0]))  # no class present: all true negatives
    res = pooled.result()
    assert set(res) == {1, 2} and "auc" not in res[1]
    assert res[2]["dice"] == pytest.approx(2 / 3)
    assert res[2]["specificity"] == pytest.approx(1.0) and res[2]["accuracy"] == pytest.approx(5 / 6)
