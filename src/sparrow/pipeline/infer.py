"""Run a pipeline over a benchmark split and write predictions in the layout the scorers read.

``<out>/<video>/<exp_id>/<frame>.png``: one binary PNG per frame (0 / 255, mode "L"), the MeViS / ReVOS /
Ref-YouTube-VOS layout that ``sparrow eval rvos`` scores. ``<out>/<video>/<exp_id>/answer.json`` keeps the
answer, key frame, selection score and the TSF source. Each expression folder is written under a temporary name and
renamed when complete, so a killed run resumes where it stopped (complete folders are skipped) and never leaves a
half-written expression.

Two entry points share :func:`write_prediction`:

- :func:`predict_split`: an already loaded pipeline over records, in this process (an error stops the run);
- :func:`infer_split` (``sparrow infer``): one item per (video, expression) through :func:`sparrow.engine.run_items`,
  on this machine or on a Ray cluster (``--engine ray``). Each worker process opens the split and loads the model
  once (:func:`infer_item`); a failed expression is retried when transient, then recorded in
  ``<out>/failures.jsonl`` (one JSON line per item) while the others go on. A later run retries what failed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from sparrow.atomic import atomic_dir
from sparrow.data.readers import read_dataset
from sparrow.data.schema import Expression, VideoRecord
from sparrow.engine import EngineOptions, ItemResult, run_items
from sparrow.errors import SparrowError
from sparrow.pipeline.segment import SegmentationPipeline, load

TSF_SOURCES = ("auto", "off", "self", "boxes")
FAILURES = "failures.jsonl"


def write_prediction(
    pipeline: SegmentationPipeline,
    record: VideoRecord,
    expression: Expression,
    target: Path,
    mode: str | None = None,
    tsf: str = "auto",
) -> bool:
    """Segment one expression and write ``target/<frame>.png`` + ``answer.json`` atomically; returns whether the
    answer lacked a generated ``[SEG]`` (``forced_prompt``)."""
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
            "answer": result.answer,
            "forced_prompt": result.forced_prompt,
            "mode": result.mode,
            "key_frames": [t.key_frame for t in result.targets],
            "selection_scores": [t.selection_score for t in result.targets],
            "tsf": result.extra.get("tsf", {}).get("source"),
        }
        (tmp / "answer.json").write_text(json.dumps(info))
    return bool(result.forced_prompt)


def _check_tsf(tsf: str) -> None:
    if tsf not in TSF_SOURCES:
        raise SparrowError(f"tsf must be one of {list(TSF_SOURCES)}, got {tsf!r}")


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
    _check_tsf(tsf)
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
        counts["forced"] += int(write_prediction(pipeline, record, expression, target, mode, tsf))
        counts["written"] += 1
    return counts


@dataclass(frozen=True)
class InferJob:
    """What every item of one run shares; frozen and hashable, so a worker caches the split and model by it."""

    data: str
    format: str = "mevis"
    split: str | None = None
    model: str = "default"
    device: str | None = None
    dtype: str | None = None
    mode: str | None = None
    tsf: str = "auto"
    out: str = "."


@dataclass(frozen=True)
class InferItem:
    """One (video, expression) of a job."""

    job: InferJob
    video_id: str
    exp_id: str

    def target(self) -> Path:
        return Path(self.job.out) / self.video_id / self.exp_id


@dataclass
class InferStats:
    """What one run did: expressions written now, skipped as already done, failed, and without a generated [SEG]."""

    written: int = 0
    skipped: int = 0
    failed: int = 0
    forced: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    worker_pids: set[int] = field(default_factory=set)  # the processes that ran the items (each loads the model once)


@lru_cache(maxsize=2)
def _records(data: str, format: str, split: str | None) -> dict[str, VideoRecord]:
    """The split's records by video id, opened once per process (readers stream, so this is cheap)."""
    return {r.video_id: r for r in read_dataset(data, format, split)}


@lru_cache(maxsize=1)
def _pipeline(model: str, device: str | None, dtype: str | None = None) -> SegmentationPipeline:
    """The pipeline, loaded once per process (a Ray worker keeps it for every item it runs)."""
    return load(model, device=device, dtype=dtype)


def infer_item(item: InferItem) -> dict[str, Any]:
    """Segment one expression of the job's split and write it (see the module doc); returns ``{"forced": bool,
    "pid": worker process id}``."""
    job = item.job
    record = _records(job.data, job.format, job.split).get(item.video_id)
    if record is None:
        raise SparrowError(f"video {item.video_id!r} is not in the split", job.data)
    expression = next((e for e in record.expressions if e.exp_id == item.exp_id), None)
    if expression is None:
        raise SparrowError(f"video {item.video_id!r} has no expression {item.exp_id!r}", job.data)
    forced = write_prediction(
        _pipeline(job.model, job.device, job.dtype), record, expression, item.target(), job.mode, job.tsf
    )
    return {"forced": forced, "pid": os.getpid()}


def plan_items(job: InferJob, limit: int | None = None) -> list[InferItem]:
    """Every (video, expression) of the split in reading order (the first ``limit`` when given)."""
    items = [
        InferItem(job, r.video_id, e.exp_id)
        for r in _records(job.data, job.format, job.split).values()
        for e in r.expressions
    ]
    return items if limit is None else items[:limit]


def infer_split(
    job: InferJob,
    options: EngineOptions | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> InferStats:
    """Run (or resume) ``job`` with the engine of ``options``: finished expressions (``answer.json`` present) are
    skipped, the rest run as items; each failure is appended to ``<out>/failures.jsonl`` as it arrives."""
    _check_tsf(job.tsf)
    options = options or EngineOptions()
    out = Path(job.out)
    items = plan_items(job, limit)
    todo = [i for i in items if not (i.target() / "answer.json").exists()]
    stats = InferStats(skipped=len(items) - len(todo))
    out.mkdir(parents=True, exist_ok=True)
    failures = out / FAILURES
    failures.unlink(missing_ok=True)  # every item that failed before runs again now
    if todo and options.engine == "local":
        _pipeline(job.model, job.device, job.dtype)  # a model that cannot load is one error here, not one per item
    bar = tqdm(total=len(todo), desc="predict", unit="expr", disable=not progress)

    def record(result: ItemResult) -> None:
        bar.update(1)
        item = result.item
        if result.status == "ok":
            stats.written += 1
            stats.forced += int(result.value["forced"])
            stats.worker_pids.add(int(result.value["pid"]))
            return
        stats.failed += 1
        stats.failures.append((f"{item.video_id}/{item.exp_id}", result.reason or ""))
        with open(failures, "a") as f:
            f.write(
                json.dumps(
                    {
                        "video": item.video_id,
                        "exp_id": item.exp_id,
                        "reason": result.reason,
                        "attempts": result.attempts,
                    }
                )
                + "\n"
            )

    try:
        run_items(infer_item, todo, options, on_result=record)
    finally:
        bar.close()
    return stats
