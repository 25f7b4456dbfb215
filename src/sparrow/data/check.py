"""``sparrow data check``: read every split of a dataset with its reader and name every broken file.

For each split present (:func:`sparrow.data.readers.available_splits`): counts (videos, expressions, objects,
frames); every frame file opened and decoded (or, for a video file, probed and its last needed frame present);
every object's annotation read and validated (RLE sizes and counts, PNG size and integrity, box files); problems
are collected, one ``<file>: <problem>`` line each, and the run goes on. Then the overlap between splits: a video
id that appears both in an evaluation split and in a training split is a leak and is reported as a problem.
Optionally a contact sheet: a few clips, the referred target's mask outline and box over evenly spaced frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sparrow.atomic import atomic_path
from sparrow.data.readers import available_splits, eval_splits, read_dataset
from sparrow.data.schema import VideoRecord
from sparrow.data.synthref.preview import overlay
from sparrow.data.video_io import probe_video
from sparrow.errors import SparrowError


@dataclass
class CheckReport:
    """What :func:`check_dataset` found: per-split counts, problem lines, leaked ids per (eval, train) pair."""

    root: Path
    format: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    overlap: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    records: dict[str, list[VideoRecord]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if problem not in self.problems:
            self.problems.append(problem)


def _check_frames(rec: VideoRecord, report: CheckReport, decode: bool) -> None:
    if rec.frame_dir is not None:
        for t in range(rec.num_frames):
            path = rec.frame_path(t)
            if not path.is_file():
                report.add(f"{path}: missing frame (video {rec.video_id})")
                continue
            try:
                with Image.open(path) as img:
                    if decode:
                        img.load()
                    size = (img.height, img.width)
            except OSError as exc:
                report.add(f"{path}: corrupt frame ({exc})")
                continue
            if size != rec.size:
                report.add(f"{path}: frame is {size[1]}x{size[0]}, the annotation says {rec.width}x{rec.height}")
    elif rec.video_path is not None:
        try:
            info = probe_video(rec.video_path)
        except SparrowError as exc:
            report.add(str(exc) if str(rec.video_path) in str(exc) else f"{rec.video_path}: {exc}")
            return
        last = max(rec.frame_indices) if rec.frame_indices else rec.num_frames - 1
        if info.num_frames and info.num_frames <= last:
            report.add(f"{rec.video_path}: {info.num_frames} frames, the annotation needs frame {last}")
        if decode:
            try:
                rec.load_frames([rec.num_frames - 1])
            except SparrowError as exc:
                report.add(str(exc))


def _check_annotations(rec: VideoRecord, report: CheckReport) -> None:
    for obj in rec.objects.values():
        try:
            masks = obj.masks
            for t, rle in enumerate(masks):
                if rle is not None:
                    obj.mask(t, rec.size)
            obj.boxes  # noqa: B018
        except SparrowError as exc:
            report.add(str(exc))
    if rec.foreground is not None:
        try:
            rec.foreground[0]
        except SparrowError as exc:
            report.add(str(exc))


def check_dataset(root: str | Path, format: str, decode: bool = True, splits: list[str] | None = None) -> CheckReport:
    """Check every split of the dataset at ``root`` in ``format`` (see the module doc); never raises for a problem
    in the data: :attr:`CheckReport.problems` lists them."""
    root = Path(root)
    report = CheckReport(root, format)
    present = available_splits(root, format)
    if not present:
        report.add(f"{root}: no split of format {format!r} found")
    for split in splits or present:
        try:
            records = read_dataset(root, format, split)
        except SparrowError as exc:
            report.add(str(exc))
            continue
        report.records[split] = records
        report.counts[split] = {
            "videos": len(records),
            "expressions": sum(len(r.expressions) for r in records),
            "objects": sum(len(r.objects) for r in records),
            "frames": sum(r.num_frames for r in records),
        }
        for rec in records:
            _check_frames(rec, report, decode)
            _check_annotations(rec, report)
    evaluation = set(eval_splits(format))
    ids = {s: {r.video_id for r in recs} for s, recs in report.records.items()}
    for e in sorted(s for s in ids if s in evaluation):
        for t in sorted(s for s in ids if s not in evaluation):
            common = sorted(ids[e] & ids[t])
            if common:
                report.overlap[(e, t)] = common
                shown = ", ".join(common[:5]) + (" ..." if len(common) > 5 else "")
                report.add(
                    f"{root}: evaluation split {e!r} shares {len(common)} videos with training split {t!r}: {shown}"
                )
    return report


def dataset_sheet(
    records: list[VideoRecord], out: str | Path, clips: int = 6, frames: int = 6, cell: int = 128
) -> Path:
    """A PNG contact sheet: one row per clip (first expression with objects) with ``frames`` evenly spaced frames,
    each resized to ``cell`` pixels wide, the target's mask outline (white) and box (magenta) drawn."""
    chosen = [(r, e) for r in records for e in r.expressions[:1] if e.obj_ids][:clips]
    if not chosen:
        raise SparrowError("no video with an expression that refers to an object", out)
    rows = []
    for rec, exp in chosen:
        idx = sorted({round(float(x)) for x in np.linspace(0, rec.num_frames - 1, frames)})
        try:
            imgs = rec.load_frames(idx)
            masks = rec.target_masks(exp, idx)
        except SparrowError:
            continue  # the check already names the broken file
        boxes = rec.target_boxes(exp, idx)
        height = max(1, int(rec.height * cell // rec.width))
        cells = [overlay(imgs[i], masks[i], boxes[i]).resize((cell, height), Image.BILINEAR) for i in range(len(idx))]
        rows.append((f'{rec.video_id}: "{exp.text[:80]}"', cells, height))
    if not rows:
        raise SparrowError("no clip could be drawn (all chosen clips have broken files)", out)
    caption, gap = 14, 4
    width = frames * (cell + gap)
    sheet = Image.new("RGB", (width, sum(h + caption + gap for _, _, h in rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = 0
    for text, cells, height in rows:
        draw.text((2, y + 1), text, fill=(0, 0, 0))
        for col, img in enumerate(cells):
            sheet.paste(img, (col * (cell + gap), y + caption))
        y += height + caption + gap
    out = Path(out)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return out
