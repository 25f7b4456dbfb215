"""Grounding diagnostics of a SPARROW model on SynthRef (issue 10 item 6): does the sentence reach the box?

Run (a few CPU minutes at 40 + 40 videos):

    PYTHONPATH=src python benchmarks/probe_grounding.py --model src/sparrow/assets/default \\
        --data data/synthref/test --probe-data data/synthref/train --videos 40 [--json OUT.json]

``--data`` gives the held-out videos (a split whose seed no training used), ``--probe-data`` those the small probes
train on (default: the first half of ``--data``, then the rest is held out). It prints, from
``sparrow.diagnostics.grounding``:

(a) query sensitivity: how much the projected ``[BOX]``/``[SEG]`` embeddings (and the VLM states under them) change
    between different expressions of the same clip, in % of their norm;
(b) held-out top-1 selection (picked proposal IoU > 0.5 with the target box, on the frames the VLM sees where the
    target is visible): the model's selector against a selector probe on a bag of words of the expression, a probe
    on the frozen ``[BOX]`` embedding, objectness argmax, and the oracle;
(c) linear-probe accuracy of colour, shape, identity, quadrant and motion direction from the VLM's visual tokens
    (vision tower output; language-model states at the video positions; with ``vlm_vision: sam2`` also the tower's
    input, the SAM2 cell features before its projector, row "vlm vision input") and from SAM2's ROI-pooled features, and
    per expression kind the share of expressions whose target a bag-of-words probe finds among the ground-truth
    objects from those features;
and, on the frames of (b), the IoU of masks decoded from ``[SEG]`` alone, and from the target's identity prompt
when the model has identity prompts (what SAM2's decoder can do with an ideal prompt).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sparrow.atomic import atomic_file
from sparrow.data.mevis import read_mevis
from sparrow.diagnostics.extract import PROBE_ANSWER, extract_clip
from sparrow.diagnostics.grounding import (
    attribute_report,
    identification_report,
    query_sensitivity,
    seg_report,
    selection_report,
)
from sparrow.errors import SparrowError
from sparrow.model.loading import load_model


def _table(title: str, report: dict[str, dict[str, float]], percent: bool = True) -> None:
    columns = list(dict.fromkeys(k for row in report.values() for k in row))
    print(f"\n{title}")
    print("| row | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in report.items():
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append("" if v is None else (f"{100 * v:.1f}" if percent else f"{v:.0f}"))
        print(f"| {name} | " + " | ".join(cells) + " |")


def _read(split: Path, videos: int) -> list:
    """The first ``videos`` records (by id) of a split, reading only those."""
    meta = split / "meta_expressions.json"
    if not meta.is_file():
        raise SparrowError("not a SynthRef/MeViS split folder (no meta_expressions.json)", split)
    try:
        ids = sorted(json.loads(meta.read_text())["videos"])[:videos]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SparrowError(f"unreadable meta_expressions.json ({exc})", meta) from exc
    return read_mevis(split, videos=ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model folder, or default / tiny")
    parser.add_argument("--data", type=Path, required=True, help="held-out SynthRef split folder")
    parser.add_argument(
        "--probe-data", type=Path, default=None, help="split the probes train on (default: half of --data)"
    )
    parser.add_argument("--videos", type=int, default=40, help="videos read from each split")
    parser.add_argument("--epochs", type=int, default=20, help="selector-probe epochs")
    parser.add_argument(
        "--answer",
        default=PROBE_ANSWER,
        help=f"teacher-forced answer (default {PROBE_ANSWER!r}; 'Sure, [SEG].' for a [SEG]-only model)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        model = load_model(str(args.model), device="cpu")
        held = _read(args.data, args.videos)
        if args.probe_data is None:
            train, held = held[: len(held) // 2], held[len(held) // 2 :]
        else:
            train = _read(args.probe_data, args.videos)
        if len(train) < 2 or len(held) < 2:
            raise SparrowError("need at least 2 videos for the probes and 2 held out", args.data)
        if "[SEG]" not in args.answer:
            raise SparrowError(f"--answer must hold [SEG], got {args.answer!r}")
        clips_train = [extract_clip(model, r, args.answer) for r in train]
        clips_held = [extract_clip(model, r, args.answer) for r in held]
        extracted, extracted_cpu = time.perf_counter() - start, time.process_time() - cpu
        figures = {
            "query_sensitivity": query_sensitivity(clips_held),
            "selection_top1": selection_report(model.selector, clips_train, clips_held, epochs=args.epochs),
            "seg_decoding": seg_report(clips_held),
            "attribute_probes": attribute_report(clips_train, clips_held),
            "target_identification": identification_report(clips_train, clips_held),
        }
    except SparrowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sens = figures["query_sensitivity"]
    print(f"model {args.model}; held out {len(held)} videos of {args.data}, probes trained on {len(train)} videos")
    print(
        f"extraction {extracted:.0f} s ({extracted_cpu:.0f} CPU s), total {time.perf_counter() - start:.0f} s "
        f"({time.process_time() - cpu:.0f} CPU s)"
    )
    print("\n(a) query sensitivity, mean ||e_i - e_j|| / mean ||e|| over expression pairs of a clip (%)")
    print("| [BOX] embedding | [SEG] embedding | VLM state at [BOX] | VLM state at [SEG] |\n|---|---|---|---|")
    print(
        f"| {100 * sens['box']:.1f} | {100 * sens['seg']:.1f} | {100 * sens['box_state']:.1f} | {100 * sens['seg_state']:.1f} |"
    )
    sel = dict(figures["selection_top1"])
    frames = sel.pop("frames")
    _table(
        f"(b) held-out top-1 selection, IoU > 0.5 (% of {frames['held_out']:.0f} frames; probes trained on "
        f"{frames['probe_train']:.0f})",
        sel,
    )
    _table("(b) masks decoded without a box, on the same frames (%)", figures["seg_decoding"])
    attr = dict(figures["attribute_probes"])
    counts = attr.pop("held-out samples")
    _table("(c) linear-probe accuracy per attribute (held out, %)", attr)
    _table("    held-out samples", {"count": counts}, percent=False)
    _table(
        "(c) target found among the ground-truth objects by a bag-of-words probe, per expression kind (%)",
        figures["target_identification"],
    )
    if args.json is not None:
        with atomic_file(args.json) as f:
            json.dump({"model": str(args.model), "data": str(args.data), **figures}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
