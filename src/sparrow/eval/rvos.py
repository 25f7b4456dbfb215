"""Referring video object segmentation scored per expression: MeViS, ReVOS, Ref-YouTube-VOS (local GT) and SynthRef.

GT is a MeViS-layout split folder (``sparrow.data.mevis.read_mevis``); predictions are
``<pred>/<video>/<exp_id>/<frame>.png`` binary masks (nonzero = foreground). Per expression, over **all** frames and
without void:

- the target is the **union** of the expression's objects; J and F per frame; j = mean J, f = mean F;
- ReVOS adds A (pixel accuracy, mean over frames) and R (robustness, mean over frames of
  max(1 − |P \\ T| / (|foreground| + 1e-6), 0), foreground = union of the video's annotated objects, or
  ``mask_dict_foreground.json`` when the split has it). Masks are binarised first (the reference compares raw
  uint8 values, which equals this when predictions are written as 0/1 and objects do not overlap);
- SPARROW's consistency metrics (``sparrow.eval.consistency``) per expression.

Aggregation: J, F = means over expressions, J&F = (J + F) / 2 (MeViS, YTVOS, SynthRef); ReVOS: the same per split
(``type_id`` 0 referring, 1 reasoning) and **overall = mean of the two split means**. Missing predictions are an
error listing them, or with ``missing="zero"`` the expression scores 0 on every mask metric (stated in the result).
Outside ReVOS the summary also gives the 95 % interval of J&F over a video-level bootstrap (``J&F 95% low`` /
``high``, :func:`video_interval`), since the expressions of one video are not independent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparrow.data.mevis import read_mevis
from sparrow.data.rle import decode_rle
from sparrow.data.schema import VideoRecord
from sparrow.errors import SparrowError
from sparrow.eval.consistency import CONSISTENCY_KEYS, drift, first_frame_iou, identity_switch_rate, slice_by
from sparrow.eval.intervals import bootstrap_ratio
from sparrow.eval.io import check_headers, check_missing, read_binary_mask
from sparrow.eval.metrics import region_and_boundary
from sparrow.eval.parallel import run_ordered

FORMATS = ("mevis", "revos", "ytvos")
REVOS_SPLITS = {0: "referring", 1: "reasoning"}


@dataclass
class VideoTask:
    """Everything a worker needs to score the expressions of one video."""

    record: VideoRecord
    pred_dir: Path
    fmt: str
    skip: dict[str, list[str]]  # exp_id -> missing frame files (scored 0)
    foreground: list | None = None  # ReVOS foreground RLE per frame (None: union of the objects)


def _foreground(task: VideoTask) -> np.ndarray:
    rec = task.record
    if task.foreground is None:
        fg = np.zeros((rec.num_frames, rec.height, rec.width), dtype=bool)
        for obj in rec.objects.values():
            for t in range(rec.num_frames):
                if obj.masks[t] is not None:
                    fg[t] |= obj.mask(t, rec.size)
        return fg
    if len(task.foreground) != rec.num_frames:
        raise SparrowError(
            f"video {rec.video_id}: {len(task.foreground)} foreground masks for {rec.num_frames} frames",
            "mask_dict_foreground.json",
        )
    return np.stack(
        [
            decode_rle(r, rec.size, f"mask_dict_foreground.json ({rec.video_id}, frame {t})")
            for t, r in enumerate(task.foreground)
        ]
    )


def score_video(task: VideoTask) -> list[dict]:
    """Score every expression of one video; one row per expression (``curve`` = per-frame J&F)."""
    rec = task.record
    rows: list[dict] = []
    fg = _foreground(task) if task.fmt == "revos" else None
    object_masks: dict[int, np.ndarray] = {}

    def obj_masks(oid: int) -> np.ndarray:
        if oid not in object_masks:
            object_masks[oid] = np.stack([rec.objects[oid].mask(t, rec.size) for t in range(rec.num_frames)])
        return object_masks[oid]

    for exp in rec.expressions:
        row: dict = {
            "video": rec.video_id,
            "exp_id": exp.exp_id,
            "text": exp.text,
            "tags": list(exp.tags),
            "kind": exp.kind,
        }
        if task.fmt == "revos":
            row["type_id"] = exp.extra.get("type_id")
        if exp.exp_id in task.skip:
            row.update({"J": 0.0, "F": 0.0, "J&F": 0.0, "missing": len(task.skip[exp.exp_id]), "curve": None})
            if task.fmt == "revos":
                row.update({"A": 0.0, "R": 0.0})
            row.update({k: None for k in CONSISTENCY_KEYS})
            rows.append(row)
            continue
        target = np.zeros((rec.num_frames, rec.height, rec.width), dtype=bool)
        for oid in exp.obj_ids:
            target |= obj_masks(oid)
        folder = task.pred_dir / rec.video_id / exp.exp_id
        pred = np.stack([read_binary_mask(folder / f"{name}.png", rec.size) for name in rec.frames])
        j, f = region_and_boundary(pred, target)
        jm, fm = float(j.mean()), float(f.mean())
        row.update({"J": jm, "F": fm, "J&F": (jm + fm) / 2, "missing": 0, "curve": ((j + f) / 2).tolist()})
        if task.fmt == "revos":
            n = rec.num_frames
            acc = np.mean((pred == target).reshape(n, -1), axis=1)
            false_pos = np.count_nonzero((pred & ~target).reshape(n, -1), axis=1)
            area = np.count_nonzero(fg.reshape(n, -1), axis=1)
            robust = np.maximum(1 - false_pos / (area + 1e-6), 0.0)
            row.update({"A": float(acc.mean()), "R": float(robust.mean())})
        others = [obj_masks(o) for o in sorted(rec.objects) if o not in exp.obj_ids]
        row.update(
            {
                "first_iou": first_frame_iou(j, target),
                "id_switch": identity_switch_rate(pred, target, others),
                "drift": drift(j),
            }
        )
        rows.append(row)
    return rows


def _means(rows: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out["J&F"] = (out["J"] + out["F"]) / 2
    return out


def video_interval(rows: list[dict], key: str = "J&F") -> tuple[float, float]:
    """The 95 % interval of the mean of ``key`` over expressions, resampling videos (expressions of one video are
    not independent; ``eval.intervals.bootstrap_ratio``)."""
    per_video: dict[str, list[float]] = {}
    for r in rows:
        per_video.setdefault(str(r["video"]), []).append(float(r[key]))
    _, low, high = bootstrap_ratio([sum(v) for v in per_video.values()], [len(v) for v in per_video.values()])
    return low, high


def aggregate(rows: list[dict], fmt: str, revos_rounding: bool = False) -> dict:
    """Protocol figures from per-expression rows (see module doc).

    ``revos_rounding`` reproduces the ReVOS reference exactly: per-expression J, F, A, R are rounded to two decimals
    of a percent before the split means (a difference of at most 0.005 points).
    """
    if not rows:
        raise SparrowError("no expressions to score")
    if fmt != "revos":
        summary = _means(rows, ("J", "F"))
        summary["J&F 95% low"], summary["J&F 95% high"] = video_interval(rows)
    else:
        pool = rows
        if revos_rounding:
            pool = [{**r, **{k: round(100 * r[k], 2) / 100 for k in ("J", "F", "A", "R")}} for r in rows]
        splits = {}
        for type_id, name in REVOS_SPLITS.items():
            members = [r for r in pool if r.get("type_id") == type_id]
            if members:
                splits[name] = _means(members, ("J", "F", "A", "R"))
        if not splits:
            raise SparrowError("no ReVOS expression has type_id 0 or 1")
        overall = {k: float(np.mean([s[k] for s in splits.values()])) for k in ("J", "F", "A", "R", "J&F")}
        summary = {
            **overall,
            "splits": splits,
            "overall_is_mean_of_split_means": True,
            "revos_rounding": revos_rounding,
        }
    scored = [r for r in rows if r["first_iou"] is not None]
    summary["consistency"] = {
        k: float(np.mean([r[k] for r in scored])) if scored else float("nan") for k in CONSISTENCY_KEYS
    }
    summary["n_expressions"] = len(rows)
    summary["n_missing_scored_zero"] = sum(1 for r in rows if r["missing"])
    metrics = ("J", "F", "J&F", *CONSISTENCY_KEYS)
    summary["by_tag"] = slice_by(rows, "tags", metrics)
    summary["by_kind"] = slice_by(rows, "kind", metrics)
    return summary


def _foreground_file(gt: Path) -> dict | None:
    path = gt / "mask_dict_foreground.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SparrowError(f"not valid JSON ({exc.msg} at line {exc.lineno})", path) from exc


def evaluate_rvos(
    pred: str | Path,
    gt: str | Path,
    fmt: str = "mevis",
    missing: str = "error",
    workers: int = 1,
    videos: list[str] | None = None,
    revos_rounding: bool = False,
    progress: bool = True,
) -> dict:
    """Score ``<pred>/<video>/<exp_id>/<frame>.png`` against a MeViS-layout split ``gt`` under protocol ``fmt``.

    Every prediction file's header (readable PNG, mask mode, the annotation's size) is checked before any
    expression is scored. Returns ``{"protocol", "missing_policy", "summary": {...}, "expressions": [rows without curves],
    "curves": {"video/exp": [J&F per frame]}, "missing": {"video/exp": n_missing_frames}}``.
    """
    if fmt not in FORMATS:
        raise SparrowError(f"unknown format {fmt!r} for the per-expression protocol (one of {FORMATS})")
    pred, gt = Path(pred), Path(gt)
    if not pred.is_dir():
        raise SparrowError("prediction folder not found", pred)
    records = read_mevis(gt, check_frames=False, videos=videos)
    if fmt == "revos":
        for rec in records:
            for exp in rec.expressions:
                type_id = exp.extra.get("type_id")
                if type_id not in REVOS_SPLITS:
                    raise SparrowError(
                        f"video {rec.video_id}, expression {exp.exp_id}: ReVOS needs type_id 0 or 1, got {type_id!r}",
                        gt / "meta_expressions.json",
                    )
    fg_dict = _foreground_file(gt) if fmt == "revos" else None
    expected = {
        f"{rec.video_id}/{exp.exp_id}": [pred / rec.video_id / exp.exp_id / f"{n}.png" for n in rec.frames]
        for rec in records
        for exp in rec.expressions
    }
    gaps = check_missing(expected, missing, pred)
    sizes = {f"{rec.video_id}/{exp.exp_id}": rec.size for rec in records for exp in rec.expressions}
    check_headers({p: sizes[unit] for unit, paths in expected.items() if unit not in gaps for p in paths})
    tasks = []
    for rec in records:
        skip = {
            e.exp_id: [p.name for p in gaps[f"{rec.video_id}/{e.exp_id}"]]
            for e in rec.expressions
            if f"{rec.video_id}/{e.exp_id}" in gaps
        }
        fg = None
        if fg_dict is not None:
            if rec.video_id not in fg_dict or "masks_rle" not in fg_dict[rec.video_id]:
                raise SparrowError(f"no foreground masks for video {rec.video_id}", gt / "mask_dict_foreground.json")
            fg = fg_dict[rec.video_id]["masks_rle"]
        tasks.append(VideoTask(rec, pred, fmt, skip, fg))
    per_video = run_ordered(score_video, tasks, workers=workers, progress=fmt if progress else None)
    rows = [r for rows in per_video for r in rows]
    curves = {f"{r['video']}/{r['exp_id']}": r.pop("curve") for r in rows}
    return {
        "protocol": fmt,
        "missing_policy": missing,
        "summary": aggregate(rows, fmt, revos_rounding),
        "expressions": rows,
        "curves": {k: v for k, v in curves.items() if v is not None},
        "missing": {f"{r['video']}/{r['exp_id']}": r["missing"] for r in rows if r["missing"]},
    }
