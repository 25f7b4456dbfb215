"""The fast J/F (windows, bit-packed stacks) against the plain per-frame definitions (``eval_reference``).

Exhaustive where it is cheap (every pair of masks of every frame shape up to 6 pixels, every 3x3 and 2x4 mask
against masks that touch each edge and corner), then random frames: a seeded loop over many small masks and
``hypothesis`` strategies that favour the border cases (objects touching the last row / column, one-pixel objects,
void on the boundary, radius 1 to 3). Every pair of masks is one frame of a single sequence call, so thousands of
frames cost one call of the fast path.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from eval_reference import ref_boundary_map, ref_f, ref_j
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparrow.eval import metrics
from sparrow.eval.metrics import BoundaryCache, boundary_f, jaccard, jf_mean, region_and_boundary, seg2bmap

SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def all_masks(h: int, w: int) -> np.ndarray:
    """Every boolean mask of an ``h x w`` frame: ``[2 ** (h * w), h, w]``."""
    n = h * w
    codes = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n)
    return (codes & 1).astype(bool).reshape(-1, h, w)


def assert_matches_reference(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008
) -> None:
    """Fast J and F of every frame equal the reference's (to 1e-12); the first differing frame is printed."""
    j, f = region_and_boundary(pred, gt, void, bound_th)
    voids = [None] * len(gt) if void is None else list(void)
    rj = np.array([ref_j(p, g, v) for p, g, v in zip(pred, gt, voids)])
    rf = np.array([ref_f(p, g, v, bound_th) for p, g, v in zip(pred, gt, voids)])
    bad = np.flatnonzero((np.abs(j - rj) > 1e-12) | (np.abs(f - rf) > 1e-12))
    assert bad.size == 0, (
        f"{bad.size} of {len(gt)} frames differ; first: pred\n{pred[bad[0]].astype(int)}\n"
        f"gt\n{gt[bad[0]].astype(int)}\n"
        f"fast J,F {j[bad[0]]}, {f[bad[0]]}; reference {rj[bad[0]]}, {rf[bad[0]]}"
    )


SMALL_SHAPES = [(h, w) for h in range(1, 7) for w in range(1, 7) if h * w <= 6]


@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=[f"{h}x{w}" for h, w in SMALL_SHAPES])
def test_every_pair_of_small_masks(shape: tuple[int, int]) -> None:
    masks = all_masks(*shape)
    a, b = (idx.ravel() for idx in np.meshgrid(np.arange(len(masks)), np.arange(len(masks)), indexing="ij"))
    assert_matches_reference(masks[a], masks[b])


def _edge_masks(h: int, w: int) -> np.ndarray:
    """Masks that touch every edge and corner: single pixels, full rows / columns, the full and empty frame."""
    out = [np.zeros((h, w), bool), np.ones((h, w), bool)]
    for y, x in itertools.product((0, h // 2, h - 1), (0, w // 2, w - 1)):
        m = np.zeros((h, w), bool)
        m[y, x] = True
        out.append(m)
    for y in (0, h - 1):
        m = np.zeros((h, w), bool)
        m[y] = True
        out.append(m)
    for x in (0, w - 1):
        m = np.zeros((h, w), bool)
        m[:, x] = True
        out.append(m)
    return np.stack(out)


@pytest.mark.parametrize("shape", [(3, 3), (2, 4), (4, 2)])
def test_every_mask_against_edge_masks(shape: tuple[int, int]) -> None:
    masks, edges = all_masks(*shape), _edge_masks(*shape)
    a, b = (idx.ravel() for idx in np.meshgrid(np.arange(len(masks)), np.arange(len(edges)), indexing="ij"))
    assert_matches_reference(masks[a], edges[b])
    assert_matches_reference(edges[b], masks[a])


def test_every_small_mask_with_void_and_a_wider_radius() -> None:
    masks = all_masks(2, 3)
    rng = np.random.default_rng(0)
    a, b = (idx.ravel() for idx in np.meshgrid(np.arange(len(masks)), np.arange(len(masks)), indexing="ij"))
    void = rng.random((len(a), 2, 3)) < 0.25
    assert_matches_reference(masks[a], masks[b], void)
    assert_matches_reference(masks[a], masks[b], None, bound_th=2)


def test_many_random_small_masks() -> None:
    """2000 frames of 1..12 x 1..20 pixels: noise and boxes, some touching the last row and column."""
    rng = np.random.default_rng(2024)
    for h in range(1, 13):
        w = int(rng.integers(1, 21))
        t = 80
        pred = rng.random((t, h, w)) < rng.uniform(0.05, 0.6, size=(t, 1, 1))
        gt = np.zeros((t, h, w), bool)
        for i in range(t):
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            gt[i, y0 : y0 + int(rng.integers(1, h + 1)), x0 : x0 + int(rng.integers(1, w + 1))] = True
        assert_matches_reference(pred, gt)
        assert_matches_reference(gt, pred)


@st.composite
def mask_pairs(draw):
    """A pair of mask sequences ``[T, H, W]`` (and maybe void), built from boxes that like the frame's edges."""
    t = draw(st.integers(1, 3))
    h = draw(st.integers(1, 40))
    w = draw(st.integers(1, 70))

    def one() -> np.ndarray:
        m = np.zeros((t, h, w), bool)
        for i in range(t):
            for _ in range(draw(st.integers(0, 3))):
                y0 = draw(st.sampled_from([0, h - 1, draw(st.integers(0, h - 1))]))
                x0 = draw(st.sampled_from([0, w - 1, draw(st.integers(0, w - 1))]))
                y1 = draw(st.sampled_from([h, y0 + 1, draw(st.integers(y0 + 1, h))]))
                x1 = draw(st.sampled_from([w, x0 + 1, draw(st.integers(x0 + 1, w))]))
                m[i, y0:y1, x0:x1] = draw(st.booleans()) or not m[i, y0:y1, x0:x1].any()
        return m

    pred, gt = one(), one()
    void = one() if draw(st.booleans()) else None
    return pred, gt, void


@SETTINGS
@given(mask_pairs())
def test_random_boxes_at_the_borders(case) -> None:
    pred, gt, void = case
    assert_matches_reference(pred, gt, void)


@SETTINGS
@given(
    st.integers(1, 30).flatmap(
        lambda h: st.tuples(
            st.just(h),
            st.integers(1, 30),
            st.integers(0, 2**31 - 1),
            st.sampled_from([0.01, 0.1, 0.5, 0.9]),
            st.sampled_from([0.008, 1, 2, 3]),
        )
    )
)
def test_random_noise_masks_and_radii(params) -> None:
    h, w, seed, density, bound_th = params
    rng = np.random.default_rng(seed)
    pred, gt = rng.random((2, 2, h, w)) < density
    assert_matches_reference(pred, gt, bound_th=bound_th)


# ---------------------------------------------------------------- the public per-frame helpers on sequences


@SETTINGS
@given(mask_pairs())
def test_jaccard_and_boundary_map_of_sequences(case) -> None:
    pred, gt, void = case
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty union is handled, not a 0/0 warning
        j = jaccard(pred, gt, void)
    voids = [None] * len(gt) if void is None else list(void)
    assert j.shape == (len(gt),) and j.tolist() == [ref_j(p, g, v) for p, g, v in zip(pred, gt, voids)]
    assert float(jaccard(pred[0], gt[0])) == ref_j(pred[0], gt[0]) and jaccard(pred[0], gt[0]).ndim == 0
    as_bytes = pred.astype(np.uint8) * 255  # any nonzero value is foreground
    b = seg2bmap(as_bytes)
    assert b.dtype == bool and b.shape == pred.shape
    assert all(np.array_equal(b[t], ref_boundary_map(pred[t])) for t in range(len(pred)))


def test_helpers_on_degenerate_shapes() -> None:
    assert seg2bmap(np.zeros((0, 3), bool)).shape == (0, 3) and seg2bmap(np.zeros((2, 3, 0), bool)).shape == (2, 3, 0)
    column = np.array([[1], [0], [1], [1]], bool)  # one column: only the south rule applies
    assert seg2bmap(column).tolist() == ref_boundary_map(column).tolist() == [[True], [True], [False], [False]]
    row = np.array([[1, 1, 0, 1]], bool)  # one row: only the east rule
    assert seg2bmap(row).tolist() == ref_boundary_map(row).tolist()
    both_empty = np.zeros((3, 4, 5), bool)
    assert jaccard(both_empty, both_empty).tolist() == [1.0, 1.0, 1.0]
    one = np.zeros((4, 5), bool)
    one[1, 1] = True
    assert float(jaccard(one, both_empty[0])) == 0.0 and float(jaccard(one, one, void=one)) == 1.0  # all void


@pytest.mark.parametrize(
    "pred, gt, void, message",
    [
        (
            np.zeros((2, 3, 4, 5)),
            np.zeros((2, 3, 4, 5)),
            None,
            r"^expected masks \[H, W\] or \[T, H, W\], got \(2, 3, 4, 5\)$",
        ),
        (np.zeros(5), np.zeros(5), None, r"^expected masks \[H, W\] or \[T, H, W\], got \(5,\)$"),
        (
            np.zeros((3, 4)),
            np.zeros((3, 4)),
            np.zeros((4, 3)),
            r"^void \(4, 3\) and annotation \(3, 4\) shapes differ$",
        ),
    ],
)
def test_jaccard_rejects_bad_shapes(pred, gt, void, message) -> None:
    with pytest.raises(ValueError, match=message):
        jaccard(pred, gt, void)


def test_boundary_f_radius_cache_span_and_jf_mean() -> None:
    rng = np.random.default_rng(3)
    pred, gt = rng.random((2, 3, 20, 30)) < 0.3
    assert boundary_f(pred, gt, bound_th=3).tolist() == [ref_f(p, g, None, 3) for p, g in zip(pred, gt)]
    assert boundary_f(pred, gt).tolist() != boundary_f(pred, gt, bound_th=3).tolist()  # the radius is used
    masks = np.zeros((3, 6, 7), bool)
    masks[1, 2:4, 3:6] = True
    cache = BoundaryCache(masks)
    assert cache.span(0) is None and cache.span(1) == (2, 3, 3, 5) and cache.span(2) is None
    with pytest.raises(ValueError, match=r"^expected masks \[T, H, W\], got \(6, 7\)$"):
        BoundaryCache(masks[0])
    assert jf_mean(0.2, 0.6) == pytest.approx(0.4)


def test_integer_masks_count_every_nonzero_value_as_foreground() -> None:
    """Label-like masks (values 1, 2, 255) score as their boolean versions, in the fast path too."""
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 3, size=(4, 9, 13)).astype(np.uint8)
    labels[1] = 0
    labels[2, :4] = 255
    labels[3] = 0
    labels[3, 1, 3], labels[3, 5, 7] = 1, 2  # the first foreground row holds only the smaller value
    gt = rng.random((4, 9, 13)) < 0.4
    j, f = region_and_boundary(labels, gt)
    rj, rf = region_and_boundary(labels > 0, gt)
    assert j.tolist() == rj.tolist() and f.tolist() == rf.tolist()
    assert f.tolist() == [ref_f(m > 0, g) for m, g in zip(labels, gt)]


def reference_chunks(windows: list[tuple[int, int, int, int]], guard: int, budget: int) -> list[list[int]]:
    """Greedy grouping by the stated cost: a group's stacked rows (window rows + guard + 1 each) times its widest
    row (8 x bytes + guard), doubled for prediction and annotation, stays within ``budget`` unless it is one window."""
    groups: list[list[int]] = []
    for i, (ya, yb, ba, bb) in enumerate(windows):
        if groups:
            members = [windows[k] for k in groups[-1]] + [windows[i]]
            rows = sum(w[1] - w[0] + guard + 1 for w in members)
            width = max(8 * (w[3] - w[2]) + guard for w in members)
            if 2 * rows * width <= budget:
                groups[-1].append(i)
                continue
        groups.append([i])
    return groups


def test_chunks_group_windows_within_the_budget() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        windows = []
        for _ in range(n):
            ya, ba = int(rng.integers(0, 50)), int(rng.integers(0, 6))
            windows.append((ya, ya + int(rng.integers(1, 60)), ba, ba + int(rng.integers(1, 8))))
        guard = int(rng.integers(1, 9))
        budget = int(rng.choice([1 << 10, 1 << 12, 1 << 14]))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(metrics, "_CHUNK_BITS", budget)
            assert metrics._chunks(windows, guard) == reference_chunks(windows, guard, budget)


def test_a_chunk_may_fill_its_budget_exactly() -> None:
    windows = [(0, 7, 0, 1), (3, 10, 2, 3)]  # guard 1: each (7 + 1 + 1) rows x (8 + 1) columns
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "_CHUNK_BITS", 2 * 18 * 9)  # both together cost exactly the budget: one chunk
        assert metrics._chunks(windows, 1) == [[0, 1]]
        mp.setattr(metrics, "_CHUNK_BITS", 2 * 18 * 9 - 1)
        assert metrics._chunks(windows, 1) == [[0], [1]]


def test_each_window_is_counted_once_in_its_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a small budget, every chunk goes to the bit stack once, holding exactly its own windows (and no void
    pieces when there is no void), and the results still equal the reference."""
    rng = np.random.default_rng(9)
    pred, gt = rng.random((2, 12, 30, 40)) < 0.2
    pred[3] = gt[3] = False  # a frame with nothing: no window
    calls = []
    real = metrics.stack_counts

    def spy(shapes, p, g, void, edges, plan):
        calls.append((len(shapes), len(p), len(g), void is None, len(edges)))
        return real(shapes, p, g, void, edges, plan)

    monkeypatch.setattr(metrics, "_CHUNK_BITS", 1 << 13)
    monkeypatch.setattr(metrics, "stack_counts", spy)
    j, f = region_and_boundary(pred, gt)
    assert len(calls) > 2 and sum(c[0] for c in calls) == 11
    assert all(c[0] == c[1] == c[2] == c[4] and c[3] for c in calls)
    rj, rf = np.array([ref_j(p, g) for p, g in zip(pred, gt)]), np.array([ref_f(p, g) for p, g in zip(pred, gt)])
    assert np.abs(j - rj).max() <= 1e-12 and np.abs(f - rf).max() <= 1e-12


def test_fast_path_names_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"^prediction \(2, 3, 4\) and annotation \(2, 3, 5\) shapes differ$"):
        region_and_boundary(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r"^void \(2, 4, 3\) and annotation \(2, 3, 4\) shapes differ$"):
        region_and_boundary(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), np.zeros((2, 4, 3)))
