"""Streaming segmentation into a folder: the same masks as ``pipeline.segment``; an interrupted run leaves nothing
that looks finished, and ``resume`` continues it to exactly the uninterrupted masks (track and framewise)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_clips import two_object_clip
from PIL import Image

from sparrow.data.video_io import probe_video, write_video
from sparrow.errors import SparrowError
from sparrow.pipeline import stream
from sparrow.pipeline.stream import partial_dir, segment_to_folder

QUERY = "the red square"
T = 20


@pytest.fixture(scope="module")
def pipeline():
    from sparrow.model.loading import build_tiny
    from sparrow.pipeline import SegmentationPipeline

    return SegmentationPipeline(build_tiny(seed=0, sam_image_size=64))  # the tiny preset with a 64-pixel SAM2: fast


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames, _, _ = two_object_clip(t=T, h=48, w=64)
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=5)


def _read(out):
    doc = json.loads((out / "result.json").read_text())
    pngs = np.stack([np.asarray(Image.open(out / "masks" / f"{t:05d}.png")) for t in range(T)])
    return doc, pngs


@pytest.fixture(scope="module")
def uninterrupted(pipeline, clip, tmp_path_factory):
    outs = {}
    for mode in ("track", "framewise"):
        out = tmp_path_factory.mktemp("full") / "out"
        report = segment_to_folder(pipeline, clip, QUERY, out, model_id="tiny-64", mode=mode, checkpoint_every=4)
        assert report.status == "written" and report.reused == 0
        outs[mode] = out
    return outs


def test_stream_writes_what_segment_computes(pipeline, clip, uninterrupted):
    doc, pngs = _read(uninterrupted["track"])
    result = pipeline.segment(str(clip), QUERY, mode="track")
    assert doc == json.loads(json.dumps(result.to_json()))
    assert np.array_equal(pngs == 1, result.masks)
    assert probe_video(uninterrupted["track"] / "overlay.mp4").num_frames == T
    assert sorted(p.name for p in uninterrupted["track"].iterdir()) == [
        ".sparrow-output.json",
        "masks",
        "overlay.mp4",
        "result.json",
    ]


@pytest.mark.parametrize("mode", ["track", "framewise"])
def test_interrupted_run_resumes_to_the_uninterrupted_masks(pipeline, clip, uninterrupted, tmp_path, monkeypatch, mode):
    out = tmp_path / "out"
    calls = {"n": 0}
    add = stream._Records.add

    def add_then_die(self, k, t, output):
        calls["n"] += 1
        if calls["n"] == 11:  # killed in the middle of the run, 3 masks after the checkpoint at 8
            raise KeyboardInterrupt
        add(self, k, t, output)

    monkeypatch.setattr(stream._Records, "add", add_then_die)
    with pytest.raises(KeyboardInterrupt):
        segment_to_folder(pipeline, clip, QUERY, out, model_id="tiny-64", mode=mode, checkpoint_every=4)
    monkeypatch.setattr(stream._Records, "add", add)
    assert not out.exists() and not list(tmp_path.rglob("result.json"))  # nothing looks finished
    assert len((partial_dir(out) / "records.jsonl").read_text().splitlines()) == 10

    report = segment_to_folder(
        pipeline, clip, QUERY, out, model_id="tiny-64", mode=mode, checkpoint_every=4, resume=True
    )
    assert report.status == "written" and report.reused == 8 and not partial_dir(out).exists()
    doc, pngs = _read(out)
    want_doc, want_pngs = _read(uninterrupted[mode])
    assert doc == want_doc and np.array_equal(pngs, want_pngs)

    again = segment_to_folder(pipeline, clip, QUERY, out, model_id="tiny-64", mode=mode, resume=True)
    assert again.status == "finished" and again.result is None


def test_resume_refuses_a_partial_run_of_other_settings(pipeline, clip, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(stream._Records, "add", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        segment_to_folder(pipeline, clip, QUERY, out, model_id="tiny-64", mode="framewise")
    monkeypatch.undo()
    with pytest.raises(SparrowError, match="different query"):
        segment_to_folder(pipeline, clip, "the blue disc", out, model_id="tiny-64", mode="framewise", resume=True)
    assert partial_dir(out).exists() and not out.exists()
