"""FID / KID / segmentation math against independent computations and hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from spade_tf import metrics


def _scipy_fid(a, b):
    """The textbook form with scipy's general matrix square root (independent of ours)."""
    linalg = pytest.importorskip("scipy.linalg")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        assert np.abs(covmean.imag).max() < 1e-6 * np.abs(covmean.real).max()
        covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 32))
    b = rng.standard_normal((400, 32)) @ rng.standard_normal((32, 32)) * 0.5 + 0.3
    ours, ref = metrics.fid(a, b), _scipy_fid(a, b)
    assert abs(ours - ref) <= 1e-6 * abs(ref), (ours, ref)


def test_fid_self_is_zero_and_grows_with_noise():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((600, 16)) @ rng.standard_normal((16, 16))
    assert abs(metrics.fid(a, a)) < 1e-8
    noise = rng.standard_normal(a.shape)
    values = [metrics.fid(a, a + s * noise) for s in (0.1, 0.3, 1.0, 3.0)]
    assert all(x < y for x, y in zip(values, values[1:])), values


def test_fid_rank_deficient_covariance_is_real_and_finite():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((10, 64))  # N < D: singular covariances
    b = rng.standard_normal((10, 64)) + 1
    v = metrics.fid(a, b)
    assert np.isfinite(v) and v > 0


def test_kid_matches_naive_loops():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((20, 5)), rng.standard_normal((25, 5)) + 0.5
    d = x.shape[1]

    def k(u, v):
        return (float(np.dot(u, v)) / d + 1) ** 3
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    ref = xx + yy - 2 * xy
    assert abs(metrics.mmd2_unbiased(x, y) - ref) <= 1e-10 * abs(ref)
    # Subsets capped at the smaller set's size; with equal sizes every subset is a permutation
    # of the full sets, and MMD does not depend on order.
    mean, std = metrics.kid(x, y[:20], subsets=5, subset_size=100)
    assert mean == pytest.approx(metrics.mmd2_unbiased(x, y[:20]), rel=1e-12) and std < 1e-12


def test_kid_near_zero_for_the_same_distribution():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    same, _ = metrics.kid(a, b, subsets=20, subset_size=200)
    shifted, _ = metrics.kid(a, b + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 0.05 < shifted


def test_confusion_and_miou_hand_built():
    # 3 classes; 255 = dontcare. Ground truth has no class 2; the prediction uses it once.
    target = np.array([[0, 0, 1, 1], [0, 255, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 1, 2]])
    conf = metrics.confusion_matrix(pred, target, 3)
    # rows = truth: class 0 -> predicted 0,1,0 ; class 1 -> 1,1,1,2 ; dontcare pixel ignored
    np.testing.assert_array_equal(conf, [[2, 1, 0], [0, 3, 1], [0, 0, 0]])
    s = metrics.segmentation_scores(conf)
    assert s["pixel_accuracy"] == pytest.approx(5 / 7)
    assert s["per_class_iou"][0] == pytest.approx(2 / 3)  # tp 2, union 3 + 2 - 2
    assert s["per_class_iou"][1] == pytest.approx(3 / 5)  # tp 3, union 4 + 4 - 3
    assert s["per_class_iou"][2] == 0.0  # absent from the truth but predicted: a false positive
    assert s["miou"] == pytest.approx((2 / 3 + 3 / 5 + 0) / 3)
    assert s["mean_class_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)


def test_class_absent_everywhere_is_left_out():
    conf = metrics.confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 1]), 4)
    s = metrics.segmentation_scores(conf)
    assert np.isnan(s["per_class_iou"][2]) and np.isnan(s["per_class_iou"][3])
    assert s["miou"] == 1.0


def test_bad_predictions_are_named():
    with pytest.raises(ValueError, match=r"predicted ids must be in \[0, 3\)"):
        metrics.confusion_matrix(np.array([5]), np.array([0]), 3)
