"""Evaluation math in numpy, float64: FID, KID, and segmentation scores (accuracy, mIoU).

Kept free of TensorFlow so that it can be checked against independent computations and reused
with any feature extractor or segmenter.
"""

from __future__ import annotations

import numpy as np


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of [N, D] features, in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [N, D] with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

    The trace term is computed as the sum of square roots of the eigenvalues of the symmetric
    positive semi-definite S1^(1/2) S2 S1^(1/2), which has the same eigenvalues as S1 S2. This
    avoids a general (non-symmetric) matrix square root and its spurious imaginary parts; tiny
    negative eigenvalues from rounding are clipped to 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    root = _psd_sqrt(s1)
    m = root @ s2 @ root
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)


def fid(features_a, features_b) -> float:
    """Fréchet distance between two feature sets ([N, D] each)."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def _poly_kernel(x, y):
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x, y) -> float:
    """Unbiased MMD^2 with the polynomial kernel k(a, b) = (a.b / d + 1)^3 (Bińkowski et al. 2018)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kid(features_a, features_b, subsets: int = 100, subset_size: int = 1000, seed: int = 0):
    """Kernel Inception Distance: mean and std of the unbiased MMD^2 over random subsets
    (without replacement within a subset; the subset size is capped by the smaller set)."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(a[rng.choice(len(a), size, replace=False)],
                          b[rng.choice(len(b), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def confusion_matrix(pred, target, num_classes: int, ignore_ids=(255,)) -> np.ndarray:
    """[num_classes, num_classes] counts, rows = ground truth, columns = prediction. Pixels whose
    ground truth is in ``ignore_ids`` (dontcare) or outside [0, num_classes) are not counted."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"prediction and target differ in size: {pred.size} vs {target.size}")
    keep = (target >= 0) & (target < num_classes)
    for i in ignore_ids:
        keep &= target != i
    pred, target = pred[keep], target[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted ids must be in [0, {num_classes}), got {pred.min()}..{pred.max()}")
    return np.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_scores(conf: np.ndarray) -> dict:
    """Pixel accuracy, mean class accuracy, per-class IoU and mIoU from a confusion matrix.

    A class absent from the ground truth *and* never predicted has no IoU (NaN) and is left out
    of the mean; absent from the ground truth but predicted, its IoU is 0 (false positives).
    """
    conf = np.asarray(conf, np.float64)
    tp = np.diag(conf)
    gt = conf.sum(1)
    pred = conf.sum(0)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        class_acc = np.where(gt > 0, tp / gt, np.nan)
    total = conf.sum()
    return {
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "mean_class_accuracy": float(np.nanmean(class_acc)) if np.any(gt > 0) else float("nan"),
        "per_class_iou": iou.tolist(),
        "miou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
    }
