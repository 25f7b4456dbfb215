"""J, F and statistics: hand-made cases for every convention, and parity with the plain per-frame reference loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eval_reference import ref_f, ref_j, ref_sequence, ref_statistics

from sparrow.eval.metrics import (
    bound_radius,
    boundary_f,
    decay_bins,
    decay_differs,
    jaccard,
    region_and_boundary,
    seg2bmap,
    statistics,
)


def frame(h: int = 30, w: int = 40) -> np.ndarray:
    return np.zeros((h, w), dtype=bool)


def test_both_empty_scores_one() -> None:
    j, f = region_and_boundary(frame()[None], frame()[None])
    assert j.tolist() == [1.0] and f.tolist() == [1.0]


def test_prediction_empty_and_annotation_empty_score_zero() -> None:
    obj = frame()
    obj[5:15, 5:20] = True
    assert float(jaccard(frame(), obj)) == 0.0 and float(boundary_f(frame(), obj)) == 0.0  # nothing predicted
    assert float(jaccard(obj, frame())) == 0.0 and float(boundary_f(obj, frame())) == 0.0  # target absent


def test_identical_masks_score_one_and_full_frame_has_no_boundary() -> None:
    obj = frame()
    obj[3:9, 4:30] = True
    assert float(jaccard(obj, obj)) == 1.0 and float(boundary_f(obj, obj)) == 1.0
    full = ~frame()
    assert not seg2bmap(full).any()  # the BSDS rule: a full mask has no boundary at all
    assert float(boundary_f(full, full)) == 1.0


def test_boundary_map_of_one_pixel_is_half_a_pixel_towards_the_origin() -> None:
    m = frame(8, 8)
    m[4, 5] = True
    b = seg2bmap(m)
    assert sorted(zip(*np.nonzero(b))) == [(3, 4), (3, 5), (4, 4), (4, 5)]
    corner = frame(8, 8)
    corner[7, 7] = True  # bottom-right pixel: its own boundary bit is cleared
    assert sorted(zip(*np.nonzero(seg2bmap(corner)))) == [(6, 6), (6, 7), (7, 6)]


def test_one_pixel_objects() -> None:
    gt, near, far = frame(), frame(), frame()  # 30x40: radius ceil(0.008 * 50) = 1
    gt[5, 5] = True
    near[5, 6] = True
    far[5, 20] = True
    assert bound_radius(30, 40) == 1
    assert float(jaccard(gt, gt)) == 1.0 and float(boundary_f(gt, gt)) == 1.0
    # adjacent pixel: no overlap, but every boundary pixel is within 1 px of the other boundary
    assert float(jaccard(near, gt)) == 0.0 and float(boundary_f(near, gt)) == 1.0
    assert float(boundary_f(far, gt)) == 0.0


def test_void_pixels_are_ignored() -> None:
    gt, pred, void = frame(), frame(), frame()
    gt[5:15, 5:15] = True
    pred[5:15, 5:15] = True
    pred[20:25, 20:30] = True  # a false positive ...
    void[18:27, 18:32] = True  # ... entirely inside void
    assert float(jaccard(pred, gt)) == pytest.approx(100 / 150)
    assert float(jaccard(pred, gt, void)) == 1.0
    assert float(boundary_f(pred, gt, void)) == 1.0
    assert float(boundary_f(pred, gt)) < 1.0


def test_non_square_frames_and_radius() -> None:
    assert bound_radius(480, 854) == 8
    assert bound_radius(10, 100) == 1
    h, w = 48, 85  # radius ceil(0.008 * 97.6) = 1
    gt = np.zeros((h, w), dtype=bool)
    gt[10:14, 20:40] = True
    down = np.roll(gt, 1, axis=0)
    assert float(jaccard(down, gt)) == pytest.approx(60 / 100)
    assert float(boundary_f(down, gt)) == 1.0  # every boundary pixel moved by 1 <= radius
    far = np.roll(gt, 3, axis=0)
    assert 0.0 < float(boundary_f(far, gt)) < 1.0


def test_recall_and_mean() -> None:
    mean, recall, _ = statistics(np.array([0.4, 0.6, 0.51, 0.5]))
    assert mean == pytest.approx(0.5025) and recall == 0.5  # 0.5 is not above 0.5


def test_decay_bins_short_sequence() -> None:
    # n = 10: linspace(1, 10, 5) = 1, 3.25, 5.5, 7.75, 10 -> round(+1e-10) - 1 = 0, 2, 5, 7, 9
    assert decay_bins(10) == [(0, 3), (2, 6), (5, 8), (7, 10)]
    values = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0.5])
    assert statistics(values)[2] == pytest.approx(1.0 - np.mean([0, 0, 0.5]))


def test_decay_beyond_256_frames_legacy_vs_correct() -> None:
    n = 400  # edges 0, 100, 200, 299, 399; the uint8 cast turns 299, 399 into 43, 143
    values = np.zeros(n)
    values[:101] = 1.0
    assert not decay_differs(256) and decay_differs(n)
    assert decay_bins(n)[3] == (299, 400) and decay_bins(n, legacy_decay=True)[3] == (43, 144)
    assert statistics(values)[2] == pytest.approx(1.0)
    assert statistics(values, legacy_decay=True)[2] == pytest.approx(1.0 - 58 / 101)
    assert ref_statistics(values, legacy_decay=True)[2] == pytest.approx(1.0 - 58 / 101)
    short = np.linspace(0, 1, 104)
    assert statistics(short) == statistics(short, legacy_decay=True)  # DAVIS-length sequences are unaffected
    assert math.isnan(statistics(np.r_[np.ones(76), np.zeros(224)], legacy_decay=True)[2])  # n=300: empty last bin


def random_masks(rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:
        return rng.random((t, h, w)) < rng.uniform(0.05, 0.9)
    out = np.zeros((t, h, w), dtype=bool)
    for i in range(t):
        for _ in range(int(rng.integers(0, 3))):
            y, x = rng.integers(0, h), rng.integers(0, w)
            out[i, y : y + rng.integers(1, h + 1), x : x + rng.integers(1, w + 1)] = True
    return out


def test_parity_with_reference_loop_on_random_masks() -> None:
    rng = np.random.default_rng(1234)
    worst = 0.0
    for case in range(40):
        t, h, w = int(rng.integers(1, 5)), int(rng.integers(1, 70)), int(rng.integers(1, 90))
        if case == 0:
            h, w = 120, 214  # radius 2
        pred, gt = random_masks(rng, t, h, w), random_masks(rng, t, h, w)
        void = rng.random((t, h, w)) < 0.05 if case % 3 == 0 else None
        rj, rf = ref_sequence(pred, gt, void)
        j, f = region_and_boundary(pred, gt, void)
        worst = max(worst, float(np.abs(rj - j).max()), float(np.abs(rf - f).max()))
        v = rng.random(int(rng.integers(1, 600)))
        assert np.allclose(ref_statistics(v), statistics(v), equal_nan=True, atol=1e-12)
        assert np.allclose(ref_statistics(v, True), statistics(v, True), equal_nan=True, atol=1e-12)
    assert worst <= 1e-9


def test_single_frame_api_matches_reference() -> None:
    rng = np.random.default_rng(7)
    pred, gt = random_masks(rng, 1, 33, 57)[0], random_masks(rng, 1, 33, 57)[0]
    assert float(jaccard(pred, gt)) == ref_j(pred, gt)
    assert float(boundary_f(pred, gt)) == ref_f(pred, gt)


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        jaccard(frame(10, 10), frame(10, 11))
