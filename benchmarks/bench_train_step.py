"""Training-step time of the tiny model at the ``configs/tiny_stage_vlm.yaml`` settings (CPU or GPU).

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_train_step.py [--stage vlm] [--steps 10] [--threads 1]
    PYTHONPATH=src python benchmarks/bench_train_step.py --config configs/small_stage_vlm.yaml --steps 3 [--batch-size 1]

It builds the model as the chain does (tiny: SAM2 at 128 px, 8 VLM frames; a ``small`` config: the SmolLM2 VLM with
a random tiny SAM2 at 128 px instead of ``segmenter_from``, which does not change the cost), applies the stage's
freezing (and LoRA) from the config, and times whole optimiser steps (collate + forward + backward + clip + AdamW) on
synthetic 128-px clips of the config's shape (batch 4, 2 SAM frames), after 2 warm-up steps. Prints mean / median /
min wall-clock seconds per step, the process CPU seconds per step (unaffected by other jobs on a shared machine) and
the split between collate and forward+backward+step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from sparrow.model.batching import make_batch
from sparrow.train.config import load_train_config
from sparrow.train.loop import prepare_samples
from sparrow.train.model_init import build_initial_model
from sparrow.train.objectives import stage_loss
from sparrow.train.stages import apply_stage, set_train_mode

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def clip_sample(rng: np.random.Generator, vlm_frames: int, sam_frames: int, size: int = 128) -> SimpleNamespace:
    """A synthetic clip: a coloured square (the target) on a grey background, ``size`` px, SynthRef-like fields."""
    t = max(vlm_frames, sam_frames)
    frames = np.full((t, size, size, 3), 60, dtype=np.uint8)
    masks = np.zeros((t, size, size), dtype=bool)
    x, y = (int(v) for v in rng.integers(0, size - 32, size=2))
    frames[:, y : y + 24, x : x + 24] = rng.integers(0, 255, size=3, dtype=np.uint8)
    masks[:, y : y + 24, x : x + 24] = True
    box = np.array([x, y, x + 24, y + 24], dtype=np.float32)
    sam = np.linspace(0, t - 1, sam_frames).round().astype(int)
    return SimpleNamespace(
        vlm_frames=frames[:vlm_frames],
        question="Can you segment the red square in this video?",
        answer="Sure, it is [BOX] [SEG].",
        sam_frames=frames[sam],
        masks=masks[sam][None],
        boxes=np.tile(box, (sam_frames, 1))[None],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="vlm", choices=("segmenter", "proposer", "vlm", "selection"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--config", type=Path, default=None, help="a training config (default: the tiny chain's --stage)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="override the config's batch size")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_train_config(args.config or CONFIGS / f"tiny_stage_{args.stage}.yaml", check_paths=False)
    args.stage = config.stage.name
    if config.model.init != "small":
        config.model.init = (
            "tiny"  # the chain's earlier stages have the same architecture; weights do not change the cost
        )
    config.model.segmenter_from = ""
    config.model.sam_image_size = 128
    config.batch_size = args.batch_size or config.batch_size
    config.model.config = {
        "vlm_frames": config.data.num_vlm_frames,
        **{k: v for k, v in config.model.config.items() if k != "vlm_frames"},
    }
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_initial_model(config.model).to(device)
    plan = apply_stage(model, config.stage)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.optimizer.lr, betas=tuple(config.optimizer.betas))
    rng = np.random.default_rng(0)
    collate, compute, cpu = [], [], []
    for step in range(args.steps + 2):
        samples = [
            clip_sample(rng, config.data.num_vlm_frames, config.data.num_sam_frames) for _ in range(config.batch_size)
        ]
        t0, c0 = time.perf_counter(), time.process_time()
        batch = make_batch(model, prepare_samples(samples, config.stage.seg_only)).to(device)
        t1 = time.perf_counter()
        set_train_mode(model, plan)
        losses = stage_loss(config.stage, model, batch)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, config.optimizer.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if step >= 2:
            collate.append(t1 - t0)
            compute.append(t2 - t1)
            cpu.append(time.process_time() - c0)
    total = [a + b for a, b in zip(collate, compute)]
    n_train = sum(p.numel() for p in params)
    print(
        f"stage {args.stage} on {device}, {args.threads} thread(s): batch {config.batch_size}, {config.data.num_vlm_frames} VLM frames, "
        f"{config.data.num_sam_frames} SAM frames at 128 px, {n_train:,} trainable parameters"
    )
    print(
        f"seconds/step over {args.steps} steps: mean {statistics.mean(total):.3f}, median {statistics.median(total):.3f}, "
        f"min {min(total):.3f}; collate {statistics.mean(collate):.3f}, forward+backward+step {statistics.mean(compute):.3f}; "
        f"process CPU seconds/step {statistics.mean(cpu):.3f}"
    )
    print(
        f"last loss {float(losses['loss'].detach()):.4f}; load average {Path('/proc/loadavg').read_text().split()[:3]}"
    )


if __name__ == "__main__":
    main()
