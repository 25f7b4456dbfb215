"""`sparrow segment` end to end, and its one-line errors for bad input (no partial output)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
from helpers_clips import two_object_clip
from PIL import Image

from sparrow.cli import main
from sparrow.data.video_io import probe_video, write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames, _, _ = two_object_clip(t=10, h=64, w=96)
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=5)


def test_segment_writes_masks_json_and_overlay(clip, tmp_path):
    out = tmp_path / "out"
    assert main(["segment", str(clip), "the red square", "--out", str(out), "--model", "tiny", "--quiet"]) == 0
    pngs = sorted((out / "masks").iterdir())
    assert len(pngs) == 10
    img = Image.open(pngs[0])
    assert img.mode == "P" and img.size == (96, 64)
    data = json.loads((out / "result.json").read_text())
    assert data["num_frames"] == 10 and len(data["targets"][0]["frames"]) == 10 and data["vlm_frame_indices"]
    for entry, png in zip(data["targets"][0]["frames"], pngs):  # PNG index 1 == RLE mask
        from sparrow.data.rle import decode_rle

        index = np.asarray(Image.open(png))
        expected = decode_rle(entry["rle"], (64, 96)) if entry["rle"] else np.zeros((64, 96), bool)
        assert np.array_equal(index == 1, expected)
    assert probe_video(out / "overlay.mp4").num_frames == 10


def _run(args, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "sparrow", "segment", *args, "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc, out


@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing", "no such video file"),
        ("corrupt", "cannot open video"),
        ("zero_frames", "zero frames|no video stream"),
        ("empty_query", "query is empty"),
        ("no_weights", "has no weights"),
    ],
)
def test_bad_input_is_one_line_nonzero_and_writes_nothing(case, expected, clip, tmp_path):
    video, query, model = str(clip), "the red square", "tiny"
    if case == "missing":
        video = str(tmp_path / "nope.mp4")
    elif case == "corrupt":
        bad = tmp_path / "bad.mp4"
        bad.write_bytes(b"not a video" * 100)
        video = str(bad)
    elif case == "zero_frames":
        empty = tmp_path / "empty.mp4"
        container = av.open(str(empty), mode="w")
        stream = container.add_stream("libx264", rate=Fraction(5))
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
        container.close()
        video = str(empty)
    elif case == "empty_query":
        query = "   "
    elif case == "no_weights":
        (tmp_path / "model" / "vlm").mkdir(parents=True)
        model = str(tmp_path / "model")
    proc, out = _run([video, query, "--model", model], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("sparrow segment: error:")]
    assert len(lines) == 1 and re.search(expected, lines[0]), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
