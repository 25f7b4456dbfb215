"""Exports of a segmentation result, each read back with the library that owns the format."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import zipfile
from dataclasses import dataclass

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sparrow.data.exports import (
    CSV_COLUMNS,
    label_frame,
    overlay_frame,
    write_boxes_csv,
    write_coco,
    write_gif,
    write_masks_zip,
)
from sparrow.data.palette import PALETTE
from sparrow.data.rle import encode_mask, mask_to_box
from sparrow.data.video_io import iter_frames, write_video

T, H, W = 12, 48, 64


@dataclass
class _Target:
    rles: list
    boxes: list


@dataclass
class _Result:
    query: str
    answer: str
    num_frames: int
    height: int
    width: int
    fps: float
    targets: list


def _masks() -> np.ndarray:
    """Two targets ``[2, T, H, W]``: a square moving right (absent in frames 0-1) and a fixed disc."""
    masks = np.zeros((2, T, H, W), dtype=bool)
    yy, xx = np.mgrid[:H, :W]
    for t in range(T):
        if t >= 2:
            masks[0, t, 10:22, 2 + 3 * t : 14 + 3 * t] = True
        masks[1, t] = (yy - 34) ** 2 + (xx - 48) ** 2 <= 36
    return masks


@pytest.fixture(scope="module")
def result():
    masks = _masks()
    targets = [
        _Target([encode_mask(m) if m.any() else None for m in target], [mask_to_box(m) for m in target])
        for target in masks
    ]
    return _Result("the moving square", "Sure, [BOX] [SEG].", T, H, W, 6.0, targets)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return (rng.integers(0, 60, size=(T, H, W, 3))).astype(np.uint8)


def test_label_frame_marks_each_target(result):
    masks = _masks()
    labels = label_frame(result, 5)
    assert labels.dtype == np.uint8 and labels.shape == (H, W)
    assert np.array_equal(labels == 1, masks[0, 5] & ~masks[1, 5])
    assert np.array_equal(labels == 2, masks[1, 5])
    assert set(np.unique(label_frame(result, 0))) == {0, 2}  # target 1 absent


def test_coco_reads_back_with_pycocotools(result, tmp_path):
    path = write_coco(result, tmp_path / "coco.json", video_name="clip")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
    masks = _masks()
    assert len(gt.getImgIds()) == T and gt.loadCats(1)[0]["name"] == "the moving square"
    assert len(gt.getAnnIds()) == (T - 2) + T
    for ann in gt.loadAnns(gt.getAnnIds()):
        t, k = ann["image_id"] - 1, ann["track_id"] - 1
        assert np.array_equal(gt.annToMask(ann).astype(bool), masks[k, t])
        assert ann["area"] == masks[k, t].sum()
        x0, y0, x1, y1 = mask_to_box(masks[k, t])
        assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
    assert gt.getAnnIds(imgIds=[1]) and all(a["track_id"] == 2 for a in gt.loadAnns(gt.getAnnIds(imgIds=[1])))
    # The export as detections against itself: COCOeval finds every mask (AP 1.0).
    dets = [{**a, "score": 1.0} for a in gt.loadAnns(gt.getAnnIds())]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(dets), "segm")
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_boxes_csv_reads_back(result, tmp_path):
    path = write_boxes_csv(result, tmp_path / "boxes.csv")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == T * 2
    masks = _masks()
    by_key = {(int(r["frame"]), int(r["target"])): r for r in rows}
    assert by_key[(0, 1)]["x0"] == "" and by_key[(0, 1)]["area"] == ""
    row = by_key[(7, 1)]
    assert [float(row[c]) for c in ("x0", "y0", "x1", "y1")] == mask_to_box(masks[0, 7])
    assert int(row["area"]) == masks[0, 7].sum() and float(row["time_s"]) == pytest.approx(7 / 6.0, abs=1e-3)


def test_gif_reads_back_with_pil(result, frames, tmp_path):
    path = write_gif(result, iter_frames(frames), tmp_path / "preview.gif", max_side=32, max_frames=6)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 6 and gif.size == (32, 24)
        assert gif.info["duration"] == 330 and gif.info["loop"] == 0
        gif.seek(2)  # video frame 4
        rgb = np.asarray(gif.convert("RGB")).astype(int)
    disc = rgb[17, 24]  # the disc's centre (34, 48) at half scale: blended towards target 2's colour
    background = rgb[2, 30]
    expected = 0.5 * PALETTE[2]
    assert np.abs(disc - expected).max() < 45 and np.abs(background).max() < 70


def test_masks_zip_reads_back(result, tmp_path):
    doc = {"query": result.query, "targets": [{"index": 1}, {"index": 2}]}
    path = write_masks_zip(result, tmp_path / "masks.zip", doc)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert names == [f"masks/{t:05d}.png" for t in range(T)] + ["result.json"]
        assert json.loads(archive.read("result.json")) == doc
        for t in (0, 6, T - 1):
            with Image.open(io.BytesIO(archive.read(f"masks/{t:05d}.png"))) as png:
                assert png.mode == "P" and png.size == (W, H)
                assert np.array_equal(np.asarray(png), label_frame(result, t))
                assert png.getpalette()[3:9] == PALETTE[1:3].flatten().tolist()


def test_overlay_mp4_reads_back_with_pyav(result, frames, tmp_path):
    path = write_video(tmp_path / "overlay.mp4", (overlay_frame(result, t, f) for t, f in iter_frames(frames)), fps=6)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == pytest.approx(6.0)
    assert len(decoded) == T and decoded[0].shape == (H, W, 3)
    inside = decoded[5][30:38, 44:52].reshape(-1, 3).mean(0)  # the disc, blended towards target 2's colour
    assert np.abs(inside - (0.5 * PALETTE[2] + 0.5 * 30)).max() < 25
