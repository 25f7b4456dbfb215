"""Training-step time of the tiny model with TSF crops injected vs without (aim: ratio <= 1.15).

Command (CPU; about a minute):

    PYTHONPATH=src python benchmarks/bench_tsf_step.py [--steps 10] [--vlm-frames 8] [--crop 56]

Builds a small SynthRef split and its TSF cache (annotation tracks, K=4) in a temporary folder, then alternates
forward+backward+AdamW steps on the same two samples with and without the K crops (shown to the VLM as small
images through its own vision tower), so both are timed side by side under the same machine load.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sparrow.data.dataset import ReferringVideoDataset, load_records
from sparrow.data.synthref import SynthConfig, generate_split
from sparrow.model.batching import make_batch
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import build_tiny
from sparrow.tsf.build import BuildConfig, build_tsf
from sparrow.tsf.cache import read_tsf_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--vlm-frames", type=int, default=8)
    parser.add_argument("--crop", type=int, default=56)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_split(
            root, videos=2, seed=0, split="train", config=SynthConfig(size=128, num_frames=24), progress=False
        )
        records = load_records(root / "train")
        build_tsf(records, root / "tsf", BuildConfig(k=4), progress=False)
        ds = ReferringVideoDataset(
            records,
            num_vlm_frames=args.vlm_frames,
            num_sam_frames=4,
            tsf_cache=read_tsf_cache(root / "tsf"),
            tsf_crop_size=args.crop,
        )
        samples = [ds[0], ds[1]]
    model = build_tiny(
        seed=0, config=SparrowConfig(vlm_frames=args.vlm_frames, tsf="train", tsf_crop_size=args.crop)
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = {"off": make_batch(model, samples, with_tsf=False), "on": make_batch(model, samples, with_tsf=True)}
    tokens = {k: int(b.vlm.attention_mask.sum()) for k, b in batches.items()}
    times: dict[str, list[float]] = {"off": [], "on": []}
    for step in range(args.steps + 1):
        for key in ("off", "on") if step % 2 else ("on", "off"):
            start = time.perf_counter()
            loss = model(batches[key], train_proposer=True)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step:  # the first round warms up
                times[key].append(time.perf_counter() - start)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(
        f"tokens per batch: off {tokens['off']}, on {tokens['on']} (+{tokens['on'] - tokens['off']} image tokens for 2x4 crops)"
    )
    print(
        f"median step: TSF off {med['off'] * 1000:.0f} ms, TSF on {med['on'] * 1000:.0f} ms, ratio {med['on'] / med['off']:.2f} (aim <= 1.15)"
    )


if __name__ == "__main__":
    main()
