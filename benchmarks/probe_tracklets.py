"""Track-level selection of a SPARROW model on SynthRef (``selection_level: track``): does ``[BOX]`` pick the tracklet
of the named object?

Run (a few CPU minutes at 40 + 200 videos with the small preset):

    PYTHONPATH=src python benchmarks/probe_tracklets.py --model runs/grounding/track/vlm/final \\
        --data data/synthref/test --probe-data data/synthref/train --videos 40 --probe-videos 200 [--json OUT.json]

Prints the rows of ``sparrow.diagnostics.tracklets`` (the model's choice, probes on a bag of words and on the
frozen ``[BOX]`` embedding, the best single tracklet, the per-frame oracle) as the share of held-out target-visible
frames of the VLM on which the chosen tracklet overlaps the target by IoU > 0.5, overall and per expression kind.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sparrow.atomic import atomic_file
from sparrow.diagnostics.tracklets import tracklet_clip, tracklet_report
from sparrow.errors import SparrowError
from sparrow.model.loading import load_model

sys.path.insert(0, str(Path(__file__).parent))
from probe_grounding import _read, _table  # a sibling script, not a package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model folder with selection_level 'track'")
    parser.add_argument("--data", type=Path, required=True, help="held-out SynthRef split folder")
    parser.add_argument("--probe-data", type=Path, required=True, help="split the probes train on")
    parser.add_argument("--videos", type=int, default=40, help="held-out videos")
    parser.add_argument("--probe-videos", type=int, default=200, help="videos the probes train on")
    parser.add_argument("--epochs", type=int, default=30, help="probe epochs")
    parser.add_argument(
        "--tracks", choices=["linked", "gt"], default="linked", help="the model's tracklets, or the annotated objects"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    try:
        start = time.perf_counter()
        model = load_model(str(args.model), device="cpu")
        if model.track_selector is None:
            raise SparrowError("this model selects per frame (selection_level 'frame')", args.model)
        held = [tracklet_clip(model, r, tracks=args.tracks) for r in _read(args.data, args.videos)]
        train = [tracklet_clip(model, r, tracks=args.tracks) for r in _read(args.probe_data, args.probe_videos)]
        report = tracklet_report(train, held, epochs=args.epochs)
    except SparrowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    frames = report["model"]["frames"]
    rows = {name: {k: v for k, v in row.items() if k != "frames"} for name, row in report.items()}
    print(
        f"model {args.model}; held out {len(held)} videos, probes trained on {len(train)}; {time.perf_counter() - start:.0f} s"
    )
    _table(f"track-level top-1, IoU > 0.5 (% of {frames:.0f} held-out target-visible VLM frames)", rows)
    if args.json is not None:
        with atomic_file(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
