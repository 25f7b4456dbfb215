"""Video IO: round trips, frame selection, and one-line errors for bad videos."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from sparrow.data.video_io import iter_frames, probe_video, read_frames, sample_indices, write_video
from sparrow.errors import SparrowError


def _clip(t: int = 12, h: int = 48, w: int = 64) -> np.ndarray:
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        frames[i, 10:30, 4 * i : 4 * i + 16] = (250, 30, 30)  # a red block moving right
    return frames


def test_write_and_read_round_trip(tmp_path):
    frames = _clip()
    path = write_video(tmp_path / "clip.mp4", frames, fps=5)
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (12, 48, 64)
    assert info.fps == pytest.approx(5.0)
    back = read_frames(path)
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 6  # lossy H.264, small error
    picked = read_frames(path, [7, 2, 7])
    assert picked.shape[0] == 3 and np.array_equal(picked[0], picked[2]) and np.array_equal(picked[1], back[2])


def test_frame_folder_and_array_sources(tmp_path):
    frames = _clip(t=4)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"{i:05d}.png")
    assert np.array_equal(read_frames(tmp_path), frames)  # PNG is lossless
    assert [i for i, _ in iter_frames(frames, [3, 1])] == [1, 3]
    assert probe_video(frames).num_frames == 4


def test_sample_indices():
    assert sample_indices(100, 5) == [0, 25, 50, 74, 99]
    assert sample_indices(3, 8) == [0, 1, 2]
    with pytest.raises(SparrowError):
        sample_indices(0, 4)


def test_missing_video(tmp_path):
    with pytest.raises(SparrowError, match="no such video file"):
        probe_video(tmp_path / "nope.mp4")


def test_corrupt_video_names_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01 this is not a video" * 50)
    with pytest.raises(SparrowError) as err:
        read_frames(bad)
    assert "bad.mp4" in str(err.value) and "\n" not in str(err.value)


def test_zero_frame_video(tmp_path):
    path = tmp_path / "empty.mp4"
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=Fraction(5))
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    container.start_encoding()  # header only: a file with no frames
    container.close()
    assert path.exists()
    with pytest.raises(SparrowError, match="zero frames|no video stream|cannot"):
        probe_video(path)
    with pytest.raises(SparrowError, match="empty.mp4"):
        read_frames(path)
    folder = path.parent / "frames"
    folder.mkdir()
    with pytest.raises(SparrowError, match="no frames"):
        read_frames(folder)


def test_index_out_of_range(tmp_path):
    path = write_video(tmp_path / "clip.mp4", _clip(t=5), fps=5)
    with pytest.raises(SparrowError, match="out of range"):
        read_frames(path, [9])


def test_write_video_leaves_nothing_on_error(tmp_path):
    def frames():
        yield _clip(t=1)[0]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_video(tmp_path / "x.mp4", frames())
    assert list(tmp_path.iterdir()) == []


def _gop_clip(path, t: int, gop: int):
    """A clip whose frame index is readable from its pixels, H.264 with a keyframe every ``gop`` frames."""
    frames = np.zeros((t, 32, 48, 3), dtype=np.uint8)
    for i in range(t):
        frames[i, :, :, 0] = (i * 5) % 256
        frames[i, 4:12, (i % 36) : (i % 36) + 10] = 255
    return write_video(path, frames, fps=25, keyframe_interval=gop)


def test_video_seeks_to_the_right_frames_and_counts_decodes(tmp_path):
    from sparrow.data.video_io import Video

    path = _gop_clip(tmp_path / "gop.mp4", 60, gop=10)
    every = read_frames(path)
    with Video.open(path, cache_size=0) as video:
        assert video.info.num_frames == 60 and video._keyframes == list(range(0, 60, 10))
        picked = video.read([57, 3, 31, 32, 3])
        for row, t in enumerate([57, 3, 31, 32, 3]):
            assert np.array_equal(picked[row], every[t]), t
        # sorted reads: 0..3 (4), seek to 30: 30..32 (3), seek to 50: 50..57 (8) = 15 decodes, not 58
        assert video.decoded == 15
    with Video.open(path, cache_size=0) as video:
        back = list(video.iter_backward(59, 0, chunk=16))
        assert [t for t, _ in back] == list(range(59, -1, -1))
        assert all(np.array_equal(f, every[t]) for t, f in back)
        assert video.decoded == 60  # keyframes 10 apart <= chunk: every frame decoded exactly once


def test_video_backward_with_a_long_keyframe_interval_still_gives_every_frame(tmp_path):
    from sparrow.data.video_io import Video

    path = _gop_clip(tmp_path / "long.mp4", 40, gop=40)
    every = read_frames(path)
    with Video.open(path, cache_size=0) as video:
        back = list(video.iter_backward(39, 0, chunk=8))
    assert [t for t, _ in back] == list(range(39, -1, -1)) and all(np.array_equal(f, every[t]) for t, f in back)


def test_video_cache_lists_of_images_and_errors(tmp_path):
    from sparrow.data.video_io import Video

    frames = _clip(t=6)
    video = Video.open([Image.fromarray(f) for f in frames], cache_size=2)
    assert Video.open(video) is video and video.info.num_frames == 6
    assert np.array_equal(video.frame(4), frames[4]) and video.decoded == 2  # frame 0 (probe) and 4
    video.frame(4)
    assert video.decoded == 2  # cached
    with pytest.raises(SparrowError, match="out of range"):
        video.frame(6)
    mixed = Video.open([frames[0], np.zeros((10, 10, 3), np.uint8)])
    with pytest.raises(SparrowError, match="differ in size"):
        mixed.read()
    with pytest.raises(SparrowError, match="empty"):
        Video.open([])


def test_kept_view_scans_the_file_once_then_serves_every_order_from_memory(tmp_path):
    from sparrow.data.video_io import FrameView, Video

    path = _gop_clip(tmp_path / "gop.mp4", 40, gop=10)
    every = read_frames(path)
    calls = []

    def half(frame):
        calls.append(1)
        return frame[::2, ::2].copy()

    view = FrameView("half", half, 16 * 24 * 3)
    with Video.open(path, cache_size=4) as video:
        assert not video.keep_view(view, 40 * 16 * 24 * 3 - 1)  # one byte short: nothing kept
        assert video.keep_view(view, 40 * 16 * 24 * 3)
        kept = video.scan([33, 5, 33])
        assert video.decoded == 40 and len(calls) == 40  # frame 0 to 39 once, no seek, each transformed once
        assert np.array_equal(kept, every[[33, 5, 33]])
        back = list(video.iter_backward(39, 0, chunk=7, view=view))
        forward = list(video.iter(range(10, 20), view=view))
        assert [t for t, _ in back] == list(range(39, -1, -1))
        assert all(np.array_equal(f, every[t][::2, ::2]) for t, f in back + forward)
        assert np.array_equal(video.frame(5), every[5])  # the kept frames were left in the frame cache
        assert video.decoded == 40 and len(calls) == 40
        # the view is full: no second scan, frame 7 is read as read() does (keyframe 0, then 0..7)
        assert np.array_equal(video.scan([7]), every[[7]]) and video.decoded == 48
        video.drop_view("half")
        list(video.iter([3], view=view))
        assert len(calls) == 41  # transformed again once dropped
        assert video.keep_view(view, 10**9)
    assert video._views == {}  # close releases kept views
    array = Video.open(every)
    assert not array.keep_view(view, 10**9) and array.scan([2]).shape == (1, 32, 48, 3)
    assert array.scan() is None


def test_kept_view_over_a_frame_list_loads_each_image_once():
    from sparrow.data.video_io import FrameView, Video

    frames = _clip(t=6)
    video = Video.open([Image.fromarray(f) for f in frames], cache_size=1)
    view = FrameView("red", lambda frame: frame[..., 0].copy(), 48 * 64)
    assert video.keep_view(view, 6 * 48 * 64)
    assert np.array_equal(video.scan([4]), frames[[4]]) and video.decoded == 6  # frame 0 came from the probe
    assert all(np.array_equal(f, frames[t, ..., 0]) for t, f in video.iter_backward(5, 0, chunk=2, view=view))
    assert video.decoded == 6
