"""Cost of SPARROW's `track` mode against plain SAM2 propagation, and its peak memory vs video length.

Command (CPU, tiny preset; about 2-4 minutes on 2 cores):

    PYTHONPATH=src python benchmarks/bench_track_mode.py [--frames 300] [--lengths 60 600]

Prints (1) seconds per frame of `pipeline.segment(video, query, mode="track")` on a synthetic clip next to plain
Hugging Face SAM2 propagation of the same clip from the same key-frame mask (all frames loaded in a
`Sam2VideoInferenceSession`, `propagate_in_video_iterator`), and their ratio (the overhead of SPARROW's VLM,
proposer, selection, streaming and bounded memory; aim <= 1.2); (2) peak resident memory (ru_maxrss) of track
mode for each length, each in a fresh process (resident memory sampled every 2 ms while `segment` runs, since
building the model has a higher one-off peak than ru_maxrss would separate), and the ratio between the longest and
shortest (aim <= 1.3); plain SAM2 with all frames in its session is measured the same way for contrast.
The clip is an MP4 on disk, decoded lazily, as a user's video would be.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peak_rss import PeakRSS


def make_clip(path: Path, frames: int, h: int = 128, w: int = 160) -> Path:
    from sparrow.data.video_io import write_video

    yy, xx = np.mgrid[:h, :w]

    def gen():
        for i in range(frames):
            f = np.full((h, w, 3), 40, np.uint8)
            cx = 30 + (w - 60) * (0.5 + 0.5 * np.sin(i / 15))
            f[(yy - 50) ** 2 + (xx - cx) ** 2 <= 14**2] = (230, 40, 40)
            f[90:115, 20:45] = (40, 60, 230)
            yield f

    return write_video(path, gen(), fps=10)


def plain_sam2_seconds(model, video: Path, key_mask: np.ndarray) -> float:
    """Plain HF SAM2: all frames in a session, mask prompt on frame 0, forward propagation, masks upsampled to the
    frame size and thresholded (what `Sam2VideoProcessor.post_process_masks` gives a user)."""
    from transformers import Sam2VideoInferenceSession

    from sparrow.data.video_io import probe_video, read_frames

    info = probe_video(video)
    start = time.perf_counter()
    pixels = model.preprocessor(read_frames(video))
    session = Sam2VideoInferenceSession(
        video=pixels, video_height=info.height, video_width=info.width, dtype=torch.float32
    )
    size = model.sam.config.image_size
    mask = F.interpolate(torch.from_numpy(key_mask)[None, None].float(), (size, size), mode="bilinear") > 0.5
    session.add_mask_inputs(session.obj_id_to_idx(1), 0, mask.float())
    session.obj_with_new_inputs = [1]
    with torch.no_grad():
        model.sam(inference_session=session, frame_idx=0)
        for out in model.sam.propagate_in_video_iterator(session):
            (F.interpolate(out.pred_masks, (info.height, info.width), mode="bilinear") > 0).numpy()
    return time.perf_counter() - start


def run_speed(frames: int) -> None:
    from sparrow.model.loading import build_tiny
    from sparrow.pipeline import SegmentationPipeline

    torch.manual_seed(0)
    model = SegmentationPipeline(build_tiny(seed=0))
    with tempfile.TemporaryDirectory() as tmp:
        video = make_clip(Path(tmp) / "clip.mp4", frames)
        model.segment(video, "the red circle", mode="track", key_frame=0)  # warm-up
        start = time.perf_counter()
        result = model.segment(video, "the red circle", mode="track", key_frame=0)
        track = time.perf_counter() - start
        key = result.targets[0].mask(0, (result.height, result.width))
        if not key.any():  # an untrained model may give an empty key mask: prompt SAM2 with a box-shaped mask then
            key[40:60, 20:60] = True
        plain = plain_sam2_seconds(model.model, video, key)
    print(f"track mode : {track / frames * 1000:8.1f} ms/frame  ({frames} frames, whole segment() call)")
    print(f"plain SAM2 : {plain / frames * 1000:8.1f} ms/frame  (all frames in a session, propagate_in_video_iterator)")
    print(f"overhead ratio track / plain = {track / plain:.2f}  (aim <= 1.2)")


def run_memory_child(frames: int, what: str) -> None:
    from sparrow.model.loading import build_tiny
    from sparrow.pipeline import SegmentationPipeline

    torch.manual_seed(0)
    model = SegmentationPipeline(build_tiny(seed=0))
    with tempfile.TemporaryDirectory() as tmp:
        video = make_clip(Path(tmp) / "clip.mp4", frames)
        key = np.zeros((128, 160), dtype=bool)
        key[36:64, 30:60] = True
        with PeakRSS() as rss:
            if what == "track":
                model.segment(video, "the red circle", mode="track", key_frame=0)
            else:
                plain_sam2_seconds(model, video, key)
    print(json.dumps({"frames": frames, "peak_mib": rss.peak, "before_mib": rss.before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--lengths", type=int, nargs="+", default=[60, 600])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--what", default="track", help=argparse.SUPPRESS)
    parser.add_argument("--skip-speed", action="store_true", help="only the memory part")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        run_memory_child(args.child, args.what)
        return
    if not args.skip_speed:
        run_speed(args.frames)
    lo, hi = min(args.lengths), max(args.lengths)
    for what in ("track", "plain"):
        peaks = {}
        for n in args.lengths:
            cmd = [sys.executable, __file__, "--child", str(n), "--what", what]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            data = json.loads(out.stdout.strip().splitlines()[-1])
            peaks[n] = data["peak_mib"]
            print(
                f"{what:5s}, {n:5d} frames: peak RSS {data['peak_mib']:.0f} MiB (before the call: {data['before_mib']:.0f} MiB)"
            )
        print(
            f"{what:5s}: peak memory ratio {hi}/{lo} frames = {peaks[hi] / peaks[lo]:.2f}"
            + ("  (aim <= 1.3)" if what == "track" else "")
        )


if __name__ == "__main__":
    main()
