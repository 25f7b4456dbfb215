"""Expressions that name several objects: per-object tracklet labels, the membership loss, the set an answer takes
(``track_set_threshold``) and the union of its masks in ``perframe`` mode (docs/architecture.md §6 item 22)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_clips import two_object_clip

from sparrow.data.rle import decode_rle
from sparrow.data.video_io import Video
from sparrow.errors import SparrowError
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import build_tiny, tiny_config
from sparrow.model.track_selector import select_members, track_membership_loss
from sparrow.model.tracklets import (
    TrackGuide,
    link_proposals,
    object_tracklet_labels,
    tracklet_hits,
    tracklet_labels,
)
from sparrow.pipeline.masks import decoded_frames
from sparrow.pipeline.prompting import Plan
from sparrow.pipeline.segment import SegmentationPipeline

FRAMES = 4


def _box(cx: float, cy: float, s: float = 0.1) -> list[float]:
    return [cx - s, cy - s, cx + s, cy + s]


def _three_objects():
    """A (moving right), B (static) and C (static, only on frames 0-1) over 4 frames, one proposal each."""
    boxes = [[_box(0.2 + 0.05 * t, 0.3), _box(0.7, 0.7), _box(0.3, 0.8)] for t in range(FRAMES)]
    valid = [[True, True, t < 2] for t in range(FRAMES)]
    return link_proposals(torch.tensor(boxes), torch.tensor([[2.0, 1.5, 1.0]] * FRAMES), torch.tensor(valid))


def test_object_labels_take_each_named_objects_best_tracklet() -> None:
    tracks = _three_objects()
    assert len(tracks) == 3
    a = torch.tensor([_box(0.2 + 0.05 * t, 0.3) for t in range(FRAMES)])
    b = torch.tensor([_box(0.7, 0.7)] * FRAMES)
    positive, ignore = object_tracklet_labels(tracks, torch.stack([a, b]))
    assert positive.tolist() == [True, True, False] and not ignore.any()
    # one object: exactly the single-target labels
    for target in (a, b):
        single = tracklet_labels(tracklet_hits(tracks, target))
        assert [x.tolist() for x in object_tracklet_labels(tracks, target[None])] == [x.tolist() for x in single]
    # the box around A and B together overlaps neither tracklet: the single-target labels find nothing
    union = torch.cat([torch.minimum(a, b)[:, :2], torch.maximum(a, b)[:, 2:]], dim=1)
    assert not tracklet_labels(tracklet_hits(tracks, union))[0].any()
    # a named object absent from the clip adds nothing
    absent = torch.full((FRAMES, 4), math.nan)
    assert object_tracklet_labels(tracks, torch.stack([a, absent]))[0].tolist() == [True, False, False]


def test_membership_loss_values() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.2, 0.1]], requires_grad=True)
    positive = torch.tensor([[True, False, False], [False, False, False]])  # row 2 has no positive: left out
    ignore = torch.tensor([[False, False, True], [False, False, False]])
    loss = track_membership_loss(logits, positive, ignore)
    expected = (F.softplus(torch.tensor(-2.0)) + F.softplus(torch.tensor(-1.0))) / 2  # BCE(2, 1), BCE(-1, 0)
    assert torch.allclose(loss, expected)
    everything = (F.softplus(torch.tensor(-2.0)) + F.softplus(torch.tensor(-1.0)) + F.softplus(torch.tensor(0.5))) / 3
    assert torch.allclose(track_membership_loss(logits, positive), everything)
    none = track_membership_loss(logits, torch.zeros_like(positive))
    assert float(none.detach()) == 0.0
    none.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0


def test_select_members() -> None:
    logits = torch.tensor([0.0, 3.0, 1.0, -2.0])
    assert select_members(logits, 0.0) == [1]
    assert select_members(logits, 0.6) == [1, 2]  # sigmoid 0.95 and 0.73; sigmoid(0) = 0.5 stays out
    assert select_members(logits, 0.4) == [1, 2, 0]
    assert select_members(torch.tensor([-3.0, -4.0]), 0.5) == [0]  # the best one always answers


def test_threshold_config_checks() -> None:
    for bad in (-0.1, 1.0, True, "0.5"):
        with pytest.raises(SparrowError, match="track_set_threshold must be"):
            SparrowConfig(selection_level="track", track_set_threshold=bad)
    with pytest.raises(SparrowError, match="track_set_threshold needs selection_level 'track'"):
        SparrowConfig(track_set_threshold=0.5)
    assert SparrowConfig(selection_level="track", track_set_threshold=0.5).track_set_threshold == 0.5


@pytest.fixture(scope="module")
def model():
    config = dataclasses.replace(tiny_config(), selection_level="track", vlm_frames=FRAMES, mode="perframe")
    return build_tiny(seed=0, config=config, sam_image_size=64)


def test_perframe_decodes_the_union_of_a_sets_masks(model) -> None:
    frames, _, _ = two_object_clip(t=9)
    square = torch.tensor([40, 16, 68, 44], dtype=torch.float32) / 96
    disc = torch.tensor([[(8 + 56 * t / 8) / 96, 58 / 96, (32 + 56 * t / 8) / 96, 82 / 96] for t in (0, 4, 8)])
    first = TrackGuide([0, 4, 8], square.expand(3, 4).clone(), torch.tensor([True, True, True]))
    second = TrackGuide([0, 4, 8], disc, torch.tensor([True, True, False]))  # absent from frame 8 on
    seg = torch.randn(model.pixel_decoder.hidden_size, generator=torch.Generator().manual_seed(0))  # a [SEG] [C]
    with Video.open(frames) as video:
        alone = [dict(decoded_frames(model, video, seg, None, False, guide=g)) for g in (first, second)]
        both = dict(decoded_frames(model, video, seg, None, False, guide=first, others=[second]))
    assert sorted(both) == list(range(9))
    for t in range(9):
        masks = [_mask(out[t][0]) for out in alone]
        assert np.array_equal(_mask(both[t][0]), masks[0] | masks[1]), t
    assert alone[1][8] == (None, None) and both[8][0] is not None  # the first tracklet alone answers there
    assert (_mask(both[4][0]) & ~_mask(alone[0][4][0])).any()  # the second one adds pixels


def _mask(rle) -> np.ndarray:
    return np.zeros((96, 96), dtype=bool) if rle is None else decode_rle(rle, (96, 96)).astype(bool)


def test_a_plan_keeps_the_other_tracklets(model) -> None:
    frames, _, _ = two_object_clip(t=9)
    pipeline = SegmentationPipeline(model)
    session, _ = pipeline.prepare(Video.open(frames), "the red square", mode="perframe")
    plan = pipeline.plan(session)
    choice = plan.choices[0]
    assert choice.others == []  # threshold 0: the best tracklet alone
    choice.others = [choice.track]
    again = Plan.from_dict(plan.to_dict())
    assert len(again.choices[0].others) == 1
    assert torch.equal(again.choices[0].others[0].boxes, choice.track.boxes.cpu())
    assert again.choices[0].others[0].frame_ids == choice.track.frame_ids
