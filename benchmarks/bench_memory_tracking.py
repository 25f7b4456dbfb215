"""SAM2 memory tracking before and after the `memory` stage: propagation from the ground-truth first-frame mask.

Command (CPU; about 1 s per expression and variant; 13 min for 60 videos on a shared 2-core machine)::

    sparrow synth --out data/synthref --split test --videos 60 --seed 7   # a split no training used
    PYTHONPATH=src python benchmarks/bench_memory_tracking.py --new runs/bundled/memory/final \\
        --data data/synthref/test [--old default] [--videos 60]

For every expression of the first ``--videos`` videos of a SynthRef (MeViS-layout) split, the target's
ground-truth mask on its first visible frame prompts SAM2, and ``track`` mode's propagator
(:class:`sparrow.model.propagator.MaskPropagator`, forward and backward from that frame) segments every frame.
Variants, side by side in one process on the same expressions:

- ``old``: the ``--old`` model as saved (the bundled default: SAM2's own multimask tracking, untrained memory);
- ``old, single-mask``: the same weights with tracked frames on the decoder's single-mask output (the setting the
  memory stage trains and saves), to separate that switch from the training;
- ``new``: the ``--new`` model (memory stage output) as saved;
- ``copy first mask``: the prompt mask pasted on every frame where the target could be (a no-motion baseline).

Printed per variant: mean J over all frames (1 where prediction and target are both empty), mean J over the frames
after the key frame where the target is visible, the identity-switch rate of ``sparrow.eval`` (frames whose
prediction overlaps another object more than the target), the share of visible frames lost (J < 0.5), and seconds
per expression; then the new/old ratios.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from sparrow.data.dataset import load_records
from sparrow.eval.consistency import identity_switch_rate
from sparrow.eval.metrics import jaccard
from sparrow.model.loading import load_model
from sparrow.model.memory_training import set_single_mask_tracking
from sparrow.model.propagator import MaskPropagator


@dataclass
class Scores:
    """Per-expression figures of one variant."""

    j_all: list[float] = field(default_factory=list)
    j_tracked: list[float] = field(default_factory=list)
    id_switch: list[float] = field(default_factory=list)
    lost: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, pred: np.ndarray, target: np.ndarray, others: list[np.ndarray], key: int) -> None:
        j = jaccard(pred, target)
        after = np.arange(len(target)) > key
        visible = target.reshape(len(target), -1).any(1) & after
        self.j_all.append(float(j.mean()))
        if visible.any():
            self.j_tracked.append(float(j[visible].mean()))
            self.lost.append(float((j[visible] < 0.5).mean()))
        self.id_switch.append(identity_switch_rate(pred, target, others))

    def row(self) -> dict[str, float]:
        n = len(self.j_all)
        return {
            "J all": np.mean(self.j_all),
            "J tracked": np.mean(self.j_tracked),
            "id-switch": np.mean(self.id_switch),
            "lost": np.mean(self.lost),
            "s/expr": self.seconds / max(n, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="default", help="model before the memory stage (folder or 'default')")
    parser.add_argument("--new", required=True, help="model after the memory stage (folder)")
    parser.add_argument("--data", required=True, help="held-out SynthRef split folder (MeViS layout)")
    parser.add_argument("--videos", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    old = load_model(args.old, "cpu")
    old_single = copy.deepcopy(old)
    set_single_mask_tracking(old_single.sam)
    new = load_model(args.new, "cpu")
    models = {"old": old, "old, single-mask": old_single, "new": new}
    scores = {name: Scores() for name in [*models, "copy first mask"]}
    records = load_records(args.data)[: args.videos]
    count = 0
    for record in records:
        frames = record.load_frames()
        objects = {
            o: np.stack([track.mask(t, record.size) for t in range(record.num_frames)])
            for o, track in record.objects.items()
        }
        for expression in record.expressions:
            target = record.target_masks(expression)
            visible = np.flatnonzero(target.reshape(len(target), -1).any(1))
            if not len(visible):
                continue
            key = int(visible[0])
            others = [m for o, m in objects.items() if o not in expression.obj_ids]
            count += 1
            for name, model in models.items():
                start = time.perf_counter()
                pred = MaskPropagator(model.sam, model.preprocessor).propagate_all(frames, {key: target[key]})
                scores[name].seconds += time.perf_counter() - start
                scores[name].add(pred, target, others, key)
            copied = np.zeros_like(target)
            copied[key:] = target[key]
            scores["copy first mask"].add(copied, target, others, key)
    print(
        f"{count} expressions of {len(records)} videos from {args.data}; prompt: ground-truth mask on the first visible frame"
    )
    header = ["J all", "J tracked", "id-switch", "lost", "s/expr"]
    print(f"{'variant':<18}" + "".join(f"{h:>11}" for h in header))
    rows = {name: s.row() for name, s in scores.items()}
    for name, row in rows.items():
        print(f"{name:<18}" + "".join(f"{row[h]:>11.3f}" for h in header))
    for base in ("old", "old, single-mask"):
        ratios = "  ".join(
            f"{h} {rows['new'][h] / rows[base][h]:.2f}x"
            for h in ("J tracked", "id-switch", "lost")
            if rows[base][h] > 0
        )
        print(f"new / {base}: {ratios}")


if __name__ == "__main__":
    main()
