"""Speed of fresh SynthRef training samples (issue 10 item 4) against reading samples of a written split.

    PYTHONPATH=src python benchmarks/bench_fresh_synthref.py --data data/synthref/train --samples 210

Side by side in one process: CPU ms per training sample from ``FreshSynthRef`` (clips generated on the fly,
balanced over kinds and tags; one clip or a few per sample, JPEG round trip of the sampled frames) and from
``ReferringVideoDataset`` on the written split (JPEG decoding of the sampled frames, RLE decoding), both with the
bundled chain's frame counts (8 VLM frames, 4 SAM frames), and their ratio; plus how often the asked-for
(kind, tag) was met and the tag shares of the fresh samples next to those of the written split's expressions.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from sparrow.data.dataset import ReferringVideoDataset, load_records
from sparrow.data.synthref.stream import TAG_CYCLE, FreshSynthRef


def _cpu_ms(dataset, count: int) -> tuple[float, list]:
    start = time.process_time()
    samples = [dataset[i % len(dataset)] for i in range(count)]
    return 1000 * (time.process_time() - start) / count, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a written SynthRef split to compare with")
    parser.add_argument("--samples", type=int, default=210)
    args = parser.parse_args()
    fresh = FreshSynthRef(seed=1000, length=args.samples, num_vlm_frames=8, num_sam_frames=4)
    written = ReferringVideoDataset(load_records(args.data), num_vlm_frames=8, num_sam_frames=4, sampling="random")
    fresh_ms, samples = _cpu_ms(fresh, args.samples)
    read_ms, _ = _cpu_ms(written, args.samples)
    met = sum(
        s.kind == k and ((t in s.tags) if t != "none" else not s.tags)
        for s, (k, t) in zip(samples, (fresh.wanted(i) for i in range(args.samples)))
    )
    print(
        f"{args.samples} samples: fresh {fresh_ms:.1f} CPU ms/sample, written split {read_ms:.1f} CPU ms/sample, "
        f"ratio {fresh_ms / read_ms:.2f}; asked-for (kind, tag) met on {met}/{args.samples}"
    )
    split_tags = Counter(t for r in written.records for e in r.expressions for t in (e.tags or ["none"]))
    fresh_tags = Counter(t for s in samples for t in (s.tags or ["none"]))
    n_split = sum(len(r.expressions) for r in written.records)
    print("| tag | fresh (% of samples) | written split (% of expressions) |\n|---|---|---|")
    for tag in TAG_CYCLE:
        print(f"| {tag} | {100 * fresh_tags[tag] / args.samples:.1f} | {100 * split_tags[tag] / n_split:.1f} |")
    kinds = Counter(s.kind for s in samples)
    print("kinds (fresh): " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))


if __name__ == "__main__":
    main()
