"""Bit-packed stacked windows: boundary map, dilation, counts and the occupied-box scan against numpy / OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from eval_reference import ref_f, ref_sequence

from sparrow.eval import metrics
from sparrow.eval.bitplan import dilation_plan
from sparrow.eval.bitstack import Stack, pack_rows, stack_counts
from sparrow.eval.metrics import BoundaryCache, _disk_kernel, _scan, region_and_boundary, seg2bmap


def unpack(layout: Stack, bits: np.ndarray, t: int) -> np.ndarray:
    """Window t of a packed stack → bool [h, w]."""
    start, h, w = layout.starts[t], layout.heights[t], layout.widths[t]
    rows = bits[start : start + h].view(np.uint8)
    return np.unpackbits(rows, axis=1, bitorder="little")[:, :w].astype(bool)


def random_windows(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 150))
        out.append(rng.random((h, w)) < rng.choice([0.02, 0.3, 0.8]))
    return out


@pytest.mark.parametrize("kernel_kind", ["disk", "rect", "random"])
def test_dilation_of_stacked_windows_equals_cv2(kernel_kind: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(12):
        if kernel_kind == "disk":
            kernel = _disk_kernel(int(rng.integers(0, 9)))
        elif kernel_kind == "rect":
            kernel = np.ones((2 * int(rng.integers(0, 4)) + 1, 2 * int(rng.integers(0, 5)) + 1), np.uint8)
        else:
            kernel = (rng.random((int(rng.integers(1, 7)), int(rng.integers(1, 7)))) < 0.5).astype(np.uint8)
            kernel[0, 0] = 1
        plan = dilation_plan(kernel)
        if kernel_kind != "random":
            assert plan.levels  # disks and rectangles take the nested-rectangle path
        wins = random_windows(rng, 5)
        height = max(abs(dy) for dy, _ in plan.symmetric_rows + plan.other_offsets)
        layout = Stack.build([x.shape for x in wins], guard=plan.reach, gap=height)
        dil = layout.dilate(layout.pack([[(0, pack_rows(x))] for x in wins]), plan)
        for t, x in enumerate(wins):
            np.testing.assert_array_equal(unpack(layout, dil, t), cv2.dilate(x.view(np.uint8), kernel) > 0)


def test_disk_plans_are_nested_rectangles() -> None:
    plan = dilation_plan(_disk_kernel(8))
    assert plan.levels == ((0, 8), (3, 7), (5, 6), (6, 5), (7, 3), (8, 0)) and plan.reach == 8
    assert dilation_plan(_disk_kernel(0)).levels == ((0, 0),)
    ring = np.ones((3, 3), np.uint8)
    ring[1, 1] = 0  # a row that is not one contiguous run: no rectangle plan
    assert dilation_plan(ring).levels == () and len(dilation_plan(ring).other_offsets) == 2


def test_boundary_of_stacked_full_frames_equals_seg2bmap() -> None:
    rng = np.random.default_rng(4)
    wins = random_windows(rng, 8)
    wins[0][:] = True  # full frame: no boundary at all
    wins[1][:] = False
    layout = Stack.build([x.shape for x in wins], guard=1, gap=1)
    bits = layout.pack([[(0, pack_rows(x))] for x in wins])
    # every window is a whole frame: it meets the frame's first row, last row and last column
    bounds = layout.boundary(bits, [(True, True, x.shape[1] - 1) for x in wins])
    for t, x in enumerate(wins):
        np.testing.assert_array_equal(unpack(layout, bounds, t), seg2bmap(x))
    assert layout.counts(bounds).tolist() == [int(seg2bmap(x).sum()) for x in wins]


def test_stack_counts_of_one_pair() -> None:
    pred = np.zeros((6, 10), bool)
    gt = np.zeros((6, 10), bool)
    pred[1:4, 1:5] = True
    gt[2:5, 2:6] = True
    plan = dilation_plan(_disk_kernel(1))
    c = stack_counts([(6, 16)], [[(0, pack_rows(pred))]], [[(0, pack_rows(gt))]], None, [(True, True, 9)], plan)
    assert int(c["inter"][0]) == int((pred & gt).sum()) and int(c["union"][0]) == int((pred | gt).sum())
    pb, gb = seg2bmap(pred), seg2bmap(gt)
    k = _disk_kernel(1)
    assert int(c["n_pred"][0]) == int(pb.sum()) and int(c["n_gt"][0]) == int(gb.sum())
    assert int(c["pred_match"][0]) == int((pb & (cv2.dilate(gb.view(np.uint8), k) > 0)).sum())
    assert int(c["gt_match"][0]) == int((gb & (cv2.dilate(pb.view(np.uint8), k) > 0)).sum())


def test_scan_box_and_packed_rows() -> None:
    rng = np.random.default_rng(5)
    assert _scan(np.zeros((7, 9), bool)) is None and _scan(np.zeros((0, 4), bool)) is None
    for _ in range(200):
        h, w = int(rng.integers(1, 80)), int(rng.integers(1, 90))
        m = rng.random((h, w)) < rng.choice([0.0005, 0.01, 0.3])
        if rng.random() < 0.3:
            m[-1, -1] = True  # the frame's last pixel
        found = _scan(m)
        if not m.any():
            assert found is None
            continue
        ys, xs = np.nonzero(m)
        assert found[0] == (ys.min(), ys.max(), xs.min(), xs.max())
        rows = np.unpackbits(found[1], axis=1, bitorder="little")[:, :w].astype(bool)
        np.testing.assert_array_equal(rows, m[ys.min() : ys.max() + 1])


def moving_discs(rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
    """Discs that drift across (and out of) a frame, touching every edge on the way."""
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, max(h, w) / 2)
    vy, vx = rng.normal(0, h / 6), rng.normal(0, w / 6)
    return np.stack([(yy - cy - vy * i) ** 2 + (xx - cx - vx * i) ** 2 < r * r for i in range(t)])


def test_parity_on_long_sequences_with_small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    monkeypatch.setattr(metrics, "_CHUNK_BITS", 1 << 12)  # many chunks, some with a single window
    worst = 0.0
    for case in range(6):
        t, h, w = 16, int(rng.integers(20, 90)), int(rng.integers(20, 130))
        if case == 0:
            h, w = 130, 250  # radius 3
        pred, gt = moving_discs(rng, t, h, w), moving_discs(rng, t, h, w)
        pred[rng.random(t) < 0.2] = False
        void = rng.random((t, h, w)) < 0.02 if case % 2 else None
        rj, rf = ref_sequence(pred, gt, void)
        j, f = region_and_boundary(pred, gt, void)
        worst = max(worst, float(np.abs(rj - j).max()), float(np.abs(rf - f).max()))
    assert worst <= 1e-9


def test_parity_with_a_pixel_radius_and_reused_caches() -> None:
    rng = np.random.default_rng(8)
    pred, gt = moving_discs(rng, 5, 60, 70), moving_discs(rng, 5, 60, 70)
    _, f = region_and_boundary(pred, gt, bound_th=4)  # bound_th >= 1: the radius itself
    assert f.tolist() == [ref_f(pred[i], gt[i], bound_th=4) for i in range(5)]
    pc, gc = BoundaryCache(pred), BoundaryCache(gt)
    first = region_and_boundary(pc, gc)
    again = region_and_boundary(pc, gc)
    rj, rf = ref_sequence(pred, gt)
    assert first[0].tolist() == again[0].tolist() == rj.tolist()
    assert first[1].tolist() == again[1].tolist() == rf.tolist()
