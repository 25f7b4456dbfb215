"""TSF build throughput (records/s) at tiny scale: annotation boxes (gt) vs OpenCV CSRT tracking.

Run from the repository root::

    PYTHONPATH=src:tests python benchmarks/bench_tsf_build.py [--videos 12] [--frames 24] [--size 120x200]

It writes a MeViS-layout set of moving squares (two objects, two expressions per video) to a temporary folder,
builds the TSF cache once per tracker (K = 4, colour-histogram + HOG features, one process, one thread) and
prints records/s and ms/record. Frame decoding (JPEG) is included; the dataset generation is not.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tsf_fixtures import synthetic_records

from sparrow.data.mevis import read_mevis, write_frames, write_mevis_annotations
from sparrow.tsf.build import BuildConfig, build_tsf
from sparrow.tsf.track import CsrtTracker, GtTracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", default="120x200", help="HxW")
    args = parser.parse_args()
    torch.set_num_threads(1)
    H, W = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "train"
        pairs = synthetic_records(n_videos=args.videos, T=args.frames, H=H, W=W)
        write_mevis_annotations([r for r, _ in pairs], split)
        for rec, frames in pairs:
            write_frames(split / "JPEGImages" / rec.video_id, rec.frames, frames)
        records = read_mevis(split)
        n = sum(len(r.expressions) for r in records)
        load = os.getloadavg()[0]
        print(f"{args.videos} videos x {args.frames} frames of {W}x{H}, {n} records, K=4; load average {load:.1f}")
        for name, cfg, tracker in [
            ("gt (annotation)", BuildConfig(k=4), GtTracker()),
            ("csrt (gt ref box)", BuildConfig(k=4, tracker="csrt", always_track=True), CsrtTracker()),
        ]:
            start = time.perf_counter()
            stats = build_tsf(records, Path(tmp) / name.split()[0], cfg, tracker=tracker, progress=False)
            sec = time.perf_counter() - start
            assert stats.ok == n, stats
            print(f"{name:20s} {n / sec:8.1f} records/s  {1000 * sec / n:7.1f} ms/record  ({sec:.2f} s)")


if __name__ == "__main__":
    main()
