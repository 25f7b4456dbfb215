"""Track-level selection: linking proposals into tracklets, their features, labels, the scorer and its loss."""

from __future__ import annotations

import math

import pytest
import torch

from sparrow.model.track_selector import TrackSelector, track_selection_loss
from sparrow.model.tracklets import (
    LinkConfig,
    TrackGuide,
    best_tracklets,
    link_proposals,
    suppress_duplicates,
    tracklet_appearance,
    tracklet_hits,
    tracklet_labels,
    trajectory_dim,
    trajectory_features,
)


def _box(cx: float, cy: float, s: float = 0.1) -> list[float]:
    return [cx - s, cy - s, cx + s, cy + s]


def _clip() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two objects over 4 frames: A moves right along y=0.3, B stays at (0.7, 0.7) and is missing on frame 2.
    Each frame has 4 proposal slots: A, a near-duplicate of A (lower objectness), B, and an invalid slot."""
    boxes, logits, valid = [], [], []
    for t in range(4):
        a = _box(0.2 + 0.05 * t, 0.3)
        dup = [v + 0.005 for v in a]
        b = _box(0.7, 0.7)
        boxes.append([a, dup, b, [0.0, 0.0, 0.1, 0.1]])
        logits.append([2.0, 1.0, 1.5, 3.0])
        valid.append([True, True, t != 2, False])
    return torch.tensor(boxes), torch.tensor(logits), torch.tensor(valid)


def test_link_follows_each_object_and_bridges_a_gap() -> None:
    boxes, logits, valid = _clip()
    tracks = link_proposals(boxes, logits, valid)
    assert len(tracks) == 2  # the duplicate is suppressed, the invalid slot never used
    assert tracks.index.tolist() == [[0, 0, 0, 0], [2, 2, -1, 2]]
    assert tracks.present.tolist() == [[True] * 4, [True, True, False, True]]
    assert torch.equal(tracks.boxes[0, 3], boxes[3, 0])
    assert torch.equal(tracks.boxes[1, 2], torch.zeros(4))
    assert tracks.logits[1].tolist() == [1.5, 1.5, 0.0, 1.5]


def test_link_ends_a_tracklet_after_the_gap_and_splits_far_jumps() -> None:
    boxes, logits, valid = _clip()
    tracks = link_proposals(boxes, logits, valid, LinkConfig(max_gap=0))
    assert len(tracks) == 3  # B on frame 3 starts a new tracklet: frame 2 was a gap longer than 0
    far = boxes.clone()
    far[2:, 0] = torch.tensor(_box(0.8, 0.1))  # A jumps across the frame between frames 1 and 2
    tracks = link_proposals(far, logits, valid)
    assert len(tracks) == 3
    assert link_proposals(boxes, logits, torch.zeros_like(valid)).index.shape == (0, 4)


def test_trajectory_features_values() -> None:
    boxes, logits, valid = _clip()
    tracks = link_proposals(boxes, logits, valid)
    feats = trajectory_features(tracks)
    assert feats.shape == (2, trajectory_dim(4)) == (2, 28)
    # per frame (cx, cy, w, h, present) of A on frame 1
    assert feats[0, 5:10].tolist() == pytest.approx([0.25, 0.3, 0.2, 0.2, 1.0])
    assert feats[1, 10:15].tolist() == [0.0] * 5  # B absent on frame 2
    first, last, count, mean_logit, max_logit, path, dx, dy = feats[:, 20:].T
    assert first.tolist() == [0.0, 0.0] and last.tolist() == [0.75, 0.75]
    assert count.tolist() == [1.0, 0.75]
    assert mean_logit.tolist() == pytest.approx([2.0, 1.5]) and max_logit.tolist() == pytest.approx([2.0, 1.5])
    assert path.tolist() == pytest.approx([0.15, 0.0], abs=1e-6)
    assert dx.tolist() == pytest.approx([0.15, 0.0], abs=1e-6) and dy.tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_appearance_is_the_mean_over_present_frames_and_keeps_gradients() -> None:
    boxes, logits, valid = _clip()
    tracks = link_proposals(boxes, logits, valid)
    appearance = torch.arange(4 * 4 * 2, dtype=torch.float32).reshape(4, 4, 2).requires_grad_()
    pooled = tracklet_appearance(tracks, appearance)
    expected_b = (appearance[0, 2] + appearance[1, 2] + appearance[3, 2]) / 3
    assert torch.allclose(pooled[1], expected_b)
    pooled.sum().backward()
    assert appearance.grad[2, 2].tolist() == [0.0, 0.0] and appearance.grad[0, 0].tolist() == [0.25, 0.25]


def test_hits_and_positives() -> None:
    boxes, logits, valid = _clip()
    tracks = link_proposals(boxes, logits, valid)
    target = torch.tensor([_box(0.7, 0.7), _box(0.7, 0.7), [math.nan] * 4, _box(0.72, 0.7)])
    hits = tracklet_hits(tracks, target)
    assert hits.tolist() == [[False] * 4, [True, True, False, True]]
    assert best_tracklets(hits).tolist() == [False, True]
    assert best_tracklets(torch.zeros(2, 4, dtype=torch.bool)).tolist() == [False, False]


def test_track_selector_learns_a_conjunction() -> None:
    """Query (colour c, direction d) and four tracklets, one per (colour, direction): only the conjunction picks
    the target, which a score linear in each key cannot do for all four queries at once."""
    torch.manual_seed(0)
    frames = 4
    selector = TrackSelector(embed_dim=4, appearance_dim=2, trajectory_dim=trajectory_dim(frames), hidden=32)
    appearance = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    trajectory = torch.zeros(4, trajectory_dim(frames))
    trajectory[:, -2] = torch.tensor([0.3, -0.3, 0.3, -0.3])  # net dx: right, left, right, left
    queries = torch.eye(4)  # query i names tracklet i
    opt = torch.optim.Adam(selector.parameters(), lr=1e-2)
    for _ in range(200):
        loss = track_selection_loss(selector(queries, appearance, trajectory), torch.eye(4, dtype=torch.bool))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert selector(queries, appearance, trajectory).argmax(-1).tolist() == [0, 1, 2, 3]
    assert float(loss.detach()) < 0.05


def test_track_selection_loss_values() -> None:
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0]], requires_grad=True)
    positive = torch.tensor([[True, False], [False, False]])
    loss = track_selection_loss(logits, positive)  # only row 0 counts: -log(1/2)
    assert float(loss.detach()) == pytest.approx(math.log(2))
    three = torch.tensor([[0.0, 1.0, 2.0]])
    ignore = torch.tensor([[False, False, True]])  # another fragment of the target leaves the softmax
    first = torch.tensor([[True, False, False]])
    expected = math.log(1 + math.e)  # -log(e^0 / (e^0 + e^1))
    assert float(track_selection_loss(three, first, ignore)) == pytest.approx(expected)
    assert float(track_selection_loss(three, first)) == pytest.approx(math.log(1 + math.e + math.e**2))
    hits = torch.tensor([[True, True, False], [False, True, False], [False, False, False], [True, True, False]])
    positive, left_out = tracklet_labels(hits)
    assert positive.tolist() == [True, False, False, True] and left_out.tolist() == [False, True, False, False]
    empty = track_selection_loss(logits, torch.zeros(2, 2, dtype=torch.bool))
    empty.backward()
    assert float(empty) == 0.0
    assert TrackSelector(4, 2, trajectory_dim(3))(torch.zeros(2, 4), torch.zeros(0, 2), torch.zeros(0, 23)).shape == (
        2,
        0,
    )
    with pytest.raises(ValueError, match="5 T \\+ 8"):
        TrackSelector(4, 2, 20)


def test_track_guide_interpolates_and_respects_gaps() -> None:
    boxes = torch.tensor([_box(0.2, 0.5), _box(0.4, 0.5), [0.0] * 4, _box(0.6, 0.5)])
    guide = TrackGuide([0, 10, 20, 30], boxes, torch.tensor([True, True, False, True]))
    assert torch.allclose(guide.box_at(5), torch.tensor(_box(0.3, 0.5)))
    assert torch.equal(guide.box_at(10), boxes[1])
    assert torch.equal(guide.box_at(14), boxes[1])  # next to the gap: the nearer present neighbour
    assert guide.box_at(16) is None and guide.box_at(20) is None
    assert torch.equal(guide.box_at(25), boxes[3]) and torch.equal(guide.box_at(40), boxes[3])
    absent_start = TrackGuide([2, 6], boxes[:2], torch.tensor([False, True]))
    assert absent_start.box_at(0) is None and absent_start.box_at(3) is None
    assert torch.equal(absent_start.box_at(4), boxes[1])


def _square(mask: torch.Tensor, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    out = mask.clone()
    out[y0:y1, x0:x1] = True
    return out


def test_suppress_duplicates_drops_parts_and_copies_not_occluders() -> None:
    """Frame 0: a whole object (slot 0), its left half with higher objectness (slot 1), a copy of the whole with
    lower objectness (slot 2), a small object in front of it, cut out of its mask (slot 3), an empty mask (slot 4)
    and an invalid slot (5). Frame 1: the same masks with slot 1 scored lowest."""
    empty = torch.zeros(16, 16, dtype=torch.bool)
    whole = _square(empty, 2, 12, 2, 12)
    small = _square(empty, 4, 7, 4, 7)
    whole_cut = whole & ~small
    half = _square(empty, 2, 12, 2, 7) & ~small
    masks = torch.stack([torch.stack([whole_cut, half, whole_cut, small, empty, whole])] * 2)
    logits = torch.tensor([[1.0, 2.0, 0.5, 0.2, 3.0, 5.0], [1.0, -1.0, 0.5, 0.2, 3.0, 5.0]])
    valid = torch.tensor([[True, True, True, True, True, False]] * 2)
    keep = suppress_duplicates(masks, logits, valid)
    # frame 0: the likelier half is kept; the whole overlaps it by mask IoU 41/91 >= 0.4 and goes, and so does its
    # copy; the occluder in front survives; empty and invalid go
    assert keep[0].tolist() == [False, True, False, True, False, False]
    # frame 1: the whole comes first and the half lies inside it
    assert keep[1].tolist() == [True, False, False, True, False, False]
    strict = suppress_duplicates(masks, logits, valid, containment=0.8, iou=0.5)
    assert strict[0].tolist() == [True, True, False, True, False, False]  # IoU 0.45 < 0.5, 45 % inside: kept
    loose = suppress_duplicates(masks, logits, valid, containment=1.01, iou=1.01)
    assert loose[1].tolist() == [True, True, True, True, False, False]


def test_linking_predicts_motion() -> None:
    """A moves right 0.15 per frame; on frame 3 a new box B appears between A's last box and its next one. With
    motion the tracklet follows A's predicted box; without, it takes the nearer B."""
    a = [_box(0.1 + 0.15 * t, 0.5, 0.05) for t in range(4)]
    b = _box(0.5, 0.5, 0.05)
    boxes = torch.tensor([[a[t], b if t == 3 else [0.0, 0.0, 0.1, 0.1]] for t in range(4)])
    logits = torch.tensor([[1.0, 0.5]] * 4)
    valid = torch.tensor([[True, t == 3] for t in range(4)])
    with_motion = link_proposals(boxes, logits, valid, LinkConfig(max_distance=0.2, min_iou=0.1))
    assert with_motion.index[0].tolist() == [0, 0, 0, 0] and len(with_motion) == 2
    without = link_proposals(boxes, logits, valid, LinkConfig(max_distance=0.2, min_iou=0.1, motion=False))
    assert without.index[0].tolist() == [0, 0, 0, 1]


def test_linking_weighs_appearance() -> None:
    """Two objects cross: on frame 1 the box nearer each tracklet looks like the other object."""
    boxes = torch.tensor(
        [[_box(0.30, 0.5, 0.05), _box(0.42, 0.5, 0.05)], [_box(0.34, 0.5, 0.05), _box(0.38, 0.5, 0.05)]]
    )
    logits = torch.ones(2, 2)
    valid = torch.ones(2, 2, dtype=torch.bool)
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
    by_look = link_proposals(boxes, logits, valid, LinkConfig(motion=False), appearance=keys)
    assert sorted(by_look.index.tolist()) == [[0, 1], [1, 0]]
    by_place = link_proposals(boxes, logits, valid, LinkConfig(motion=False, appearance_weight=0.0), appearance=keys)
    assert sorted(by_place.index.tolist()) == [[0, 0], [1, 1]]
