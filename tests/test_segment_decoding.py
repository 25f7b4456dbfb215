"""Frames decoded by one ``segment()`` call in track mode: a video whose resized frames fit the pipeline's budget is
decoded once, in order; a longer one falls back to seeking, with the same masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sparrow.data.video_io import Video, read_frames, write_video
from sparrow.pipeline import segment

QUERY = "the red disc"
T, GOP, SIZE = 36, 12, 64  # frames, keyframe interval, SAM2 input size (3 * 64 * 64 bytes a frame, resized)


@pytest.fixture(scope="module")
def pipeline():
    from sparrow.model.loading import build_tiny

    return segment.SegmentationPipeline(build_tiny(seed=0, sam_image_size=SIZE))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A disc moving over noise, H.264 with a keyframe every ``GOP`` frames."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    rng = np.random.default_rng(0)
    background = rng.integers(0, 80, (48, 64, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:48, :64]
    frames = []
    for t in range(T):
        img = background.copy()
        img[(yy - 24) ** 2 + (xx - 10 - t) ** 2 < 60] = (230, 30, 30)
        frames.append(img)
    write_video(path, frames, fps=25, keyframe_interval=GOP)
    return path


def _segment(pipeline, source, budget, monkeypatch, mode="track"):
    monkeypatch.setattr(segment, "FRAME_CACHE_BYTES", budget)
    video = Video.open(source, cache_size=pipeline.config.vlm_frames + 1)
    result = pipeline.segment(video, QUERY, mode=mode, key_frame=T // 2)
    assert video._views == {}  # the call released the frames it kept
    return result.masks, video.decoded


@pytest.fixture(scope="module")
def seeking(pipeline, clip):
    """Masks and decoded frames with a budget one byte short of the video: today's seeking reads."""
    with pytest.MonkeyPatch.context() as mp:
        return _segment(pipeline, clip, T * 3 * SIZE * SIZE - 1, mp)


def test_track_mode_decodes_the_file_once_when_it_fits(pipeline, clip, seeking, monkeypatch):
    masks, decoded = _segment(pipeline, clip, T * 3 * SIZE * SIZE, monkeypatch)  # exactly the budget
    assert decoded == T <= 1.1 * T
    assert np.array_equal(masks, seeking[0]) and masks.any()


def test_over_the_budget_it_seeks_as_before_with_the_same_masks(seeking):
    masks, decoded = seeking
    # VLM frames, the key frame, the forward pass from keyframe 12 and the backward pass by keyframe interval (74)
    assert 1.5 * T < decoded <= 3 * T and masks.shape == (T, 48, 64)


def test_frame_folders_arrays_and_other_modes_keep_their_results(pipeline, clip, seeking, monkeypatch, tmp_path):
    frames = read_frames(clip)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{t:03d}.png")
    masks, loaded = _segment(pipeline, tmp_path, 10**9, monkeypatch)
    assert loaded == T and np.array_equal(masks, seeking[0])  # each image loaded once
    masks, _ = _segment(pipeline, frames, 10**9, monkeypatch)  # an array keeps no view
    assert np.array_equal(masks, seeking[0])
    framewise, decoded = _segment(pipeline, clip, 10**9, monkeypatch, mode="framewise")
    same_masks, same_decoded = _segment(pipeline, clip, 0, monkeypatch, mode="framewise")
    assert decoded == same_decoded and np.array_equal(framewise, same_masks)
    assert decoded > T  # no scan outside track mode (it reads every frame in order anyway)


def test_a_view_the_caller_kept_survives_the_call(pipeline, clip, seeking, monkeypatch):
    """A caller who keeps the resized frames on an opened video (to segment several sentences) keeps them after each
    call: the second call decodes nothing more."""
    monkeypatch.setattr(segment, "FRAME_CACHE_BYTES", 10**9)
    video = Video.open(clip, cache_size=pipeline.config.vlm_frames + 1)
    view = pipeline.model.preprocessor.resized_view()
    assert not video.keeps_view(view.name) and video.keep_view(view, 10**9) and video.keeps_view(view.name)
    first = pipeline.segment(video, QUERY, mode="track", key_frame=T // 2).masks
    assert video.keeps_view(view.name) and video.decoded == T
    second = pipeline.segment(video, QUERY, mode="track", key_frame=T // 2).masks
    assert video.keeps_view(view.name) and video.decoded == T  # served from the kept frames
    assert np.array_equal(first, seeking[0]) and np.array_equal(second, first)
    video.close()
    assert not video.keeps_view(view.name)
