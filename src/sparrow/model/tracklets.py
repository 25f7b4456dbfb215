"""Proposals linked across the frames the VLM sees into tracklets, and what each tracklet looks like.

A referring expression names one object over the whole clip ("the red square moving to the left", "the circle on
the right at the start"). One frame's proposals cannot say what moved left or what was where at the start, so a
selector that scores each frame on its own (``model/selector.py``) is at chance on such expressions. Track-level
selection (``SparrowConfig.selection_level = "track"``, docs/architecture.md §6 item 19) links the proposals of the
``T`` frames the VLM sees into tracklets and lets the ``[BOX]`` embedding choose one tracklet for the whole clip
(``model/track_selector.py``); the pipeline then follows that tracklet through every frame.

:func:`link_proposals`, per frame in order:

1. the valid proposals by decreasing objectness, non-maximum suppression at ``nms_iou`` (duplicates of one object
   would otherwise start competing tracklets), at most ``max_per_frame``;
2. Hungarian assignment (``scipy.optimize.linear_sum_assignment``) of the live tracklets' predicted boxes to the
   kept boxes with cost ``1 - IoU + centre distance + appearance_weight (1 - cos)`` (normalised coordinates; the
   cosine of the appearance keys, when given); the predicted box is the last one moved by the tracklet's last
   displacement per frame (``motion``; SynthRef objects move up to 0.13 of the frame between the VLM's frames). A
   pair links when its IoU is at least ``min_iou`` or its centres are closer than ``max_distance``;
3. boxes left over start tracklets; a tracklet not extended for more than ``max_gap`` frames ends (an occluded
   object comes back into the same tracklet within the gap).

:class:`TrackGuide` carries the chosen tracklet to the frames between those it was linked on (linear interpolation
between two present neighbours, the nearer neighbour's box next to a gap).

:func:`trajectory_features` describes a tracklet's geometry (its boxes frame by frame, span, objectness, path and
net displacement); :func:`tracklet_appearance` averages the proposals' appearance keys over the frames where the
tracklet is present; :func:`tracklet_hits` and :func:`best_tracklets` label tracklets against a target's boxes
for training and evaluation, and :func:`object_tracklet_labels` against each of several targets (an expression
that names a set of objects, docs/architecture.md §6 item 22).

Boxes are normalised ``xyxy`` in ``[0, 1]``. Linking runs on the CPU without gradients (it is a discrete choice);
the features it indexes keep their gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_iou, nms

__all__ = [
    "LinkConfig",
    "TrackGuide",
    "Tracklets",
    "best_tracklets",
    "link_proposals",
    "object_tracklet_labels",
    "suppress_duplicates",
    "tracklet_appearance",
    "tracklet_hits",
    "tracklet_labels",
    "trajectory_dim",
    "trajectory_features",
]


@dataclass(frozen=True)
class LinkConfig:
    """Linking thresholds (module docstring)."""

    nms_iou: float = 0.5
    max_per_frame: int = 12
    min_iou: float = 0.1
    max_distance: float = 0.2
    max_gap: int = 3
    motion: bool = True  # predict each tracklet's box on the next frame from its last displacement
    appearance_weight: float = 1.0  # weight of 1 - cosine similarity of appearance keys in the linking cost


@dataclass
class Tracklets:
    """``index [N, T]`` long: the top-k proposal each tracklet takes on each frame (-1 where absent); ``boxes
    [N, T, 4]`` (zeros where absent), ``logits [N, T]`` objectness (0 where absent), ``present [N, T]`` bool."""

    index: Tensor
    boxes: Tensor
    logits: Tensor
    present: Tensor

    def __len__(self) -> int:
        return self.index.shape[0]


def _centres(boxes: Tensor) -> Tensor:
    return (boxes[..., :2] + boxes[..., 2:]) / 2


def link_proposals(
    boxes: Tensor,
    logits: Tensor,
    valid: Tensor,
    config: LinkConfig = LinkConfig(),
    appearance: Tensor | None = None,
) -> Tracklets:
    """Link the top-k proposals of ``T`` frames (``boxes [T, K, 4]``, ``logits [T, K]``, ``valid [T, K]``, one
    clip, frames in time order) into tracklets (module docstring). Returns :class:`Tracklets` on the input's device;
    a clip without any valid proposal gives ``N = 0``."""
    device = boxes.device
    b, lg, ok = boxes.detach().float().cpu(), logits.detach().float().cpu(), valid.detach().cpu()
    T = b.shape[0]
    tracks: list[dict[int, int]] = []  # frame -> proposal index
    last_box: list[Tensor] = []
    last_seen: list[int] = []
    velocity: list[Tensor] = []  # centre displacement per frame over the last link
    keys = None
    if appearance is not None and config.appearance_weight > 0:
        keys = torch.nn.functional.normalize(appearance.detach().float().cpu(), dim=-1)
    last_key: list[Tensor] = []
    for t in range(T):
        cand = torch.nonzero(ok[t]).flatten()
        if len(cand):
            keep = nms(b[t, cand], lg[t, cand], config.nms_iou)[: config.max_per_frame]
            cand = cand[keep]
        live = [i for i in range(len(tracks)) if t - last_seen[i] <= config.max_gap + 1]
        used: set[int] = set()
        if live and len(cand):
            prev = torch.stack([last_box[i] + (t - last_seen[i]) * velocity[i].repeat(2) for i in live])
            overlap = box_iou(prev, b[t, cand])
            distance = torch.cdist(_centres(prev), _centres(b[t, cand]))
            cost = 1 - overlap + distance
            if keys is not None:
                cost = cost + config.appearance_weight * (
                    1 - torch.stack([last_key[i] for i in live]) @ keys[t, cand].T
                )
            rows, cols = linear_sum_assignment(cost.numpy())
            for r, c in zip(rows.tolist(), cols.tolist()):
                if overlap[r, c] >= config.min_iou or distance[r, c] < config.max_distance:
                    track = live[r]
                    tracks[track][t] = int(cand[c])
                    if config.motion:
                        step = (_centres(b[t, cand[c]]) - _centres(last_box[track])) / (t - last_seen[track])
                        velocity[track] = step
                    last_box[track], last_seen[track] = b[t, cand[c]], t
                    if keys is not None:
                        last_key[track] = keys[t, cand[c]]
                    used.add(c)
        for c in range(len(cand)):
            if c not in used:
                tracks.append({t: int(cand[c])})
                last_box.append(b[t, cand[c]])
                last_seen.append(t)
                velocity.append(torch.zeros(2))
                if keys is not None:
                    last_key.append(keys[t, cand[c]])
    index = torch.full((len(tracks), T), -1, dtype=torch.long)
    for i, track in enumerate(tracks):
        for t, k in track.items():
            index[i, t] = k
    present = index >= 0
    safe = index.clamp(min=0)
    frames = torch.arange(T)[None].expand_as(index)
    out_boxes = torch.where(present[..., None], b[frames, safe], torch.zeros(()))
    out_logits = torch.where(present, lg[frames, safe], torch.zeros(()))
    return Tracklets(index.to(device), out_boxes.to(device), out_logits.to(device), present.to(device))


def suppress_duplicates(
    masks: Tensor, logits: Tensor, valid: Tensor, containment: float = 0.6, iou: float = 0.4
) -> Tensor:
    """Mask-level non-maximum suppression of one frame batch's proposals: ``masks [T, K, h, w]`` bool (each
    proposal's SAM2 mask), ``logits [T, K]`` objectness, ``valid [T, K]`` -> ``valid [T, K]`` with duplicates
    dropped. In decreasing objectness, a proposal is dropped when its mask is empty, lies inside a kept mask for at
    least ``containment`` of its area, or overlaps one by mask IoU ``iou`` or more. Box NMS misses the duplicates that
    matter for linking: a partial mask of an object gives a box inside the whole object's box (box IoU often < 0.5),
    and the two boxes then start two tracklets of one object that swap the target between them. An object in front
    of another is not inside the other's mask (SAM2 segments what is visible), so it survives."""
    t = valid.shape[0]
    flat = masks.flatten(2).float()  # [T, K, hw]
    area = flat.sum(-1)  # [T, K]
    inter = flat @ flat.transpose(1, 2)  # [T, K, K]
    inside = inter / area[..., None].clamp(min=1)  # [T, i, j]: share of i's mask inside j's
    union = area[..., None] + area[:, None] - inter
    overlap = inter / union.clamp(min=1)
    keep = valid.clone() & (area > 0)
    order = torch.argsort(logits.float(), dim=1, descending=True)
    for f in range(t):
        kept: list[int] = []
        for i in order[f].tolist():
            if not keep[f, i]:
                continue
            if kept and bool(((inside[f, i, kept] >= containment) | (overlap[f, i, kept] >= iou)).any()):
                keep[f, i] = False
            else:
                kept.append(i)
    return keep


def trajectory_dim(frames: int) -> int:
    """Width of :func:`trajectory_features` for ``frames`` linked frames."""
    return 5 * frames + 8


def trajectory_features(tracklets: Tracklets) -> Tensor:
    """A tracklet's geometry ``[N, 5 T + 8]``: per frame ``(cx, cy, w, h, present)`` (zeros where absent); the first
    and last present frame and the number of present frames, as fractions of ``T``; mean and max objectness logit;
    the path length of the centre; the net displacement ``(dx, dy)`` from the first to the last present frame."""
    present = tracklets.present
    n, T = present.shape
    boxes = tracklets.boxes.float()
    if n == 0:
        return boxes.new_zeros(0, trajectory_dim(T))
    cxcywh = torch.cat([_centres(boxes), boxes[..., 2:] - boxes[..., :2]], dim=-1) * present[..., None]
    per_frame = torch.cat([cxcywh, present[..., None].float()], dim=-1).flatten(1)  # [N, 5T]
    frames = torch.arange(T, device=present.device, dtype=torch.float32)[None].expand(n, -1)
    first = torch.where(present, frames, float(T)).min(1).values
    last = torch.where(present, frames, -1.0).max(1).values
    count = present.sum(1).float()
    logits = tracklets.logits.float()
    mean_logit = (logits * present).sum(1) / count.clamp(min=1)
    max_logit = torch.where(present, logits, float("-inf")).max(1).values
    centres = _centres(boxes)
    path = torch.zeros(n, device=present.device)
    net = torch.zeros(n, 2, device=present.device)
    for i in range(n):  # N is a few dozen; the present frames of a tracklet need not be consecutive
        c = centres[i][present[i]]
        if len(c) > 1:
            path[i] = (c[1:] - c[:-1]).norm(dim=-1).sum()
            net[i] = c[-1] - c[0]
    extra = torch.stack([first / T, last / T, count / T, mean_logit, max_logit, path], dim=1)
    return torch.cat([per_frame, extra, net], dim=1)


def tracklet_appearance(tracklets: Tracklets, appearance: Tensor) -> Tensor:
    """Mean appearance key of each tracklet over its present frames: ``appearance [T, K, A]`` (the top-k
    proposals' keys) -> ``[N, A]`` (differentiable in ``appearance``)."""
    n, T = tracklets.present.shape
    if n == 0:
        return appearance.new_zeros(0, appearance.shape[-1])
    frames = torch.arange(T, device=appearance.device)[None].expand(n, -1)
    picked = appearance[frames, tracklets.index.clamp(min=0)]  # [N, T, A]
    weight = tracklets.present.to(picked.dtype)[..., None]
    return (picked * weight).sum(1) / weight.sum(1).clamp(min=1)


def tracklet_hits(tracklets: Tracklets, target_boxes: Tensor, iou: float = 0.5) -> Tensor:
    """Per tracklet and frame, whether its box overlaps the target's by more than ``iou``: ``target_boxes [T, 4]``
    (NaN where the target is absent) -> ``[N, T]`` bool."""
    n, T = tracklets.present.shape
    target = target_boxes.to(tracklets.boxes.device, torch.float32)
    visible = ~torch.isnan(target).any(-1)
    hits = torch.zeros(n, T, dtype=torch.bool, device=tracklets.boxes.device)
    if n == 0:
        return hits
    for t in torch.nonzero(visible).flatten().tolist():
        hits[:, t] = box_iou(tracklets.boxes[:, t].float(), target[t][None])[:, 0] > iou
    return hits & tracklets.present


def best_tracklets(hits: Tensor) -> Tensor:
    """The tracklets that hit the target on the most frames (at least one): ``hits [N, T]`` -> ``[N]`` bool, the
    positives of track-level selection."""
    count = hits.sum(1)
    return (count == count.max()) & (count > 0) if len(count) else count.bool()


def tracklet_labels(hits: Tensor) -> tuple[Tensor, Tensor]:
    """Training labels of track-level selection from ``hits [N, T]`` (:func:`tracklet_hits`): the positives
    (:func:`best_tracklets`) and the tracklets to leave out of the loss ``[N]`` bool, those that touch the target on
    some frame without being a positive (fragments of the target, or tracklets that switched to or from it)."""
    positive = best_tracklets(hits)
    return positive, hits.any(1) & ~positive


def object_tracklet_labels(tracklets: Tracklets, object_boxes: Tensor, iou: float = 0.5) -> tuple[Tensor, Tensor]:
    """Training labels when an expression names several objects: ``object_boxes [O, T, 4]`` (one row per named
    object, NaN where it is absent) -> positives and left-out tracklets ``[N]`` bool. The positives are each
    object's best tracklets (:func:`best_tracklets`), together; the left-out ones touch some object without being a
    positive. With one object this is :func:`tracklet_labels` of its boxes."""
    n = len(tracklets)
    positive = torch.zeros(n, dtype=torch.bool, device=tracklets.boxes.device)
    touched = torch.zeros_like(positive)
    for boxes in object_boxes:
        hits = tracklet_hits(tracklets, boxes, iou)
        positive |= best_tracklets(hits)
        touched |= hits.any(1)
    return positive, touched & ~positive


@dataclass
class TrackGuide:
    """The chosen tracklet on the frames it was linked on: video frame indices ``frame_ids`` (increasing, ``T``),
    ``boxes [T, 4]`` and ``present [T]`` bool."""

    frame_ids: list[int]
    boxes: Tensor
    present: Tensor

    def box_at(self, t: int) -> Tensor | None:
        """The tracklet's box ``[4]`` on video frame ``t``, or None where it is absent: on a linked frame its box;
        between two linked frames the linear interpolation when the tracklet is present on both, else the box of the
        nearer one if it is present there (ties go to the present one), else None; before the first / after the
        last linked frame the box there, if present."""
        ids = self.frame_ids
        if t <= ids[0] or t >= ids[-1]:
            j = 0 if t <= ids[0] else len(ids) - 1
            return self.boxes[j] if bool(self.present[j]) else None
        j = max(i for i, f in enumerate(ids) if f <= t)
        if ids[j] == t:
            return self.boxes[j] if bool(self.present[j]) else None
        a, b = ids[j], ids[j + 1]
        pa, pb = bool(self.present[j]), bool(self.present[j + 1])
        w = (t - a) / (b - a)
        if pa and pb:
            return self.boxes[j] * (1 - w) + self.boxes[j + 1] * w
        if pa and w <= 0.5:
            return self.boxes[j]
        if pb and w >= 0.5:
            return self.boxes[j + 1]
        return None
