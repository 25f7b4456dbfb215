"""Start and stop the app: one temporary root (sessions, Gradio's upload cache, the demo clip), the queue, the server.

Binding: ``127.0.0.1`` unless a host is given. Gradio refuses uploads over ``limits.max_mb`` before they reach a
handler; the queue runs one segmentation at a time and holds at most ``queue_size`` waiting requests.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from sparrow.app.models import ModelPool
from sparrow.app.session import SessionStore, UploadLimits
from sparrow.app.ui import DemoClip, build_app


def make_demo_clip(folder: Path, seed: int = 0) -> DemoClip:
    """A SynthRef test clip (24 frames, 128x128, 8 fps) and its first expression, written into ``folder``."""
    from sparrow.data.synthref.generate import SynthConfig, make_video
    from sparrow.data.video_io import write_video

    record, frames = make_video("test", seed, 0, SynthConfig(size=128, num_frames=24))
    path = write_video(folder / "demo.mp4", frames, fps=8)
    return DemoClip(path, record.expressions[0].text)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningApp:
    """A launched app: its address, its root folder, and how to stop it."""

    url: str
    blocks: object
    store: SessionStore

    def close(self) -> None:
        self.blocks.close()
        self.store.close()


def start_app(
    pool: ModelPool,
    limits: UploadLimits | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    demo: bool = True,
    queue_size: int = 16,
    root: str | Path | None = None,
) -> RunningApp:
    """Build, queue and launch the app in background threads; ``close()`` the result to stop it.

    Gradio's upload cache goes under the app's root (``GRADIO_TEMP_DIR`` is set for this process), so stopping
    the app removes every uploaded and generated file."""
    limits = limits or UploadLimits()
    store = SessionStore(root)
    os.environ["GRADIO_TEMP_DIR"] = str(store.root / "gradio")  # read by each component when it is built
    clip = make_demo_clip(store.root / "demo") if demo else None
    blocks = build_app(pool, store, limits, clip)
    blocks.queue(default_concurrency_limit=1, max_size=queue_size)
    port = port or free_port(host)
    blocks.launch(
        server_name=host,
        server_port=port,
        max_file_size=f"{limits.max_mb}mb",
        prevent_thread_lock=True,
        quiet=True,
        show_error=False,
        ssr_mode=False,
    )
    return RunningApp(f"http://{host}:{port}/", blocks, store)
