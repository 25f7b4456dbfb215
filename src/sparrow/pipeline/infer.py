"""Run a pipeline over a benchmark split and write predictions in the layout the scorers read.

``<out>/<video>/<exp_id>/<frame>.png``: one binary PNG per frame (0 / 255, mode "L"), the MeViS / ReVOS /
Ref-YouTube-VOS layout that ``sparrow eval rvos`` scores. ``<out>/<video>/<exp_id>/answer.json`` keeps the
answer, key frame, selection score and the TSF source. Each expression folder is written under a temporary name and renamed
when complete, so a killed run resumes where it stopped (complete folders are skipped) and never leaves a
half-written expression.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from sparrow.atomic import atomic_dir
from sparrow.data.schema import VideoRecord
from sparrow.errors import SparrowError
from sparrow.pipeline.segment import SegmentationPipeline

TSF_SOURCES = ("auto", "off", "self", "boxes")


def predict_split(
    pipeline: SegmentationPipeline,
    records: list[VideoRecord],
    out_dir: str | Path,
    mode: str | None = None,
    limit: int | None = None,
    progress: bool = True,
    tsf: str = "auto",
) -> dict[str, int]:
    """Segment every (video, expression) of ``records``; returns counts ``{"written", "skipped", "forced"}``.

    ``tsf`` (TSF at inference): "auto" (the model config's), "off", "self" (self-TSF: the first pass's track), or
    "boxes" (the annotated target box of every visible frame, standing in for boxes a user draws).
    """
    if tsf not in TSF_SOURCES:
        raise SparrowError(f"tsf must be one of {list(TSF_SOURCES)}, got {tsf!r}")
    out_dir = Path(out_dir)
    jobs = [(r, e) for r in records for e in r.expressions]
    if limit is not None:
        jobs = jobs[:limit]
    counts = {"written": 0, "skipped": 0, "forced": 0}
    for record, expression in tqdm(jobs, desc="predict", unit="expr", disable=not progress):
        target = out_dir / record.video_id / expression.exp_id
        if (target / "answer.json").exists():
            counts["skipped"] += 1
            continue
        frames = record.load_frames()
        options: dict = {"self_tsf": {"auto": None, "off": False, "self": True, "boxes": None}[tsf]}
        if tsf == "boxes":
            track = record.target_boxes(expression)
            options["tsf_boxes"] = {t: box for t, box in enumerate(track) if box is not None}
        result = pipeline.segment(frames, expression.text, mode=mode, **options)
        masks = result.masks
        with atomic_dir(target) as tmp:
            for name, mask in zip(record.frames, masks):
                Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(tmp / f"{name}.png")
            info = {
                "answer": result.answer, "forced_prompt": result.forced_prompt, "mode": result.mode,
                "key_frames": [t.key_frame for t in result.targets], "selection_scores": [t.selection_score for t in result.targets],
                "tsf": result.extra.get("tsf", {}).get("source"),
            }
            (tmp / "answer.json").write_text(json.dumps(info))
        counts["written"] += 1
        counts["forced"] += int(result.forced_prompt)
    return counts
