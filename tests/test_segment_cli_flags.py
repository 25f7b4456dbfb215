"""`sparrow segment` flags (--mode track, --key-frame, --tsf-box, --self-tsf) and `sparrow demo`, through the CLI,
with the bundled default model; each checked against the Python API on the same video or against ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparrow.cli import main
from sparrow.data.rle import decode_rle
from sparrow.data.synthref import SynthConfig, make_video
from sparrow.data.video_io import probe_video, write_video
from sparrow.model import loading
from sparrow.pipeline import load
from sparrow.pipeline.demo import DEMO_CLIP, mean_iou


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    record, frames = make_video("test", 1, 0, SynthConfig(size=128, num_frames=24))
    expression = record.expressions[0]
    path = write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=8)
    return path, expression.text, record.target_boxes(expression)


@pytest.fixture(scope="module")
def pipe():
    return load("default", device="cpu")


def _segment(clip, out: Path, *flags: str) -> dict:
    path, text, _ = clip
    assert main(["segment", str(path), text, "--out", str(out), "--model", "default", "--quiet", *flags]) == 0
    return json.loads((out / "result.json").read_text())


def _rles(result: dict) -> list:
    return [f["rle"] for f in result["targets"][0]["frames"]]


def test_mode_track_writes_what_the_api_computes(clip, pipe, tmp_path, capsys):
    got = _segment(clip, tmp_path / "out", "--mode", "track")
    assert got["mode"] == "track" and "answer: Sure, it is [BOX] [SEG]." in capsys.readouterr().out
    api = pipe.segment(clip[0], clip[1], mode="track").to_json()
    assert _rles(got) == _rles(api) and got["targets"][0]["key_frame"] == api["targets"][0]["key_frame"]
    pngs = sorted((tmp_path / "out" / "masks").iterdir())
    for png, rle in zip(pngs, _rles(got)):  # the palette PNGs hold the same masks
        mask = np.zeros((128, 128), bool) if rle is None else decode_rle(rle, (128, 128))
        assert np.array_equal(np.asarray(Image.open(png)) == 1, mask)


def test_key_frame_prompts_on_the_given_frame(clip, pipe, tmp_path):
    got = _segment(clip, tmp_path / "out", "--key-frame", "3", "--mode", "framewise")
    api = pipe.segment(clip[0], clip[1], mode="framewise", key_frame=3).to_json()
    assert got["targets"][0]["key_frame"] == 3 and got["targets"][0]["key_box"] == api["targets"][0]["key_box"]
    assert _rles(got) == _rles(api)
    auto = _segment(clip, tmp_path / "auto", "--key-frame", "auto", "--mode", "framewise")
    assert auto["targets"][0]["key_frame"] == 23 and auto["targets"][0]["key_box"] != got["targets"][0]["key_box"]


def test_tsf_boxes_from_the_command_line(clip, pipe, tmp_path):
    boxes = clip[2]
    flags = [f"{t}:{','.join(str(v) for v in boxes[t])}" for t in (2, 16)]
    got = _segment(clip, tmp_path / "out", "--mode", "framewise", "--tsf-box", flags[0], "--tsf-box", flags[1])
    # two boxes, fewer than K: both frames become crops, with the boxes as given
    assert got["tsf"] == {"source": "boxes", "entries": [[2, *boxes[2]], [16, *boxes[16]]]}
    api = pipe.segment(clip[0], clip[1], mode="framewise", tsf_boxes={2: boxes[2], 16: boxes[16]}).to_json()
    assert got["targets"][0]["selection_score"] == pytest.approx(api["targets"][0]["selection_score"], abs=1e-6)
    assert _rles(got) == _rles(api)  # that the crops reach the VLM's states: tests/test_pipeline_values.py


def test_self_tsf_from_the_command_line(clip, pipe, tmp_path):
    got = _segment(clip, tmp_path / "out", "--mode", "framewise", "--self-tsf")
    first = pipe.segment(clip[0], clip[1], mode="framewise").to_json()["targets"][0]["frames"]
    entries = got["tsf"]["entries"]
    assert got["tsf"]["source"] == "self" and len(entries) == pipe.config.tsf_k
    for frame, *box in entries:
        assert box == pytest.approx(first[frame]["box"])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tsf-box", "3:1,2,3"], "--tsf-box '3:1,2,3': need 4 numbers X0,Y0,X1,Y1, got 3"),
        (["--tsf-box", "3:10,10,5,20"], "need X1 > X0 and Y1 > Y0"),
        (["--tsf-box", "99:1,2,3,4"], "frame 99 is out of range, the video has 24 frames"),
        (["--key-frame", "first"], "--key-frame must be 'auto' or a frame index"),
        (["--key-frame", "24"], "--key-frame 24 is out of range: the video has 24 frames"),
    ],
)
def test_bad_flags_are_one_line_errors(clip, tmp_path, capsys, flags, message):
    path, text, _ = clip
    assert main(["segment", str(path), text, "--out", str(tmp_path / "out"), "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparrow segment: error:") and "\n" not in err
    assert message in err, err
    assert not (tmp_path / "out").exists()


def test_demo_through_the_cli(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    record, _ = make_video("test", 0, 0, DEMO_CLIP)
    expression = record.expressions[0]
    assert (out / "query.txt").read_text() == expression.text + "\n"
    assert f"query : {expression.text}" in printed and "answer: Sure, it is [BOX] [SEG]." in printed
    assert (
        probe_video(out / "input.mp4").num_frames == 24 and probe_video(out / "result" / "overlay.mp4").num_frames == 24
    )
    assert len(list((out / "result" / "masks").glob("*.png"))) == 24
    result = json.loads((out / "result" / "result.json").read_text())
    masks = np.stack([np.zeros((128, 128), bool) if r is None else decode_rle(r, (128, 128)) for r in _rles(result)])
    score = mean_iou(masks, record.target_masks(expression))
    assert f"mean mask IoU against the generated ground truth: {score:.3f}" in printed  # the file's masks
    assert score > 0.7  # 0.89 measured on the frames read back from input.mp4 (the bundled model's card)


def test_demo_without_bundled_weights_runs_the_tiny_preset(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loading, "BUNDLED_DIR", tmp_path / "nothing")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--mode", "framewise"]) == 0
    printed = capsys.readouterr().out
    assert "no trained default model is bundled" in printed and "untrained tiny preset" in printed
    assert json.loads((tmp_path / "demo" / "result" / "result.json").read_text())["mode"] == "framewise"
