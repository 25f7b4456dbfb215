"""Crops come from the ORIGINAL frame, at the right place, on non-square frames; padding outside the frame."""

from __future__ import annotations

import numpy as np
import pytest

from sparrow.data.mevis import write_frames
from sparrow.errors import SparrowError
from sparrow.tsf.cache import TSFEntry
from sparrow.tsf.crops import crop_box, crop_region, tsf_crop_images


def _frames(T: int = 4, H: int = 60, W: int = 160) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(T, H, W, 3), dtype=np.uint8)


def test_crop_is_the_box_region_of_a_non_square_frame() -> None:
    frame = _frames()[0]
    box = [130, 35, 150, 55]  # right edge region of a 160x60 frame: a centre crop would cut it away
    crop = crop_box(frame, box, size=20, margin=0.0)
    np.testing.assert_array_equal(crop, frame[35:55, 130:150])


def test_square_crop_keeps_aspect_and_centre() -> None:
    frame = _frames()[0]
    box = [40, 10, 50, 30]  # 10 wide, 20 tall -> 20x20 region centred on (45, 20)
    assert crop_region(box, margin=0.0) == (35, 10, 55, 30)
    crop = crop_box(frame, box, size=20, margin=0.0)
    np.testing.assert_array_equal(crop, frame[10:30, 35:55])
    assert crop_region(box, margin=0.25, square=False) == (37, 5, 53, 35)


def test_region_outside_the_frame_is_padded() -> None:
    frame = _frames()[0]
    crop = crop_box(frame, [0, 0, 10, 10], size=20, margin=0.5, fill=7)  # region (-5,-5)-(15,15)
    assert np.all(crop[:5] == 7) and np.all(crop[:, :5] == 7)
    np.testing.assert_array_equal(crop[5:, 5:], frame[0:15, 0:15])
    with pytest.raises(SparrowError, match="outside"):
        crop_box(frame, [200, 0, 220, 10], size=8)
    with pytest.raises(SparrowError, match="empty"):
        crop_box(frame, [10, 10, 10, 20], size=8)


def _smooth_frames(T: int = 4, H: int = 60, W: int = 160) -> np.ndarray:
    """Frames whose colour encodes the position (R = x, G = y, B = t): survive JPEG, show misplaced crops."""
    t, y, x = np.meshgrid(np.arange(T), np.arange(H), np.arange(W), indexing="ij")
    return np.stack([x * 255 // (W - 1), y * 255 // (H - 1), t * 60], -1).astype(np.uint8)


def test_tsf_crop_images_from_array_folder_and_record(tmp_path) -> None:
    frames = _smooth_frames()
    entries = [TSFEntry(3, (100.0, 20.0, 140.0, 50.0)), TSFEntry(1, (0.0, 0.0, 30.0, 60.0))]
    out = tsf_crop_images(frames, entries, size=32)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], crop_box(frames[3], entries[0].box, 32))
    np.testing.assert_array_equal(out[1], crop_box(frames[1], entries[1].box, 32))
    pairs = tsf_crop_images(frames, [(3, [100, 20, 140, 50])], size=32)
    np.testing.assert_array_equal(pairs[0], out[0])

    names = [f"{t:05d}" for t in range(len(frames))]
    write_frames(tmp_path / "v", names, frames, quality=100)
    from_folder = tsf_crop_images(tmp_path / "v", entries, size=32)
    assert np.abs(from_folder.astype(int) - out.astype(int)).max() <= 6  # JPEG round trip only

    from sparrow.data.schema import VideoRecord

    rec = VideoRecord("v", names, 60, 160, frame_dir=tmp_path / "v")
    np.testing.assert_array_equal(tsf_crop_images(rec, entries, size=32), from_folder)
    with pytest.raises(SparrowError, match="out of range"):
        tsf_crop_images(rec, [TSFEntry(9, (0, 0, 5, 5))], size=8)
    with pytest.raises(SparrowError, match="out of range"):
        tsf_crop_images(frames, [TSFEntry(9, (0, 0, 5, 5))], size=8)
    assert tsf_crop_images(frames, [], size=16).shape == (0, 16, 16, 3)


def test_tsf_crops_for_looks_up_the_cache(tmp_path) -> None:
    from sparrow.data.schema import VideoRecord
    from sparrow.tsf.cache import TSFRecord
    from sparrow.tsf.crops import tsf_crops_for

    frames = _smooth_frames()
    names = [f"{t:05d}" for t in range(len(frames))]
    write_frames(tmp_path / "v", names, frames, quality=100)
    rec = VideoRecord("v", names, 60, 160, frame_dir=tmp_path / "v")
    entries = [TSFEntry(0, (10.0, 10.0, 30.0, 40.0)), TSFEntry(2, (100.0, 5.0, 150.0, 55.0))]
    cache = {("v", "0"): TSFRecord("v", "0", "ok", entries), ("v", "1"): TSFRecord("v", "1", "failed", reason="x")}
    np.testing.assert_array_equal(tsf_crops_for(cache, rec, "0", 24), tsf_crop_images(rec, entries, 24))
    assert tsf_crops_for(cache, rec, "1", 24).shape == (0, 24, 24, 3)
    assert tsf_crops_for(cache, rec, "7", 24).shape == (0, 24, 24, 3)
