"""Frames decoded and wall time of one ``segment()`` call in track mode, this code against an older revision.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_video_source.py [--frames 600] [--gops 250 12] [--baseline 1501a36]

A ``--frames``-frame MP4 (128 x 160, H.264, a keyframe every GOP frames) is segmented by the tiny preset with the
key frame in the middle (``key_frame = frames // 2``), so propagation runs forward to the end and backward to the
start. Decoded frames are counted at PyAV (every frame a container's ``decode`` yields), the same way for both
revisions; the baseline revision runs from a ``git worktree`` in a subprocess with the same seed, and its masks are
compared with ours. Printed per GOP: frames decoded (and as a multiple of the video length), seconds, and the
ratios new / baseline. ``--baseline`` takes any revision (e.g. the last main commit, to time a change against it).

Track mode decodes such a clip once, in order (T frames), when its frames resized to SAM2's input fit the
pipeline's ``FRAME_CACHE_BYTES`` (``pipeline/segment.py``); a longer video is read with seeks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from sparrow.data.video_io import write_video

REPO = Path(__file__).resolve().parent.parent

# Runs inside one process for one revision: counts decoded frames at PyAV and times the segment() call.
MEASURE = textwrap.dedent(
    """
    import json, sys, time
    import av, numpy as np, torch
    torch.set_num_threads(1)
    import sparrow.data.video_io as vio

    counter = {"decoded": 0}

    class CountingContainer:
        def __init__(self, inner):
            self._inner = inner
        def __getattr__(self, name):
            return getattr(self._inner, name)
        def decode(self, *args, **kwargs):
            for frame in self._inner.decode(*args, **kwargs):
                counter["decoded"] += 1
                yield frame

    real_open = av.open
    vio.av.open = lambda *a, **k: CountingContainer(real_open(*a, **k))
    import sparrow
    path, key, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    model = sparrow.load("tiny", device="cpu")
    counter["decoded"] = 0
    start = time.perf_counter()
    result = model.segment(path, "the red circle", mode="track", key_frame=key)
    seconds = time.perf_counter() - start
    np.save(out, result.masks)
    print(json.dumps({"decoded": counter["decoded"], "seconds": seconds}))
    """
)


def write_clip(path: Path, frames: int, gop: int) -> Path:
    """A moving red disc on a textured background, H.264 with a keyframe every ``gop`` frames."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 80, (128, 160, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:128, :160]

    def clip():
        for t in range(frames):
            img = background.copy()
            cx = 20 + (t * 3) % 120
            img[(yy - 64) ** 2 + (xx - cx) ** 2 < 150] = (230, 30, 30)
            yield img

    write_video(path, clip(), fps=25, keyframe_interval=gop)
    return path


def measure(src: Path, video: Path, key: int, masks: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(video), str(key), str(masks)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--gops", type=int, nargs="+", default=[250, 12])
    parser.add_argument("--baseline", default="1501a36", help="git revision to compare with (before the Video source)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "baseline"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.baseline],
            check=True,
            capture_output=True,
        )
        try:
            print(f"{args.frames}-frame MP4, 128x160, key frame {args.frames // 2}, track mode, tiny preset")
            print(
                "gop | decoded new (x T) | decoded baseline (x T) | s new | s baseline | decoded ratio | time ratio | masks equal"
            )
            for gop in args.gops:
                video = write_clip(tmp / f"clip_{gop}.mp4", args.frames, gop)
                start = time.perf_counter()
                new = measure(REPO / "src", video, args.frames // 2, tmp / "new.npy")
                old = measure(base / "src", video, args.frames // 2, tmp / "old.npy")
                same = np.array_equal(np.load(tmp / "new.npy"), np.load(tmp / "old.npy"))
                t = args.frames
                print(
                    f"{gop:>3} | {new['decoded']:>6} ({new['decoded'] / t:.2f}) | {old['decoded']:>6} ({old['decoded'] / t:.2f})"
                    f" | {new['seconds']:.1f} | {old['seconds']:.1f} | {new['decoded'] / old['decoded']:.3f}"
                    f" | {new['seconds'] / old['seconds']:.3f} | {same}   ({time.perf_counter() - start:.0f} s)"
                )
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], capture_output=True, check=False
            )


if __name__ == "__main__":
    main()
