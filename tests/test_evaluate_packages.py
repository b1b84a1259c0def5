"""memcurv.evaluate's metrics come from scikit-learn, scikit-image and scipy: they give the numbers memcurv's earlier
hand-written versions gave (frozen below as the reference, to 1e-9) on fixed inputs, ties and edge cases included."""
import numpy as np
import pytest
from scipy.stats import rankdata

from memcurv.evaluate.metrics import auroc, average_precision, bootstrap_ci, otsu_thresholds, tpr_at_fpr


# --- memcurv 0.1's hand-written metrics, verbatim: the numbers the package versions must reproduce ---
def old_auroc(scores, positive):
    s, y = np.ravel(scores), np.ravel(positive).astype(bool)
    n_pos, n_neg = y.sum(), (~y).sum()
    if not n_pos or not n_neg: return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def old_average_precision(scores, positive):
    s, y = np.ravel(scores), np.ravel(positive).astype(bool)
    if not y.any(): return float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last]; precision = tp / (last + 1); recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def old_tpr_at_fpr(scores, positive, fpr):
    s, y = np.ravel(scores), np.ravel(positive).astype(bool)
    neg = np.sort(s[~y])[::-1]
    k = int(np.floor(fpr * len(neg)))
    return 1.0 if k >= len(neg) else float((s[y] > neg[k]).mean())


def old_otsu_thresholds(scores, bins=256):
    out = []
    for img in np.asarray(scores):
        hist, edges = np.histogram(img, bins=bins, range=(0, 1))
        p = hist / max(hist.sum(), 1)
        centers = (edges[:-1] + edges[1:]) / 2
        w0 = np.cumsum(p); mu = np.cumsum(p * centers)
        between = (mu[-1] * w0 - mu) ** 2 / np.maximum(w0 * (1 - w0), 1e-12)
        out.append(edges[np.argmax(between) + 1])
    return np.array(out)


def old_bootstrap_ci(statistic, n_samples, n_boot=1000, level=0.95, seed=0):
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n_samples, n_samples)) for _ in range(n_boot)])
    values = values[np.isfinite(values)]
    if not len(values): return (float("nan"), float("nan"))
    return tuple(float(q) for q in np.quantile(values, [(1 - level) / 2, (1 + level) / 2]))


def cases():
    "Fixed inputs: continuous scores, heavy ties (quantised), a perfect and an inverted detector, pixel-sized arrays."
    rng = np.random.default_rng(16)
    for n, quant in ((20, None), (37, 4), (500, None), (500, 10), (4096, 32)):
        y = rng.random(n) < 0.3
        s = rng.normal(size=n) + 1.2 * y
        if quant: s = np.round(s * quant / 4) / quant
        yield s, y
    y = np.r_[np.zeros(100, bool), np.ones(10, bool)]
    yield y.astype(float), y
    yield -y.astype(float), y


@pytest.mark.parametrize("k", range(7))
def test_detection_metrics_agree_with_the_hand_written_ones(k):
    s, y = list(cases())[k]
    assert auroc(s, y) == pytest.approx(old_auroc(s, y), abs=1e-9)
    assert average_precision(s, y) == pytest.approx(old_average_precision(s, y), abs=1e-9)
    for f in (0.0, 0.01, 0.03, 0.1, 0.5, 1.0):
        assert tpr_at_fpr(s, y, f) == pytest.approx(old_tpr_at_fpr(s, y, f), abs=1e-9), f


def test_detection_metrics_without_both_classes_are_nan():
    s = np.arange(5.0)
    assert np.isnan(auroc(s, np.ones(5))) and np.isnan(auroc(s, np.zeros(5)))
    assert np.isnan(average_precision(s, np.zeros(5)))


def test_otsu_agrees_with_the_hand_written_one():
    rng = np.random.default_rng(3)
    imgs = np.clip(np.concatenate([rng.beta(0.6, 0.6, (4, 32, 32)), rng.random((3, 16, 16)).repeat(2, 1).repeat(2, 2) ** 3,
                                   np.where(rng.random((3, 32, 32)) < 0.2, 0.85, 0.1) + 0.02 * rng.normal(size=(3, 32, 32))]), 0, 1)
    new, old = otsu_thresholds(imgs), old_otsu_thresholds(imgs)
    np.testing.assert_allclose(new, old, rtol=0, atol=1e-9)
    assert len(set(np.round(new, 6))) > 3     # the inputs reach different thresholds: the agreement is not one value


def test_bootstrap_agrees_with_the_hand_written_one():
    x = np.random.default_rng(1).normal(size=41)
    masks = np.random.default_rng(2).random((12, 8, 8)) < 0.4
    pred = masks ^ (np.random.default_rng(5).random((12, 8, 8)) < 0.2)
    iou = lambda b: (pred[b] & masks[b]).sum() / (pred[b] | masks[b]).sum()
    for stat, n in ((lambda b: x[b].mean(), 41), (iou, 12)):
        for n_boot, level, seed in ((200, 0.95, 0), (1000, 0.9, 7)):
            np.testing.assert_allclose(bootstrap_ci(stat, n, n_boot, level, seed), old_bootstrap_ci(stat, n, n_boot, level, seed),
                                       rtol=0, atol=1e-9)
    assert bootstrap_ci(lambda b: x[b].mean(), 1) == old_bootstrap_ci(lambda b: x[b].mean(), 1) == (x[0], x[0])


def test_otsu_of_a_flat_image_is_the_earlier_choice():
    flat = np.stack([np.zeros((8, 8)), np.full((8, 8), 0.5), np.ones((8, 8))])
    np.testing.assert_allclose(otsu_thresholds(flat), old_otsu_thresholds(flat), rtol=0, atol=1e-12)
