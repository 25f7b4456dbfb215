"""Long videos: peak memory of a streamed `sparrow segment` vs video length, I/O throughput, and kill + resume.

Command (CPU, tiny preset with a 64-pixel SAM2; at 10-14 masks/s on a busy 2-core machine the whole script takes
about 40 minutes, the 20,000-frame run 33 of them, so run it in the background):

    PYTHONPATH=src python benchmarks/bench_long_video.py [--lengths 2000 20000] [--kill-frames 240]

(1) For each length, in a fresh process: a 64x64 MP4 of a moving square is written (streamed), then segmented in
track mode into an output folder by `segment_to_folder` (what `sparrow segment` runs: frames decoded as needed,
masks appended as computed, checkpoints, PNGs, result.json, overlay.mp4). Printed: peak resident memory during the
call (sampled every 2 ms) and the process's ru_maxrss, masks/s of the whole call, and the decode + write
throughput in frames/s (decoding the video, writing one palette PNG per frame and encoding the overlay MP4 from
the result, `write_segmentation`). Then the ratio of the peaks, longest / shortest (aim <= 1.2).
(2) Kill + resume: a child process segments a `--kill-frames` clip with a checkpoint every 32 frames and is
killed with SIGKILL once about half its masks are on disk; a second child resumes it; the result (result.json
RLEs and every PNG) is compared with an uninterrupted run of the same clip.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from peak_rss import PeakRSS

QUERY = "the red square"


def make_clip(path: Path, frames: int, size: int = 64) -> Path:
    """A red square moving on a grey background, written frame by frame (no array of the whole video)."""
    from sparrow.data.video_io import write_video

    def gen():
        for i in range(frames):
            f = np.full((size, size, 3), 60, np.uint8)
            x = 4 + int((size - 24) * (0.5 + 0.5 * np.sin(i / 25)))
            f[20:36, x : x + 16] = (230, 40, 40)
            yield f

    return write_video(path, gen(), fps=25)


def tiny_pipeline():
    from sparrow.model.loading import build_tiny
    from sparrow.pipeline import SegmentationPipeline

    torch.manual_seed(0)
    return SegmentationPipeline(build_tiny(seed=0, sam_image_size=64))


def child_length(frames: int, workdir: Path) -> dict:
    """One length: write the clip, segment it streamed, then time decode + write alone."""
    from sparrow.data.video_io import Video
    from sparrow.pipeline.stream import segment_to_folder
    from sparrow.pipeline.writer import write_segmentation

    video = make_clip(workdir / f"clip{frames}.mp4", frames)
    pipeline = tiny_pipeline()
    start = time.perf_counter()
    with PeakRSS() as rss:
        report = segment_to_folder(pipeline, video, QUERY, workdir / f"out{frames}", model_id="tiny-64", mode="track")
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    with Video.open(video) as source:
        write_segmentation(report.result, source, workdir / f"io{frames}")
    io_seconds = time.perf_counter() - start
    return {
        "frames": frames,
        "peak_mib": rss.peak,
        "before_mib": rss.before,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": seconds,
        "key_frame": report.result.targets[0].key_frame,
        "io_fps": frames / io_seconds,
    }


def child_segment(video: Path, out: Path, resume: bool) -> None:
    from sparrow.pipeline.stream import segment_to_folder

    segment_to_folder(
        tiny_pipeline(), video, QUERY, out, model_id="tiny-64", mode="track", resume=resume, checkpoint_every=32
    )


def run_child(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path) as handle:
        return sum(1 for _ in handle)


def kill_and_resume(frames: int, workdir: Path) -> None:
    from sparrow.pipeline.stream import partial_dir

    video = make_clip(workdir / "kill.mp4", frames)
    full, killed = workdir / "full", workdir / "killed"
    assert run_child("--segment", str(video), str(full)).wait() == 0
    proc = run_child("--segment", str(video), str(killed))
    records = partial_dir(killed) / "records.jsonl"
    while proc.poll() is None:
        if _lines(records) >= frames // 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    done = _lines(records)
    print(f"kill  : SIGKILL after {done}/{frames} masks; finished folder present: {killed.exists()}")
    start = time.perf_counter()
    assert run_child("--segment", str(video), str(killed), "--resume").wait() == 0
    a, b = json.loads((full / "result.json").read_text()), json.loads((killed / "result.json").read_text())
    same_png = all((full / "masks" / p.name).read_bytes() == p.read_bytes() for p in (killed / "masks").iterdir())
    print(
        f"resume: {time.perf_counter() - start:.1f} s; result.json identical: {a == b}; all {frames} PNGs identical: {same_png}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--kill-frames", type=int, default=240, help="clip length of the kill + resume check (0: skip)")
    parser.add_argument("--child-length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--segment", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.segment:
        child_segment(Path(args.segment[0]), Path(args.segment[1]), args.resume)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.child_length:
            print(json.dumps(child_length(args.child_length, Path(tmp))))
            return
        peaks = {}
        for n in args.lengths:
            proc = run_child("--child-length", str(n))
            out, err = proc.communicate()
            if proc.returncode:
                raise SystemExit(err)
            d = json.loads(out.strip().splitlines()[-1])
            peaks[n] = d["peak_mib"]
            print(
                f"{n:6d} frames: peak RSS {d['peak_mib']:.0f} MiB during the call (before {d['before_mib']:.0f}, "
                f"ru_maxrss {d['maxrss_mib']:.0f}); {n / d['seconds']:.1f} masks/s ({d['seconds']:.0f} s, key frame "
                f"{d['key_frame']}); decode + write {d['io_fps']:.0f} frames/s",
                flush=True,
            )
        lo, hi = min(args.lengths), max(args.lengths)
        print(f"peak RSS ratio {hi}/{lo} frames = {peaks[hi] / peaks[lo]:.3f}  (aim <= 1.2)", flush=True)
        if args.kill_frames:
            kill_and_resume(args.kill_frames, Path(tmp))


if __name__ == "__main__":
    main()
