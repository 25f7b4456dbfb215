"""Per-frame cost and peak memory of SPARROW's bounded-memory mask propagation vs plain HF SAM2 propagation.

Run from the repository root (tiny SAM2, CPU, a few minutes on 2 cores)::

    PYTHONPATH=src python benchmarks/bench_propagation.py            # defaults: 300-frame timing, 60 vs 600 memory
    PYTHONPATH=src python benchmarks/bench_propagation.py --time-frames 100 --mem-frames 30 300

Both methods track one object from a mask prompt on the middle frame of a synthetic moving-shape clip
(360x640), forward then backward, and produce a bool mask per frame at the video size:

- ``sparrow``: :class:`sparrow.model.propagator.MaskPropagator` (frames decoded lazily from the MP4, session pruned);
- ``hf``: plain transformers: every frame decoded and preprocessed into one ``Sam2VideoInferenceSession``, then
  ``propagate_in_video_iterator`` forward and ``reverse=True`` (what ``Sam2VideoProcessor.init_video_session`` does).

Timing runs in this process (best of ``--repeats``). Memory runs each (method, length) in a fresh subprocess and
reports its peak resident memory during propagation (Linux ``VmHWM`` after resetting it through
``/proc/self/clear_refs``; ``ru_maxrss`` is not used, as a child inherits its parent's figure) and the part of it
above the resident memory just before propagation (model, libraries and warm-up excluded).
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

HEIGHT, WIDTH = 360, 640


def synthetic_frames(num_frames: int):
    """Yield ``(frame [H,W,3] uint8, disc mask [H,W] bool)``: a red disc (the target) and a blue square moving over
    a textured background."""
    rng = np.random.default_rng(0)
    background = rng.integers(30, 90, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    for t in range(num_frames):
        cx = 100 + (t * 4) % (WIDTH - 200)
        cy = HEIGHT // 2 + int(60 * np.sin(t / 15))
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < 40**2
        frame = background.copy()
        sx = WIDTH - 150 - (t * 3) % (WIDTH - 250)
        frame[60:130, sx : sx + 70] = (40, 60, 210)
        frame[disc] = (220, 40, 40)
        yield frame, disc


def synthetic_clip(num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole clip in memory: frames ``[T, H, W, 3]`` uint8 and target masks ``[T, H, W]`` bool."""
    frames, masks = zip(*synthetic_frames(num_frames))
    return np.stack(frames), np.stack(masks)


def build(size: int):
    from sparrow.model.sam2_backbone import Sam2Preprocessor, build_sam2, tiny_sam2_config

    torch.manual_seed(0)
    return build_sam2(tiny_sam2_config(size)), Sam2Preprocessor(size)


def run_sparrow(sam, pre, source, key: int, key_mask: np.ndarray) -> int:
    from sparrow.model.propagator import MaskPropagator

    count = 0
    for _t, mask in MaskPropagator(sam, pre).propagate(source, {key: key_mask}, direction="both"):
        count += int(mask.shape[0] > 0)
    return count


def run_hf(sam, pre, source, key: int, key_mask: np.ndarray) -> int:
    from transformers import Sam2VideoInferenceSession

    from sparrow.data.video_io import read_frames

    frames = read_frames(source) if not isinstance(source, np.ndarray) else source
    height, width = frames.shape[1:3]
    size = pre.image_size
    session = Sam2VideoInferenceSession(video=pre(frames), video_height=height, video_width=width, dtype=torch.float32)
    obj_idx = session.obj_id_to_idx(1)
    m = torch.from_numpy(key_mask).float()[None, None]
    m = (F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True) >= 0.5).float()
    session.add_mask_inputs(obj_idx, key, m)
    session.obj_with_new_inputs = [1]
    count = 0
    with torch.inference_mode():
        sam(inference_session=session, frame_idx=key)
        seen = set()
        for reverse in (False, True):
            for out in sam.propagate_in_video_iterator(session, start_frame_idx=key, reverse=reverse):
                if out.frame_idx in seen:
                    continue
                seen.add(out.frame_idx)
                low_res = out.pred_masks.float()
                mask = F.interpolate(low_res, size=(height, width), mode="bilinear", align_corners=False) > 0
                count += int(mask.shape[0] > 0)
    return count


RUNNERS = {"sparrow": run_sparrow, "hf": run_hf}


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(method: str, num_frames: int, size: int) -> None:
    """Measure one (method, length) in this fresh process; print one JSON line."""
    from sparrow.data.video_io import write_video

    torch.set_num_threads(1)
    sam, pre = build(size)
    key = num_frames // 2
    warm_frames, warm_masks = synthetic_clip(4)
    with tempfile.TemporaryDirectory() as tmp:
        key_mask = None

        def stream():  # written frame by frame: the clip is never held in memory here
            nonlocal key_mask
            for t, (frame, disc) in enumerate(synthetic_frames(num_frames)):
                if t == key:
                    key_mask = disc
                yield frame

        path = write_video(Path(tmp) / "clip.mp4", stream(), fps=25)
        run_sparrow(sam, pre, warm_frames, 2, warm_masks[2])  # warm up kernels and allocator
        del warm_frames, warm_masks
        before = _proc_status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
        start = time.perf_counter()
        count = RUNNERS[method](sam, pre, path, key, key_mask)
        seconds = time.perf_counter() - start
        peak = _proc_status("VmHWM")
    assert count == num_frames, (count, num_frames)
    print(json.dumps({"method": method, "frames": num_frames, "rss_before": before, "peak": peak, "seconds": seconds}))


def timing(num_frames: int, size: int, repeats: int) -> None:
    torch.set_num_threads(1)
    sam, pre = build(size)
    frames, masks = synthetic_clip(num_frames)
    key = num_frames // 2
    run_sparrow(sam, pre, frames[:4], 2, masks[2])  # warm-up
    wall: dict[str, list[float]] = {method: [] for method in RUNNERS}
    cpu: dict[str, list[float]] = {method: [] for method in RUNNERS}
    for _ in range(repeats):  # interleaved, so that load from other processes hits both alike
        for method, run in RUNNERS.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            assert run(sam, pre, frames, key, masks[key]) == num_frames
            wall[method].append(time.perf_counter() - start)
            cpu[method].append(time.process_time() - start_cpu)
    print(
        f"per-frame cost, {num_frames} frames {HEIGHT}x{WIDTH}, tiny SAM2 at {size}px, key frame {key}, "
        f"both directions, 1 thread, best of {repeats} (CPU time is robust to other load; wall time is not)"
    )
    for method in RUNNERS:
        print(
            f"  {method:8s} {1000 * min(cpu[method]) / num_frames:7.2f} ms/frame CPU   "
            f"{1000 * min(wall[method]) / num_frames:7.2f} ms/frame wall"
        )
    print(
        f"  overhead ratio sparrow/hf: {min(cpu['sparrow']) / min(cpu['hf']):.3f} (CPU), "
        f"{min(wall['sparrow']) / min(wall['hf']):.3f} (wall)"
    )


def memory(lengths: list[int], size: int) -> None:
    rows = {}
    for method in RUNNERS:
        for n in lengths:
            cmd = [sys.executable, __file__, "--child", method, "--frames", str(n), "--size", str(size)]
            result = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows[method, n] = json.loads(result.stdout.strip().splitlines()[-1])
    mib = 1 / 2**20
    print(f"peak memory during propagation (fresh process per run; {HEIGHT}x{WIDTH} MP4, tiny SAM2 at {size}px)")
    print(f"  {'method':8s} {'frames':>6s} {'peak RSS':>10s} {'above start':>12s} {'s/run':>7s}")
    for (method, n), r in rows.items():
        print(
            f"  {method:8s} {n:6d} {r['peak'] * mib:6.0f} MiB {(r['peak'] - r['rss_before']) * mib:8.0f} MiB "
            f"{r['seconds']:7.1f}"
        )
    lo, hi = min(lengths), max(lengths)
    for method in RUNNERS:
        a, b = rows[method, lo], rows[method, hi]
        growth = (b["peak"] - b["rss_before"]) / max(1, a["peak"] - a["rss_before"])
        print(
            f"  {method:8s} {hi} vs {lo} frames: peak RSS ratio {b['peak'] / a['peak']:.2f}, "
            f"above-start ratio {growth:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--time-frames", type=int, default=300)
    parser.add_argument("--mem-frames", type=int, nargs=2, default=[60, 600])
    parser.add_argument("--size", type=int, default=256, help="tiny SAM2 image size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", choices=["time", "memory"], help="leave one part out")
    parser.add_argument("--child", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.frames, args.size)
        return
    if args.skip != "time":
        timing(args.time_frames, args.size, args.repeats)
    if args.skip != "memory":
        memory(sorted(args.mem_frames), args.size)


if __name__ == "__main__":
    main()
