"""Speed of the proposer, its Hungarian-matched loss and the selector, at the tiny and real sizes.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_proposer.py                  # both presets, CPU (or CUDA if present)
    PYTHONPATH=src python benchmarks/bench_proposer.py --preset real --device cpu --threads 2 --repeats 3

Prints, per preset: inference time of one proposer forward + top-k + selection for one image, and the time of one
training step (forward, Hungarian matching on every decoder layer, backward) for a batch, with the share of it spent
in matching.
"""

from __future__ import annotations

import argparse
import time

import torch

from sparrow.model.matching import box_match_cost, hungarian_match
from sparrow.model.proposer import Proposer, ProposerConfig, proposer_loss
from sparrow.model.selector import Selector, select_boxes

PRESETS = {
    # tiny SAM2 (hidden 128, 256 px input -> 16x16 stride-16 embedding)
    "tiny": (ProposerConfig(in_channels=128, hidden_size=64, num_queries=32, num_layers=2, num_heads=4, top_k=16), 16),
    # SAM2 hiera-base-plus at 1024 px -> 64x64 embedding; the release's 300 queries, 6 layers, d 256
    "real": (ProposerConfig(), 64),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def bench(preset: str, device: torch.device, repeats: int, batch: int) -> None:
    config, side = PRESETS[preset]
    torch.manual_seed(0)
    proposer = Proposer(config).to(device)
    selector = Selector(embed_dim=256, feature_dim=config.hidden_size).to(device)
    image = torch.randn(1, config.in_channels, side, side, device=device)
    embeddings = torch.randn(2, 256, device=device)

    @torch.no_grad()
    def infer() -> None:
        top = proposer.top_proposals(proposer(image))
        select_boxes(selector(embeddings, top), threshold=0.4, max_boxes=1)

    images = torch.randn(batch, config.in_channels, side, side, device=device)
    gen = torch.Generator().manual_seed(1)
    targets = []
    for _ in range(batch):
        xy = torch.rand(5, 2, generator=gen) * 0.6
        targets.append(torch.cat([xy, xy + 0.1 + 0.3 * torch.rand(5, 2, generator=gen)], -1).to(device))

    def train_step() -> None:
        proposer.zero_grad(set_to_none=True)
        proposer_loss(proposer(images), targets)["total"].backward()

    with torch.no_grad():
        out = proposer(images)

    def matching_only() -> None:
        for boxes, logits in [(out.boxes, out.logits), *out.aux]:
            for b, tgt in enumerate(targets):
                hungarian_match(box_match_cost(boxes[b], logits[b], tgt))

    t_infer = _time(infer, repeats, device)
    t_train = _time(train_step, repeats, device)
    t_match = _time(matching_only, repeats, device)
    params = sum(p.numel() for p in proposer.parameters()) / 1e6
    print(
        f"{preset:5s} {device.type}: proposer {params:.2f}M params, Q={config.num_queries}, L={config.num_layers}, "
        f"{side}x{side} map | inference (1 image, top-{config.top_k} + selection): {t_infer * 1e3:.1f} ms | "
        f"train step (batch {batch}, {config.num_layers} matched layers): {t_train * 1e3:.1f} ms, "
        f"of which matching {t_match * 1e3:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=[*PRESETS, "all"], default="all")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for preset in PRESETS if args.preset == "all" else [args.preset]:
        bench(preset, torch.device(args.device), args.repeats, args.batch)


if __name__ == "__main__":
    main()
