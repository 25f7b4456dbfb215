"""Mask propagation: every frame once in each direction, HF parity, re-prompts, bounded session state, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Sam2VideoInferenceSession

from sparrow.data.video_io import Video, read_frames, write_video
from sparrow.errors import SparrowError
from sparrow.model.propagator import MaskPropagator, select_cond_frames
from sparrow.model.sam2_backbone import Sam2Preprocessor, build_sam2, tiny_sam2_config

S, H, W = 64, 48, 64


def moving_square(num_frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A red square wandering over a noisy grey background: frames uint8 [T, H, W, 3], masks bool [T, H, W]."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(20, 60, size=(num_frames, H, W, 3), dtype=np.uint8)
    masks = np.zeros((num_frames, H, W), dtype=bool)
    for t in range(num_frames):
        x, y = 4 + (2 * t) % 40, 6 + t % 24
        frames[t, y : y + 14, x : x + 16] = (220, 40, 40)
        masks[t, y : y + 14, x : x + 16] = True
    return frames, masks


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    return build_sam2(tiny_sam2_config(S))


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, np.ndarray]:
    return moving_square(30)


def make(sam, **kwargs) -> MaskPropagator:
    return MaskPropagator(sam, Sam2Preprocessor(S), **kwargs)


def expected_key_mask(prompt: np.ndarray) -> np.ndarray:
    """What SAM2 outputs on a mask-prompted frame, computed by hand: the mask (resized to S, >= 0.5) becomes
    logits 20*m - 10, downsampled to S/4 and upsampled to the frame, thresholded at 0."""
    m = torch.from_numpy(prompt).float()[None, None]
    m = (F.interpolate(m, size=(S, S), mode="bilinear", align_corners=False, antialias=True) >= 0.5).float()
    low = F.interpolate(m * 20 - 10, size=(S // 4, S // 4), mode="bilinear", align_corners=False, antialias=True)
    return (F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)[0, 0] > 0).numpy()


def hf_reference(sam, frames: np.ndarray, prompts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Plain HF: a session holding every frame, mask prompts, forward then reverse propagation; low-res logits."""
    pixels = Sam2Preprocessor(S)(frames)
    session = Sam2VideoInferenceSession(video=pixels, video_height=H, video_width=W, dtype=torch.float32)
    obj_idx = session.obj_id_to_idx(1)
    out = {}
    with torch.no_grad():
        for k, prompt in sorted(prompts.items()):
            m = torch.from_numpy(prompt).float()[None, None]
            m = (F.interpolate(m, size=(S, S), mode="bilinear", align_corners=False, antialias=True) >= 0.5).float()
            session.add_mask_inputs(obj_idx, k, m)
            session.obj_with_new_inputs = [1]
            sam(inference_session=session, frame_idx=k)
        for o in sam.propagate_in_video_iterator(session):
            out[o.frame_idx] = o.pred_masks[0, 0].float().numpy()
        for o in sam.propagate_in_video_iterator(session, start_frame_idx=min(prompts), reverse=True):
            out.setdefault(o.frame_idx, o.pred_masks[0, 0].float().numpy())
    return out


@pytest.mark.parametrize("direction", ["forward", "backward", "both"])
def test_every_frame_once_in_documented_order(sam, clip, direction: str) -> None:
    frames, gt = clip
    key = 15
    results = list(make(sam).propagate(frames, {key: gt[key]}, direction=direction))
    order = [t for t, _ in results]
    assert sorted(order) == list(range(30)) and len(order) == 30
    expected = {
        "forward": list(range(30)),
        "backward": list(range(29, -1, -1)),
        "both": list(range(15, 30)) + list(range(14, -1, -1)),
    }[direction]
    assert order == expected
    masks = dict(results)
    assert all(m.shape == (H, W) and m.dtype == bool for m in masks.values())
    assert np.array_equal(masks[key], expected_key_mask(gt[key]))
    iou = (masks[key] & gt[key]).sum() / (masks[key] | gt[key]).sum()
    assert iou > 0.85
    untracked = range(key) if direction == "forward" else range(key + 1, 30) if direction == "backward" else []
    assert all(not masks[t].any() for t in untracked)
    tracked = [t for t in range(30) if t not in untracked and t != key]
    assert any(masks[t].any() for t in tracked)


def test_matches_hf_propagation_with_all_frames_loaded(sam, clip) -> None:
    frames, gt = clip
    prompts = {12: gt[12]}
    ref = hf_reference(sam, frames, prompts)
    got = dict(make(sam).propagate(frames, prompts, direction="both", logits=True))
    assert sorted(ref) == sorted(got) == list(range(30))
    # the clip (30 frames) is far longer than the memory window (2 memories, 3 pointers): nothing read was dropped
    assert all(np.array_equal(got[t], ref[t]) for t in range(30))
    assert np.ptp(np.stack([got[t] for t in range(30)]), axis=0).max() > 0  # outputs really vary over time


def test_reprompt_matches_hf_and_adds_a_conditioning_frame(sam, clip) -> None:
    frames, gt = clip
    shifted = np.roll(gt[22], 6, axis=1)  # the re-prompt disagrees with the track
    prompts = {8: gt[8], 22: shifted}
    prop = make(sam)
    got = dict(prop.propagate(frames, prompts, direction="both", logits=True))
    cond = prop.session.output_dict_per_obj[0]["cond_frame_outputs"]
    assert sorted(cond) == [8, 22]
    ref = hf_reference(sam, frames, prompts)
    assert all(np.array_equal(got[t], ref[t]) for t in range(30))
    masks = dict(prop.propagate(frames, prompts, direction="forward"))
    assert np.array_equal(masks[22], expected_key_mask(shifted))
    single = dict(make(sam).propagate(frames, {8: gt[8]}, direction="forward"))
    assert not np.array_equal(single[22], masks[22])


def test_conditioning_frames_are_capped(sam, clip) -> None:
    frames, gt = clip
    keys = [2, 7, 12, 17, 22, 27]
    prop = make(sam, max_cond_frames=2)
    seen = []
    for t, _ in prop.propagate(frames, {k: gt[k] for k in keys}, direction="both"):
        cond = prop.session.output_dict_per_obj[0]["cond_frame_outputs"]
        seen.append(len(cond))
        assert set(cond) == set(select_cond_frames(t, keys, 2))
    assert max(seen) == 2
    assert select_cond_frames(13, keys, 3) == [7, 12, 17]
    assert select_cond_frames(13, keys, 10) == keys


def assert_bounded(prop: MaskPropagator, limit: int) -> None:
    session = prop.session
    assert len(session.processed_frames) <= 1
    assert len(session.cache._vision_features) <= 1
    assert len(session.output_dict_per_obj[0]["non_cond_frame_outputs"]) <= limit
    assert len(session.frames_tracked_per_obj[0]) <= limit
    assert not session.mask_inputs_per_obj[0]
    for out in session.output_dict_per_obj[0]["non_cond_frame_outputs"].values():
        assert "high_res_masks" not in out and "pred_masks" not in out


@pytest.mark.parametrize("direction,key", [("forward", 0), ("both", 50)])
def test_session_stays_bounded_over_100_frames(sam, direction: str, key: int) -> None:
    frames, gt = moving_square(100, seed=3)
    prop = make(sam)
    window = prop.memory_window  # 3 for the tiny config
    limit = window if direction == "forward" else 2 * window  # "both" also keeps the window after the key frame
    count = 0
    for _t, _m in prop.propagate(frames, {key: gt[key]}, direction=direction):
        assert_bounded(prop, limit)
        count += 1
    assert count == 100
    assert len(prop.session.output_dict_per_obj[0]["cond_frame_outputs"]) == 1


def test_video_file_is_streamed_and_gives_the_same_masks(sam, clip, tmp_path) -> None:
    frames, gt = clip
    path = write_video(tmp_path / "clip.mp4", frames, fps=10)
    decoded = read_frames(path)
    prop = make(sam, reverse_chunk=7)
    from_file = prop.propagate_all(Video.open(path), {12: gt[12]})
    from_array = make(sam).propagate_all(decoded, {12: gt[12]})
    assert from_file.shape == (30, H, W) and from_file.dtype == bool
    assert np.array_equal(from_file, from_array)


def test_restores_training_mode(sam, clip) -> None:
    frames, gt = clip
    sam.train()
    try:
        masks = make(sam).propagate_all(frames[:6], {2: gt[2]})
        assert sam.training and masks.shape == (6, H, W)
    finally:
        sam.eval()


def test_bad_input_raises_before_running(sam, clip) -> None:
    frames, gt = clip
    prop = make(sam)
    with pytest.raises(SparrowError, match="shape"):
        prop.propagate(frames, {3: np.ones((H, W + 1), dtype=bool)})
    with pytest.raises(SparrowError, match="out of range"):
        prop.propagate(frames, {30: gt[0]})
    with pytest.raises(SparrowError, match="out of range"):
        prop.propagate(frames, {-1: gt[0]})
    with pytest.raises(SparrowError, match="at least one"):
        prop.propagate(frames, {})
    with pytest.raises(SparrowError, match="integer"):
        prop.propagate(frames, {"3": gt[3]})
    with pytest.raises(SparrowError, match="direction"):
        prop.propagate(frames, {3: gt[3]}, direction="sideways")
    with pytest.raises(SparrowError, match="opened Video"):
        prop.propagate("/nonexistent/video.mp4", {0: gt[0]})
    with pytest.raises(SparrowError, match="image size"):
        MaskPropagator(sam, Sam2Preprocessor(2 * S))
