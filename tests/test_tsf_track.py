"""Detectors, trackers and crop features on a synthetic moving square (tiny random models, no download)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou
from tsf_fixtures import moving_square, tiny_grounding_dino, tiny_sam2_video

from sparrow.errors import SparrowError
from sparrow.tsf.detect import GroundingDinoDetector, GtDetector, grounding_text
from sparrow.tsf.features import (
    HandcraftedEncoder,
    VisionModelEncoder,
    geometry_features,
    joint_features,
    load_vision_encoder,
)
from sparrow.tsf.track import CsrtTracker, GtTracker, Sam2Tracker


def _ious(pred, truth) -> np.ndarray:
    assert all(p is not None for p in pred)
    return np.diag(box_iou(torch.tensor(pred), torch.tensor(truth)).numpy())


def test_gt_tracker_and_detector_return_the_annotation() -> None:
    frames, boxes = moving_square()
    gt_boxes = [None if t == 2 else b for t, b in enumerate(boxes)]
    out = GtTracker().track(frames, 0, boxes[0], gt_boxes)
    assert len(out) == len(frames) and out[2] is None and out[5] == boxes[5]
    det = GtDetector().detect(frames[4], "the red square", 4, gt_boxes)
    assert det is not None and list(det.box) == boxes[4] and det.score == 1.0
    assert GtDetector().detect(frames[2], "x", 2, gt_boxes) is None
    with pytest.raises(SparrowError, match="annotated boxes"):
        GtTracker().track(frames, 0, boxes[0], None)


def test_csrt_follows_the_square_forward_and_backward() -> None:
    frames, boxes = moving_square(T=12)
    ref = 5
    out = CsrtTracker().track(frames, ref, boxes[ref])
    assert len(out) == len(frames)
    ious = _ious(out, boxes)
    assert ious[ref] == pytest.approx(1.0)
    assert ious.min() > 0.5 and ious.mean() > 0.7
    # downscaled tracking maps boxes back to full-frame pixels
    small = CsrtTracker(max_side=60).track(frames, ref, boxes[ref])
    assert _ious(small, boxes).mean() > 0.5


def test_sam2_tracker_gives_one_box_or_none_per_frame(tmp_path) -> None:
    frames, boxes = moving_square(T=5, H=48, W=80)
    tiny_sam2_video(tmp_path / "sam2")
    tracker = Sam2Tracker(tmp_path / "sam2")
    for ref in (0, 2, 4):
        out = tracker.track(frames, ref, boxes[ref])
        assert len(out) == len(frames)
        for b in out:  # random weights: any extent, but a valid box inside the frame, or None
            assert b is None or (0 <= b[0] < b[2] <= 80 and 0 <= b[1] < b[3] <= 48)
        assert sum(b is not None for b in out) >= 1
    with pytest.raises(SparrowError, match="hf download facebook/sam2"):
        Sam2Tracker(tmp_path / "nowhere")


def test_grounding_dino_detector_runs_with_a_tiny_model(tmp_path) -> None:
    frames, _ = moving_square(T=1)
    model_dir = tiny_grounding_dino(tmp_path / "gdino")
    det = GroundingDinoDetector(model_dir, box_threshold=0.0, text_threshold=0.0).detect(
        frames[0], "The red  square", 0
    )
    assert det is not None and 0.0 <= det.score <= 1.0
    x0, y0, x1, y1 = det.box
    assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 72
    assert GroundingDinoDetector(model_dir, box_threshold=1.01).detect(frames[0], "the red square", 0) is None
    assert grounding_text("The Red square") == "the red square."
    with pytest.raises(SparrowError, match="grounding-dino"):
        GroundingDinoDetector(tmp_path / "nowhere")


def test_features_shapes_standardisation_and_encoders(tmp_path) -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(5, 24, 24, 3), dtype=np.uint8)
    enc = HandcraftedEncoder(bins=4, hog_size=32)
    a = enc(crops)
    assert a.shape == (5, 64 + 324)
    np.testing.assert_array_equal(a, enc(crops.copy()))
    np.testing.assert_allclose(a[:, :64].sum(1), 1.0, rtol=1e-5)
    boxes = np.array([[0, 0, 10, 20], [10, 10, 30, 20], [5, 5, 15, 15], [0, 0, 40, 40], [20, 0, 40, 10]], dtype=float)
    g = geometry_features(boxes, [0, 1, 2, 3, 4], (40, 80), 5)
    assert g.shape == (5, 6)
    np.testing.assert_allclose(g[1, :2], [20 / 80, 15 / 40])
    np.testing.assert_allclose(g[:, 5], [0, 0.25, 0.5, 0.75, 1.0])
    x = joint_features(a, g)
    assert x.shape == (5, 64 + 324 + 6)
    var_app, var_geo = x[:, : a.shape[1]].var(0).sum(), x[:, a.shape[1] :].var(0).sum()
    assert var_geo == pytest.approx(1.0) and var_app <= 1.0 + 1e-9  # constant columns contribute 0

    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(
        Dinov2Config(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=28,
            patch_size=14,
        )
    ).save_pretrained(tmp_path / "dino")
    vis = load_vision_encoder(tmp_path / "dino")
    assert isinstance(vis, VisionModelEncoder) and vis.image_size == 28
    f = vis(crops)
    assert f.shape == (5, 16) and np.isfinite(f).all()
    np.testing.assert_allclose(f, vis(crops), atol=1e-6)
    with pytest.raises(SparrowError, match="config.json"):
        load_vision_encoder(tmp_path / "nowhere")
