"""Shared-CPU collapse: track-mode wall time with the machine idle vs with one core kept busy by another process,
before and after ``sparrow.threads.configure_threads`` (torch threads capped at the usable cores, OpenMP's passive
wait policy), measured side by side in one run.

Each measurement runs in a fresh Python process (OpenMP reads its wait policy when torch loads), with the bundled
default model on a generated SynthRef clip, timing ``segment(mode="track")`` only (not the model load). "busy" is
a second process spinning a pure-Python loop for the whole measurement. Also printed: the same with one torch
thread, and PyAV decoding alone with ``thread_type="AUTO"`` vs one decoder thread. OpenCV only draws boxes in the
result writer, so its thread pool is not involved.

Run (a few minutes on 2 cores):
    PYTHONPATH=src python benchmarks/bench_contention.py [--frames 30] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMEOUT_S = 600.0


def _worker(args: argparse.Namespace) -> None:
    """One measurement in this process: print JSON {"seconds": ...}."""
    if args.policy == "after":
        from sparrow.threads import configure_threads

        configure_threads(None)
    import torch

    if args.policy == "one-thread":
        torch.set_num_threads(1)
    if args.policy.startswith("decode"):
        import av

        start = time.perf_counter()
        for _ in range(args.repeats):
            with av.open(args.clip) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO" if args.policy == "decode-auto" else "NONE"
                if args.policy == "decode-one":
                    stream.thread_count = 1
                for frame in container.decode(stream):
                    frame.to_ndarray(format="rgb24")
        print(json.dumps({"seconds": (time.perf_counter() - start) / args.repeats, "threads": torch.get_num_threads()}))
        return
    from sparrow.pipeline import load

    model = load("default", device="cpu")
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        model.segment(args.clip, args.query, mode="track", progress=False)
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"seconds": best, "threads": torch.get_num_threads(), "wait": os.environ.get("OMP_WAIT_POLICY")}))


def _measure(policy: str, clip: str, query: str, busy: bool, repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    cmd = [sys.executable, __file__, "--worker", policy, "--clip", clip, "--query", query, "--repeats", str(repeats)]
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"seconds": float("inf")}
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if proc.returncode != 0:
        raise SystemExit(f"worker {policy} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(seconds: float) -> str:
    return f"> {TIMEOUT_S:.0f}" if seconds == float("inf") else f"{seconds:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="clip length (default 30)")
    parser.add_argument("--repeats", type=int, default=2, help="idle runs per measurement, best kept (default 2)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--clip", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--query", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        args.policy = args.worker
        _worker(args)
        return

    from sparrow.data.synthref.generate import SynthConfig, make_video
    from sparrow.data.video_io import write_video
    from sparrow.threads import usable_cores

    with tempfile.TemporaryDirectory() as tmp:
        record, frames = make_video("test", 0, 0, SynthConfig(size=128, num_frames=args.frames))
        clip = str(write_video(Path(tmp) / "clip.mp4", frames, fps=8))
        query = record.expressions[0].text
        print(
            f"cores: affinity {len(os.sched_getaffinity(0))}, usable {usable_cores()}; load average before "
            f"{os.getloadavg()[0]:.1f} (other processes on this machine count too)"
        )
        print(f"clip: {args.frames} frames 128x128, segment(mode='track') with the bundled default model")
        rows = [
            ("before", "torch default threads, OpenMP default (spinning) wait"),
            ("after", "configure_threads(): threads <= usable cores, passive wait"),
            ("one-thread", "reference: 1 torch thread, default wait"),
        ]
        print(f"{'policy':<12}{'threads':>8}{'idle s':>10}{'busy s':>10}{'busy/idle':>11}  what")
        ratios, seconds = {}, {}
        for policy, what in rows:
            idle = _measure(policy, clip, query, busy=False, repeats=args.repeats)
            busy = _measure(policy, clip, query, busy=True, repeats=1)
            ratio = busy["seconds"] / idle["seconds"]
            ratios[policy] = ratio
            seconds[policy] = (idle["seconds"], busy["seconds"])
            print(
                f"{policy:<12}{idle['threads']:>8}{_fmt(idle['seconds']):>10}{_fmt(busy['seconds']):>10}"
                f"{ratio:>10.1f}x  {what}",
                flush=True,
            )
        print(
            f"busy/idle ratio before {ratios['before']:.1f}x, after {ratios['after']:.1f}x; after is "
            f"{seconds['before'][0] / seconds['after'][0]:.1f}x faster idle and "
            f"{seconds['before'][1] / seconds['after'][1]:.1f}x faster with the busy core"
        )
        decode_repeats = max(5, 400 // args.frames)
        for policy, what in (("decode-auto", "PyAV thread_type AUTO"), ("decode-one", "PyAV one decoder thread")):
            idle = _measure(policy, clip, query, busy=False, repeats=decode_repeats)
            busy = _measure(policy, clip, query, busy=True, repeats=decode_repeats)
            print(
                f"decode only, {what:<24}: idle {1000 * idle['seconds']:.1f} ms, busy {1000 * busy['seconds']:.1f} ms "
                f"per {args.frames}-frame pass ({busy['seconds'] / idle['seconds']:.1f}x)"
            )


if __name__ == "__main__":
    main()
