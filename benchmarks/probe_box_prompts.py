"""Box-prompted masks of a SPARROW model's SAM2 against the ground truth, from boxes with corner noise.

Run (about a CPU minute for 20 videos with the small or tiny SAM2):

    PYTHONPATH=src python benchmarks/probe_box_prompts.py --model runs/grounding/identity/segmenter_jitter/final \\
        --data data/synthref/test --videos 20 [--noise 0 0.1 0.2]

Every annotated object on the 8 frames the VLM would see is decoded from its ground-truth box moved by
``sparrow.train.objectives.jitter_boxes`` (corner noise of std ``noise`` times the box's side, clipped at two std,
seeded) and scored by mask IoU: the mean, and the shares above 0.5 and 0.8. The proposer's boxes are loose (the
best one overlaps an object by IoU 0.6-0.7), so the noisy rows say how whole the masks of ``mask_boxes`` and of
the pipeline's box prompts are (docs/results.md, "Better tracklets").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from sparrow.data.video_io import sample_indices
from sparrow.errors import SparrowError
from sparrow.model.loading import load_model
from sparrow.model.pixel_decoder import PixelDecoder
from sparrow.train.objectives import jitter_boxes

sys.path.insert(0, str(Path(__file__).parent))
from probe_grounding import _read  # a sibling script, not a package


@torch.no_grad()
def box_prompt_ious(model, records: list, noise: list[float], frames: int = 8) -> dict[float, np.ndarray]:
    """Mask IoU ``[M]`` per noise level over every visible object on ``frames`` evenly spaced frames of each record."""
    out: dict[float, list[float]] = {s: [] for s in noise}
    for n, record in enumerate(records):
        ids = sample_indices(record.num_frames, frames)
        h, w = record.size
        features = model.pixel_decoder.encode(model.preprocessor(record.load_frames(ids)))
        rows, boxes, truth = [], [], []
        for obj in record.objects.values():
            for i, t in enumerate(ids):
                if obj.boxes[t] is not None:
                    rows.append(i)
                    boxes.append(torch.tensor(obj.boxes[t], dtype=torch.float32) / torch.tensor([w, h, w, h]))
                    truth.append(torch.from_numpy(obj.mask(t, (h, w))).bool())
        if not rows:
            continue
        frame_index, prompt, target = torch.tensor(rows), torch.stack(boxes), torch.stack(truth)
        for scale in noise:
            moved = jitter_boxes(prompt, torch.zeros(len(prompt), dtype=torch.long), scale, [n])
            logits = model.decode(features, frame_index, None, moved).mask_logits
            pred = PixelDecoder.upsample(logits, (h, w)) > 0
            inter = (pred & target).flatten(1).sum(1).float()
            union = (pred | target).flatten(1).sum(1).float()
            out[scale] += (inter / union.clamp(min=1)).tolist()
    return {s: np.array(v) for s, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a SPARROW model folder")
    parser.add_argument("--data", type=Path, required=True, help="SynthRef/MeViS split folder")
    parser.add_argument("--videos", type=int, default=20, help="videos (the first, by id)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2], help="noise std, share of side")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    try:
        model = load_model(str(args.model), device="cpu")
        model.eval()
        ious = box_prompt_ious(model, _read(args.data, args.videos), args.noise)
    except SparrowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model {args.model}; {args.videos} videos, {len(next(iter(ious.values())))} object-frames")
    for scale, v in ious.items():
        print(
            f"noise {scale:.2f}: mean IoU {v.mean():.3f}  IoU>0.5 {np.mean(v > 0.5):.3f}  IoU>0.8 {np.mean(v > 0.8):.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
