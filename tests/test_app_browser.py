"""`sparrow app` in a real browser: Debian's Chromium driven by Playwright (pytest-playwright's ``page``).

The app runs in this process on a free local port with the bundled model. One test uploads a clip, types a query,
runs it, checks the overlay video, the frame slider, a TSF box drawn with two clicks, the masks.zip download and a
grounded chat answer, that another browser session sees none of it and that a session's folder is not served; it
saves a screenshot
(``SPARROW_APP_SCREENSHOT=docs/images/app.png`` to refresh the README's). The other sends an oversized upload, a
non-video file, a text file named .mp4 and a too long video, reads the message each gets, and then runs a clip.
Needs ``chromium`` on PATH (``apt-get install chromium``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)"
)

MAX_MB, MAX_FRAMES = 1, 100


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Drive the system Chromium; Playwright's own browser download is neither needed nor reachable."""
    return {**browser_type_launch_args, "executable_path": shutil.which("chromium")}


@pytest.fixture(scope="module")
def app():
    from sparrow.app.models import ModelPool
    from sparrow.app.server import start_app
    from sparrow.app.session import UploadLimits

    pool = ModelPool(["default"], device="cpu")
    pool.get("default")  # load before the browser waits on it
    running = start_app(pool, UploadLimits(max_mb=MAX_MB, max_frames=MAX_FRAMES), demo=False)
    yield running
    running.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from sparrow.app.server import make_demo_clip

    return make_demo_clip(tmp_path_factory.mktemp("clip"), seed=0)


def _load(page, app, path: Path, frames: int) -> None:
    page.goto(app.url)
    page.set_input_files("#video-in input[type=file]", str(path))
    page.wait_for_selector(f"#status:has-text('{frames} frames')", timeout=20_000)


def _run(page) -> str:
    page.click("#run")
    page.wait_for_function("document.querySelector('#answer textarea').value.length > 0", timeout=40_000)
    return page.input_value("#answer textarea")


def test_upload_query_run_overlay_slider_boxes_download(app, clip, page, browser, tmp_path):
    page.set_viewport_size({"width": 1280, "height": 1000})
    _load(page, app, clip.path, 24)
    page.fill("#query textarea", clip.query)
    assert "[SEG]" in _run(page)

    # The overlay plays in the browser (H.264) and is the clip with the masks of masks.zip blended in.
    page.wait_for_function(
        "(v => v && v.readyState >= 1 && v.videoWidth > 0)(document.querySelector('#overlay video'))", timeout=20_000
    )
    video = page.evaluate("(v => [v.videoWidth, v.videoHeight, v.duration])(document.querySelector('#overlay video'))")
    assert video[:2] == [128, 128] and video[2] == pytest.approx(3.0, abs=0.2)
    with page.expect_download() as download:
        page.click("#downloads a[download='masks.zip']")
    download.value.save_as(tmp_path / "masks.zip")
    with zipfile.ZipFile(tmp_path / "masks.zip") as archive:
        labels = np.stack([np.asarray(Image.open(io.BytesIO(archive.read(f"masks/{t:05d}.png")))) for t in range(24)])
        doc = json.loads(archive.read("result.json"))
    assert doc["num_frames"] == 24 and doc["query"] == clip.query and labels.shape == (24, 128, 128)
    assert (labels == 1).any()
    src = page.evaluate("document.querySelector('#overlay video').currentSrc")
    with urllib.request.urlopen(src) as response, av.open(io.BytesIO(response.read())) as container:
        overlay = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(clip.path)) as container:
        original = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    changed = np.abs(overlay.astype(int) - original.astype(int)).max(-1) > 40
    assert overlay.shape == (24, 128, 128, 3)
    assert changed[labels == 1].mean() > 0.5 > changed[labels == 0].mean()

    # Key frame and score; the slider shows another frame; two clicks draw a TSF box on it.
    key = doc["targets"][0]["key_frame"]
    assert f"key frame {key}" in page.inner_text("#key-info") and "selection score" in page.inner_text("#key-info")
    before = page.locator("#frame-view img").get_attribute("src")
    page.fill("#frame-slider input[type=number]", "5")
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.querySelector('#frame-view img').src != {json.dumps(before)}", timeout=10_000)
    image = page.locator("#frame-view img")
    box = image.bounding_box()
    before = image.get_attribute("src")
    image.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.25})
    page.wait_for_function(f"document.querySelector('#frame-view img').src != {json.dumps(before)}", timeout=10_000)
    image.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    page.wait_for_function("document.querySelector('#tsf-boxes textarea').value.startsWith('5:')", timeout=10_000)
    coords = [float(v) for v in page.input_value("#tsf-boxes textarea").split(":")[1].split(",")]
    assert coords == pytest.approx([32, 32, 64, 64], abs=3)  # a quarter and a half of the 128-pixel frame
    page.screenshot(path=os.environ.get("SPARROW_APP_SCREENSHOT", str(tmp_path / "app.png")), full_page=True)

    # Chat tab: a question about the same video; the grounded answer comes with its masks.
    page.get_by_role("tab", name="Chat").click()
    page.fill("#chat-input textarea", clip.query)
    page.click("#chat-send")
    page.locator("#chat", has_text="mask:").wait_for(timeout=40_000)
    page.wait_for_function(
        "(v => v && v.readyState >= 1 && v.videoWidth == 128)(document.querySelector('#chat-overlay video'))",
        timeout=20_000,
    )
    page.get_by_role("tab", name="Segment").click()

    # Another user: a fresh page sees no result; files in a session's folder are not served at all.
    other = browser.new_page()
    other.goto(app.url)
    other.wait_for_selector("#run")
    assert other.input_value("#answer textarea") == "" and other.locator("#overlay video").count() == 0
    other.close()
    private = next(app.store.root.glob("sessions/*/run/masks.zip"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{app.url}gradio_api/file={private}")
    assert refused.value.code == 403


def _expect_message(page, text: str) -> None:
    """A toast saying ``text`` appears (the player may add its own, e.g. "Video not playable"); then close all."""
    page.locator(".toast-body", has_text=text).first.wait_for(timeout=15_000)
    page.evaluate("document.querySelectorAll('.toast-close').forEach(b => b.click())")
    page.wait_for_selector(".toast-body", state="detached", timeout=5_000)


def test_bad_uploads_get_a_message_and_the_server_keeps_serving(app, clip, page, tmp_path):
    from sparrow.data.video_io import write_video

    rng = np.random.default_rng(0)
    big = write_video(
        tmp_path / "big.mp4", (rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(40)), fps=10
    )
    assert big.stat().st_size > MAX_MB * 2**20
    long = write_video(
        tmp_path / "long.mp4", (np.full((32, 32, 3), t, np.uint8) for t in range(MAX_FRAMES + 20)), fps=30
    )
    (tmp_path / "notes.txt").write_text("not a video\n")
    (tmp_path / "fake.mp4").write_text("not a video either\n")

    for path, expected in (
        (big, "exceed the maximum allowed size"),
        (tmp_path / "notes.txt", "Invalid file type: notes.txt"),
        (tmp_path / "fake.mp4", "fake.mp4 is not a video this app can read"),
        (long, f"long.mp4 is too long: {MAX_FRAMES + 20} frames"),
    ):
        page.goto(app.url)  # a fresh page each time: the player keeps a rejected file on show
        page.set_input_files("#video-in input[type=file]", str(path))
        _expect_message(page, expected)
        if path.suffix == ".mp4" and path != big:  # checked by the server: also shown on the page
            assert expected in page.inner_text("#status")
    page.click("#run")  # nothing loaded: a message, not a traceback
    _expect_message(page, "Upload a video or pick the demo clip first")

    # Still serving: a page loads a good clip and runs it.
    page.goto(app.url)
    page.set_input_files("#video-in input[type=file]", str(clip.path))
    page.wait_for_selector("#status:has-text('24 frames')", timeout=20_000)
    page.fill("#query textarea", clip.query)
    assert "[SEG]" in _run(page)
