"""`sparrow segment --batch`: 20 pairs with 2 broken lines finish the 18 with one model load, report the 2 per line,
and a re-run does no work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparrow.cli import main
from sparrow.data.video_io import write_video

N = 20


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """The tiny preset with a 64-pixel SAM2 (a saved folder, as `--model PATH` takes it): faster than `tiny`."""
    from sparrow.model.loading import build_tiny, save_pretrained

    return str(save_pretrained(build_tiny(seed=0, sam_image_size=64), tmp_path_factory.mktemp("model") / "tiny64"))


@pytest.fixture()
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    clips = []
    for i in range(3):
        frames = rng.integers(0, 60, size=(4, 32, 32, 3), dtype=np.uint8)
        frames[:, 8:20, 4 + 4 * i : 16 + 4 * i] = (220, 40, 40)
        clips.append(write_video(tmp_path / "clips" / f"clip{i}.mp4", frames, fps=4).name)
    lines = [
        json.dumps({"video": f"clips/{clips[i % 3]}", "query": f"the red square {i}", "out": f"runs/{i:02d}"})
        for i in range(N)
    ]
    lines[6] = json.dumps({"video": "clips/missing.mp4", "query": "the red square", "out": "runs/06"})  # no such video
    lines[13] = '{"video": "clips/clip0.mp4", "query": '  # truncated JSON
    path = tmp_path / "manifest.jsonl"
    path.write_text("# twenty pairs\n" + "\n".join(lines) + "\n")
    return path


def test_batch_finishes_the_good_lines_reports_the_bad_and_reruns_for_free(manifest, small_model, monkeypatch, capsys):
    import sparrow.pipeline.segment as segment_module

    loads = []
    real_load = segment_module.load
    monkeypatch.setattr(segment_module, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    argv = ["segment", "--batch", str(manifest), "--model", small_model, "--mode", "framewise", "--quiet"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "18 written, 0 already finished, 2 failed (lines 8, 15)" in out  # manifest line = pair + 2 (comment)
    assert "line 8: " in out and "no such video file" in out and "line 15: not JSON" in out
    runs = manifest.parent / "runs"
    done = sorted(p.name for p in runs.iterdir())
    assert done == [f"{i:02d}" for i in range(N) if i not in (6, 13)] and len(loads) == 1
    result = json.loads((runs / "07" / "result.json").read_text())
    assert (
        result["query"] == "the red square 7" and result["num_frames"] == 4 and (runs / "07" / "overlay.mp4").exists()
    )
    report = json.loads(manifest.with_suffix(".report.json").read_text())
    assert len(report["written"]) == 18 and sorted(report["failed"]) == ["15", "8"]

    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*")}
    assert main(argv) == 1
    assert "0 written, 18 already finished, 2 failed" in capsys.readouterr().out
    assert len(loads) == 1  # nothing to do: the model is not even loaded
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*")} == stamps


def test_batch_rejects_single_run_arguments(manifest, capsys):
    assert main(["segment", "clip.mp4", "a query", "--batch", str(manifest)]) == 2
    assert "takes its videos, queries and outputs from the manifest" in capsys.readouterr().err
