"""The app's handlers without a browser: TSF boxes from clicks reach the pipeline, per-session folders, messages."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from sparrow.app.models import ModelPool
from sparrow.app.session import SessionStore, UploadLimits
from sparrow.app.ui import AppHandlers, SessionState
from sparrow.cli import main
from sparrow.data.video_io import write_video


@pytest.fixture(scope="module")
def handlers(tmp_path_factory):
    from sparrow.pipeline import load

    pool = ModelPool(["tiny"], device="cpu")
    pool.preload("tiny", load("tiny", device="cpu"))
    store = SessionStore(tmp_path_factory.mktemp("root"), display_side=128)
    return AppHandlers(pool, store, UploadLimits(max_mb=5, max_frames=30), demo=None)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames = np.full((8, 48, 64, 3), 40, np.uint8)
    for t in range(8):
        frames[t, 10:26, 4 + 3 * t : 20 + 3 * t] = (230, 40, 40)
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=4)


def _request(session: str):
    return SimpleNamespace(session_hash=session)


def test_clicks_make_a_tsf_box_that_the_next_run_uses(handlers, clip):
    state = SessionState()
    state, _slider, image, status, _ = handlers.on_upload(str(clip), state, _request("alice"))
    assert "8 frames, 64x48" in status and image.shape == (96, 128, 3)  # display scale 2
    state, _, text = handlers.on_click(3, "", state, SimpleNamespace(index=[8, 20]))
    assert state.corner == (4.0, 10.0) and text == ""
    state, _, text = handlers.on_click(3, text, state, SimpleNamespace(index=[40, 52]))
    assert text == "3:4,10,20,26" and state.corner is None
    out = handlers.on_run(
        "the red square", "tiny", "framewise", "", False, text, state, _request("alice"), progress=lambda *a, **k: None
    )
    state, _answer, overlay, *_, downloads = out
    assert state.result.extra["tsf"]["source"] == "boxes" and state.result.extra["tsf"]["entries"]
    assert [p.split("/")[-1] for p in downloads] == [
        "masks.zip",
        "result.json",
        "coco.json",
        "boxes.csv",
        "preview.gif",
    ]
    assert "/sessions/alice/run/" in overlay
    handlers.on_unload(_request("alice"))
    assert not (handlers.store.root / "sessions" / "alice").exists()


def test_user_mistakes_are_messages(handlers, clip, tmp_path):
    state = SessionState()
    with pytest.raises(gr.Error, match="Upload a video"):
        handlers.on_run("q", "tiny", "track", "", False, "", state, _request("bob"), progress=lambda *a, **k: None)
    state, *_ = handlers.on_upload(str(clip), state, _request("bob"))
    with pytest.raises(gr.Error, match="key-frame must be 'auto' or a frame index"):
        handlers.on_run("q", "tiny", "track", "first", False, "", state, _request("bob"), progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="frame 99 is out of range, the video has 8 frames"):
        handlers.on_run(
            "q", "tiny", "track", "", False, "99:1,1,5,5", state, _request("bob"), progress=lambda *a, **k: None
        )
    long = write_video(tmp_path / "long.mp4", (np.zeros((16, 16, 3), np.uint8) for _ in range(40)), fps=4)
    state, _, image, status, _ = handlers.on_upload(str(long), state, _request("bob"))
    assert state.view is None and image is None and "long.mp4 is too long: 40 frames" in status


def test_app_command_checks_its_limits(capsys):
    assert main(["app", "--max-frames", "0"]) == 2
    assert "--max-frames must be at least 1" in capsys.readouterr().err
