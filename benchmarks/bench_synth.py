"""Speed of SynthRef generation (issue 3 target: 1,000 videos x 24 frames x 128 px in under a minute on 2 cores).

    PYTHONPATH=src python benchmarks/bench_synth.py --videos 1000 --workers 2 [--size 128] [--frames 24]

Prints the wall time of ``generate_split`` (everything: scenes, rendering, expressions, JPEG frames, RLE,
JSON), the CPU seconds it used (this process + worker processes), the system load while it ran (the machine may
be shared: wall time is then longer than CPU time / workers), and a per-stage breakdown on one core.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import tempfile
import time

import numpy as np
from PIL import Image

from sparrow.data.synthref import SynthConfig, generate_split
from sparrow.data.synthref.expressions import choose_queries, facts_from_record
from sparrow.data.synthref.generate import _object_tags, _record, video_rng
from sparrow.data.synthref.render import render
from sparrow.data.synthref.scene import sample_scene


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def stages(config: SynthConfig, n: int) -> dict[str, float]:
    """Mean milliseconds per video of each stage, on one core."""
    totals = dict.fromkeys(("scene", "render", "record+masks", "expressions", "jpeg"), 0.0)
    for i in range(n):
        rng = video_rng("train", 123, i)
        t0 = time.perf_counter()
        scene = sample_scene(rng, config.size, config.num_frames)
        t1 = time.perf_counter()
        clip = render(scene)
        t2 = time.perf_counter()
        record = _record("train_x", i, scene, clip)
        t3 = time.perf_counter()
        facts = facts_from_record(record)
        choose_queries(rng, facts, _object_tags(clip, facts, list(record.objects), config.size / 128), 4)
        t4 = time.perf_counter()
        for frame in clip.frames:
            Image.fromarray(frame).save(io.BytesIO(), format="JPEG", quality=config.jpeg_quality)
        t5 = time.perf_counter()
        for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            totals[key] += dt
    return {k: 1000 * v / n for k, v in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--stage-videos", type=int, default=50, help="videos for the per-stage breakdown")
    args = parser.parse_args()
    config = SynthConfig(size=args.size, num_frames=args.frames)
    with tempfile.TemporaryDirectory() as out:
        load0 = os.getloadavg()[0]
        cpu0, t0 = _cpu(), time.perf_counter()
        records = generate_split(
            out, args.videos, seed=0, split="train", config=config, workers=args.workers, progress=False
        )
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        load1 = os.getloadavg()[0]
        n_exp = sum(len(r.expressions) for r in records)
    print(f"cpus on this machine: {os.cpu_count()}, load average before/after: {load0:.2f}/{load1:.2f}")
    print(
        f"generate_split: {args.videos} videos x {args.frames} frames x {args.size} px, {n_exp} expressions, "
        f"{args.workers} workers"
    )
    print(f"  wall {wall:.1f} s  ({args.videos / wall:.1f} videos/s, {args.videos * args.frames / wall:.0f} frames/s)")
    print(
        f"  cpu  {cpu:.1f} s  ({1000 * cpu / args.videos:.1f} ms per video; {cpu / args.workers:.1f} s if the "
        f"{args.workers} cores were free)"
    )
    per_stage = stages(config, args.stage_videos)
    print(
        f"per-stage, one core, mean of {args.stage_videos} videos (ms): "
        + ", ".join(f"{k} {v:.1f}" for k, v in per_stage.items())
        + f", total {sum(per_stage.values()):.1f}"
    )
    print(f"check: {np.round(wall, 1)} s {'<' if wall < 60 else '>='} 60 s target (wall)")


if __name__ == "__main__":
    main()
