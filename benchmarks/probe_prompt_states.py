"""Does the sentence reach the prompt tokens? Linear probes of the target's identity from the ``[BOX]``/``[SEG]`` states.

    PYTHONPATH=src python benchmarks/probe_prompt_states.py --model runs/exp/small_vlm/final \\
        --train data/synthref/train --test data/synthref/test --train-videos 60 --test-videos 40

For every SynthRef expression whose targets share one (colour, shape) identity, the answer ``Sure, [BOX] [SEG].``
is teacher-forced (``sparrow.diagnostics.extract.extract_clip``) and four vectors are kept: the VLM's last-layer
states at ``[BOX]`` and ``[SEG]`` and their projections by the two L->V heads. A multinomial logistic regression
(``sparrow.diagnostics.probes.linear_probe_accuracy``) trained on the ``--train`` split predicts the target's
identity, colour and shape on the held-out ``--test`` split; printed per vector, over all expressions and over
appearance expressions (whose words name what the target looks like; motion and position expressions name the
shape but the colour must come from the video). Chance: 1/36 identity, 1/6 colour and shape (majority class lower
bound printed). About 2-3 CPU s per clip with the small preset.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from sparrow.data.mevis import read_mevis
from sparrow.data.synthref.identity import expression_identity
from sparrow.data.synthref.scene import SHAPES
from sparrow.diagnostics.extract import extract_clip
from sparrow.diagnostics.probes import linear_probe_accuracy
from sparrow.model.loading import load_model

VECTORS = ("box_state", "seg_state", "box", "seg")
TARGETS = {
    "identity": lambda y: y,
    "colour": lambda y: y // len(SHAPES),
    "shape": lambda y: y % len(SHAPES),
}


def collect(model, split: Path, videos: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Vectors ``{name: [E, d]}``, target identities ``[E]`` and expression kinds ``[E]`` of the first clips."""
    vectors: dict[str, list[np.ndarray]] = {k: [] for k in VECTORS}
    labels, kinds = [], []
    for record in read_mevis(split)[:videos]:
        with torch.no_grad():
            clip = extract_clip(model, record)
        for i, expression in enumerate(record.expressions):
            identity = expression_identity(record, expression.exp_id)
            if identity < 0:
                continue
            for name in VECTORS:
                vectors[name].append(getattr(clip, name)[i].float().numpy())
            labels.append(identity)
            kinds.append(expression.kind or "")
    return {k: np.stack(v) for k, v in vectors.items()}, np.array(labels), np.array(kinds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--train-videos", type=int, default=60)
    parser.add_argument("--test-videos", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    model.eval()
    start = time.perf_counter()
    x_train, y_train, _ = collect(model, args.train, args.train_videos)
    x_test, y_test, kinds = collect(model, args.test, args.test_videos)
    appearance = kinds == "appearance"
    print(
        f"model {args.model}: {len(y_train)} training / {len(y_test)} held-out expressions "
        f"({int(appearance.sum())} appearance); {time.perf_counter() - start:.0f} s"
    )
    print("| vector | target | all | appearance | majority class |")
    print("|---|---|---|---|---|")
    for name in VECTORS:
        for target, of in TARGETS.items():
            tr, te = torch.from_numpy(of(y_train)), torch.from_numpy(of(y_test))
            xtr, xte = torch.from_numpy(x_train[name]), torch.from_numpy(x_test[name])
            overall = linear_probe_accuracy(xtr, tr, xte, te)
            app = linear_probe_accuracy(xtr, tr, xte[appearance], te[appearance])
            majority = float(np.bincount(of(y_test)).max() / len(y_test))
            print(f"| {name} | {target} | {100 * overall:.1f} | {100 * app:.1f} | {100 * majority:.1f} |")


if __name__ == "__main__":
    main()
