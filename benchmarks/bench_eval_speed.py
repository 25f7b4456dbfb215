"""Speed of the J/F metrics against the plain per-frame statement of the official definitions.

Command (from the repository root)::

    PYTHONPATH=src python benchmarks/bench_eval_speed.py [--videos 4] [--frames 40] [--workers 2] [--repeat 3]

Masks: DAVIS-sized frames (480x854), per video one target and one prediction, both smooth moving ellipses with
wavy outlines (a prediction that drifts from the target; object boxes 2-18% of the frame at --size 1), 10% of the
frames empty on either side, optionally a final stretch where target and prediction are both absent (--absent).
The fast path works inside the window around the two masks, so its advantage grows as objects get smaller. Prints the
time of the reference loop (tests/eval_reference.py), of ``sparrow.eval.metrics`` in one process and across
processes (``sparrow.eval.parallel``, each worker building its own videos as a reader would load them), the
speed ratios, and the max |diff| of every per-frame J and F.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from eval_reference import ref_sequence

from sparrow.eval.metrics import region_and_boundary
from sparrow.eval.parallel import run_ordered


def make_video(
    seed: int, frames: int, size: float = 1.0, absent: float = 0.0, h: int = 480, w: int = 854
) -> tuple[np.ndarray, np.ndarray]:
    """Target and prediction masks ``[T, H, W]`` bool for one synthetic video.

    ``size`` scales the object radii; ``absent`` is the fraction of frames (one contiguous stretch at the end)
    where the target is gone and the prediction is empty too (MeViS-style targets that leave the scene).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    gt = np.zeros((frames, h, w), dtype=bool)
    pred = np.zeros((frames, h, w), dtype=bool)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.2, 0.8) * w
    ry, rx = size * rng.uniform(0.1, 0.25) * h, size * rng.uniform(0.06, 0.18) * w
    vy, vx = rng.normal(0, 2), rng.normal(0, 4)
    angle = np.arctan2(yy - h / 2, xx - w / 2)
    gone = frames - round(absent * frames)
    for t in range(gone):
        wobble = 1 + 0.05 * np.sin(5 * angle + 0.3 * t)
        g = ((yy - cy - vy * t) / ry) ** 2 + ((xx - cx - vx * t) / rx) ** 2 < wobble
        off = 0.4 * t
        p = ((yy - cy - vy * t - off) / (ry * 1.05)) ** 2 + ((xx - cx - vx * t + off) / rx) ** 2 < wobble
        if rng.random() > 0.1:
            gt[t] = g
        if rng.random() > 0.1:
            pred[t] = p
    return pred, gt


def fast_sequence(pair: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = pair
    return region_and_boundary(pred, gt)


def make_and_score(args: tuple[int, int, float, float]) -> float:
    """Worker task of the parallel figure: build one video (as a reader would load it) and score it."""
    pred, gt = make_video(*args)
    j, f = region_and_boundary(pred, gt)
    return float(j.mean() + f.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings")
    ap.add_argument("--size", type=float, default=1.0, help="object size factor (1: boxes of 2-18%% of the frame)")
    ap.add_argument("--absent", type=float, default=0.0, help="fraction of frames with target and prediction absent")
    args = ap.parse_args()
    videos = [make_video(s, args.frames, args.size, args.absent) for s in range(args.videos)]
    n_frames = args.videos * args.frames

    t_ref = t_fast = float("inf")
    for _ in range(args.repeat):  # best of N: the machine may be shared
        t0 = time.perf_counter()
        ref = [ref_sequence(p, g) for p, g in videos]
        t_ref = min(t_ref, time.perf_counter() - t0)
        t0 = time.perf_counter()
        fast = [fast_sequence(v) for v in videos]
        t_fast = min(t_fast, time.perf_counter() - t0)

    diff = 0.0
    for (rj, rf), (fj, ff) in zip(ref, fast):
        diff = max(diff, float(np.abs(rj - fj).max()), float(np.abs(rf - ff).max()))

    tasks = [(s, args.frames, args.size, args.absent) for s in range(args.videos)]
    t0 = time.perf_counter()
    serial = [make_and_score(x) for x in tasks]
    t_serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    par = run_ordered(make_and_score, tasks, workers=args.workers)
    t_par = time.perf_counter() - t0
    if par != serial:
        raise SystemExit("parallel results differ from the serial ones")
    print(
        f"{args.videos} videos x {args.frames} frames at 480x854 ({n_frames} frames), size x{args.size}, "
        f"absent {args.absent:.0%}"
    )
    print(f"reference per-frame loop : {t_ref:8.3f} s  ({1e3 * t_ref / n_frames:.2f} ms/frame)")
    print(
        f"sparrow.eval, 1 process  : {t_fast:8.3f} s  ({1e3 * t_fast / n_frames:.2f} ms/frame)  x{t_ref / t_fast:.1f}"
    )
    print(
        f"make+score, 1 process vs {args.workers} workers: {t_serial:.3f} s vs {t_par:.3f} s  x{t_serial / t_par:.2f}"
    )
    print(f"max |diff| over all per-frame J and F: {diff:.3g}")


if __name__ == "__main__":
    main()
