"""Spatio-temporal video grounding (VidSTG, HC-STVG): tIoU, vIoU, gt_vIoU and their recalls.

Files (JSON):

- GT ``{video_id: {"frames": [sampled frame ids], "span": [start, end), "boxes": {frame: [x0, y0, x1, y1]},
  "qtype": "declarative" | "interrogative" (optional)}}``; ``boxes`` are the annotated frames of the GT tube.
- Predictions ``{video_id: {"span": [start, end), "boxes": {frame: [x0, y0, x1, y1]}}}``; a box is required on
  every annotated GT frame (as the reference scorer does, a missing one is an error).

Per video, with P the predicted span and G the GT span (frame ids, end exclusive):
tIoU = |P ∩ G| / |P ∪ G|; vIoU = Σ_{t ∈ S_i} IoU(b̂_t, b_t) / |S_u| where S_u / S_i are the sampled frames in
P ∪ G (from min start to **max** end) / P ∩ G, IoU only on annotated GT frames; gt_vIoU = mean IoU over the annotated
GT frames. Recalls: fraction of videos **strictly above** 0.3 / 0.5. ``spatial_only`` (the VideoGLaMM / SPARROW
variant, temporal localisation off) reports only the gt_vIoU figures. Figures are split by ``qtype`` when present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparrow.errors import SparrowError
from sparrow.eval.io import read_json_mapping

THRESHOLDS = (0.3, 0.5)


def paired_box_iou(a: list[list[float]], b: list[list[float]]) -> list[float]:
    """IoU of ``a[i]`` with ``b[i]`` for ``[x0, y0, x1, y1]`` boxes (``torchvision.ops.box_iou``, float64)."""
    if not a:
        return []
    import torch
    from torchvision.ops import box_iou

    ta = torch.tensor(a, dtype=torch.float64).reshape(-1, 4)
    tb = torch.tensor(b, dtype=torch.float64).reshape(-1, 4)
    return box_iou(ta, tb).diagonal().tolist()


def temporal_iou(pred: tuple[int, int], gt: tuple[int, int]) -> float:
    """tIoU of two ``[start, end)`` spans."""
    inter = min(pred[1], gt[1]) - max(pred[0], gt[0])
    if inter <= 0:
        return 0.0
    union = (pred[1] - pred[0]) + (gt[1] - gt[0]) - inter
    return inter / union


def score_video(pred: dict, gt: dict, spatial_only: bool = False, where: str = "") -> dict[str, float]:
    """tIoU, vIoU and gt_vIoU of one video (see module doc); raises SparrowError for a missing predicted box."""
    gt_boxes = {int(k): v for k, v in gt["boxes"].items()}
    pred_boxes = {int(k): v for k, v in pred.get("boxes", {}).items()}
    lost = sorted(set(gt_boxes) - set(pred_boxes))
    if lost:
        raise SparrowError(
            f"{where}: no predicted box on annotated frames {lost[:5]}" + (" ..." if len(lost) > 5 else "")
        )
    order = sorted(gt_boxes)
    ious = dict(zip(order, paired_box_iou([pred_boxes[t] for t in order], [gt_boxes[t] for t in order])))
    out = {"gt_vIoU": float(np.mean(list(ious.values()))) if ious else 0.0}
    if spatial_only:
        return out
    if "span" not in pred:
        raise SparrowError(f"{where}: the prediction has no 'span' (use --spatial-only for box-only predictions)")
    ps, pe = (int(v) for v in pred["span"])
    gs, ge = (int(v) for v in gt["span"])
    frames = [int(f) for f in gt["frames"]]
    union_frames = [f for f in frames if min(ps, gs) <= f < max(pe, ge)]
    inter_frames = {f for f in frames if max(ps, gs) <= f < min(pe, ge)}
    viou = sum(iou for t, iou in ious.items() if t in inter_frames) / max(len(union_frames), 1)
    return {"tIoU": temporal_iou((ps, pe), (gs, ge)), "vIoU": viou, **out}


def _summary(rows: list[dict], spatial_only: bool) -> dict[str, float]:
    keys = ("gt_vIoU",) if spatial_only else ("tIoU", "vIoU", "gt_vIoU")
    out: dict[str, float] = {"n": len(rows)}
    for k in keys:
        vals = np.array([r[k] for r in rows])
        out[f"m_{k}"] = float(vals.mean())
        if k != "tIoU":
            for th in THRESHOLDS:
                out[f"{k}@{th}"] = float(np.mean(vals > th))  # strictly above
    return out


def evaluate_stvg(pred: str | Path, gt: str | Path, spatial_only: bool = False) -> dict:
    """Score a prediction JSON against a GT JSON (module doc); every GT video needs a prediction."""
    gt_data = read_json_mapping(gt, "ground-truth")
    pred_data = read_json_mapping(pred, "prediction")
    lost = sorted(set(gt_data) - set(pred_data))
    if lost:
        raise SparrowError(f"{len(lost)} videos without a prediction, e.g. {lost[:5]}", pred)
    rows = []
    for vid in sorted(gt_data):
        g = gt_data[vid]
        if (
            not isinstance(g, dict)
            or not isinstance(g.get("boxes"), dict)
            or (not spatial_only and ("span" not in g or "frames" not in g))
        ):
            raise SparrowError(f"video {vid!r}: need 'boxes'" + ("" if spatial_only else ", 'span' and 'frames'"), gt)
        row = {
            "video": vid,
            "qtype": g.get("qtype"),
            **score_video(pred_data[vid], g, spatial_only, f"{pred} (video {vid})"),
        }
        rows.append(row)
    summary = _summary(rows, spatial_only)
    qtypes = sorted({r["qtype"] for r in rows if r["qtype"] is not None})
    if qtypes:
        summary["by_query_type"] = {q: _summary([r for r in rows if r["qtype"] == q], spatial_only) for q in qtypes}
    return {"protocol": "stvg", "spatial_only": spatial_only, "global": summary, "videos": rows}
