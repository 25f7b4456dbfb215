"""Per-user state of the web app: upload checks, one private folder per browser session, the frames of its video.

Isolation: each browser session (Gradio's ``session_hash``) gets its own folder under the app's root; handlers find
files only through server-side session state, never through a path the browser sends. The root is not one of
Gradio's allowed paths, so nothing in it is served directly; what a handler returns is copied into Gradio's cache
under a name derived from a secret-seeded hash of the content, reachable only by the session that received the URL.
A session's folder is deleted when its page is closed and the whole root when the app stops.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sparrow.data.video_io import VideoInfo, iter_frames, probe_video
from sparrow.errors import SparrowError


@dataclass(frozen=True)
class UploadLimits:
    """What the app accepts: ``max_mb`` per upload (checked by Gradio before the upload), and a video length cap."""

    max_mb: int = 200
    max_frames: int = 3000
    max_seconds: float = 300.0

    def check_video(self, path: str | Path) -> VideoInfo:
        """Probe ``path`` and check it against the limits; raises :class:`SparrowError` with a message for the user."""
        path = Path(path)
        name = path.name
        size_mb = path.stat().st_size / 2**20 if path.exists() else 0.0
        if size_mb > self.max_mb:
            raise SparrowError(f"{name} is {size_mb:.0f} MB; this app accepts videos up to {self.max_mb} MB")
        try:
            info = probe_video(path)
        except SparrowError as exc:
            raise SparrowError(
                f"{name} is not a video this app can read ({_reason(exc)}); upload an MP4, WebM or MOV file"
            ) from exc
        seconds = info.num_frames / max(info.fps, 1e-6)
        if info.num_frames > self.max_frames or seconds > self.max_seconds:
            raise SparrowError(
                f"{name} is too long: {info.num_frames} frames ({seconds:.0f} s); this app takes at most "
                f"{self.max_frames} frames and {self.max_seconds:.0f} s (use `sparrow segment` for long videos)"
            )
        return info


def _reason(exc: SparrowError) -> str:
    """The problem part of a SparrowError message, without the server-side path it names."""
    text = str(exc)
    return text.split(": ", 1)[1] if exc.path and text.startswith(exc.path) else text


@dataclass
class VideoView:
    """A checked video of one session and its frames for display (JPEG, longer side ``display_side``).

    ``scale`` maps original pixels to display pixels (display = original * scale)."""

    path: Path
    info: VideoInfo
    frames_dir: Path
    scale: float

    def frame(self, t: int) -> np.ndarray:
        """Display frame ``t`` ``[h, w, 3]`` uint8."""
        if not 0 <= t < self.info.num_frames:
            raise SparrowError(f"frame {t} out of range for {self.info.num_frames} frames")
        with Image.open(self.frames_dir / f"{t:05d}.jpg") as img:
            return np.asarray(img.convert("RGB"))

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """Display pixel -> original pixel coordinates, clipped to the frame."""
        return (
            min(max(x / self.scale, 0.0), float(self.info.width)),
            min(max(y / self.scale, 0.0), float(self.info.height)),
        )


_SAFE = re.compile(r"[^A-Za-z0-9_-]")


class SessionStore:
    """One private folder per browser session under ``root`` (a fresh temporary folder by default)."""

    def __init__(self, root: str | Path | None = None, display_side: int = 512) -> None:
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="sparrow-app-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.display_side = display_side

    def folder(self, session: str) -> Path:
        """The folder of ``session`` (created on first use)."""
        name = _SAFE.sub("_", session or "anonymous")[:64]
        path = self.root / "sessions" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def fresh(self, session: str, kind: str) -> Path:
        """An empty ``kind`` folder of ``session`` (``video`` or ``run``); the previous one is deleted first, so a
        session keeps one video and one run on disk."""
        path = self.folder(session) / kind
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        return path

    def drop(self, session: str) -> None:
        """Delete everything of ``session``."""
        shutil.rmtree(self.root / "sessions" / _SAFE.sub("_", session or "anonymous")[:64], ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def open_video(self, session: str, path: str | Path, limits: UploadLimits) -> VideoView:
        """Check an uploaded video, copy it into the session's folder and extract its display frames."""
        info = limits.check_video(path)
        folder = self.fresh(session, "video")
        local = folder / f"input{Path(path).suffix.lower() or '.mp4'}"
        shutil.copyfile(path, local)
        frames_dir = folder / "frames"
        frames_dir.mkdir()
        scale = self.display_side / max(info.height, info.width)  # small videos are enlarged, large ones reduced
        size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
        count = 0
        for t, frame in iter_frames(local):
            Image.fromarray(frame).resize(size, Image.BILINEAR).save(frames_dir / f"{t:05d}.jpg", quality=90)
            count += 1
        if count != info.num_frames:  # the container's frame count was wrong: trust the decoded frames
            info = VideoInfo(count, info.height, info.width, info.fps)
        return VideoView(local, info, frames_dir, scale)
