"""The grounding figures of ``benchmarks/probe_grounding.py``, computed from cached clips (:mod:`.extract`).

Probes train on the clips of one set of videos (``train``) and are scored on another (``held``); labels come from
:mod:`.labels`. Every function returns plain numbers (fractions in ``[0, 1]``) keyed by name.

1. :func:`query_sensitivity`: per clip with several expressions, the mean distance between the embeddings of two
   different expressions over the mean embedding norm (``mean_{i<j} ||e_i - e_j|| / mean_i ||e_i||``), averaged
   over clips; for the projected ``[BOX]``/``[SEG]`` embeddings and the VLM states they are read from.
2. :func:`selection_report`: top-1 selection on every held-out frame where the target is visible (a hit: the
   picked proposal has IoU > 0.5 with the target's box), for the model's own selector and ``[BOX]`` embedding, a
   selector probe trained on a bag of words of the expression, one trained on the model's frozen ``[BOX]``
   embedding, picking the most object-like proposal, and the oracle (some proposal is a hit).
3. :func:`attribute_report`: linear-probe accuracy of colour, shape, identity (colour x shape) and quadrant from
   the features of each object at each time (VLM vision tokens and language-model states per temporal group,
   pooled over the object's mask; with the SAM2 vision tower also its input, the SAM2 cell features before the
   projector; SAM2 features ROI-pooled in its box per frame), and of the motion direction
   from the clip-level feature ``[mean over time, last - first]``; ``chance`` is the majority class of the held-out
   labels.
4. :func:`seg_report`: mean IoU (and share of frames above 0.5) of the masks SAM2 decodes from the ``[SEG]``
   embedding alone, and from the target's identity prompt when the model has them, per expression kind.
5. :func:`identification_report`: per expression kind, how often a bilinear probe on a bag of words picks a target
   among the clip's ground-truth objects from their clip-level features: whether the features carry what each
   kind of expression needs, with ideal boxes; ``chance`` is the mean of (targets / candidates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from sparrow.data.synthref.identity import COLOUR_ORDER
from sparrow.data.synthref.scene import SHAPES
from sparrow.diagnostics.extract import ClipFeatures, pool_tokens
from sparrow.diagnostics.labels import DIRECTIONS, QUADRANTS, bag_of_words, object_labels, quadrant, vocabulary
from sparrow.diagnostics.probes import (
    SelectionSet,
    linear_probe_accuracy,
    selector_logits,
    top1_hits,
    train_identifier,
    train_selector_probe,
)
from sparrow.model.selector import Selector, selection_labels

__all__ = [
    "attribute_report",
    "identification_report",
    "query_sensitivity",
    "seg_report",
    "selection_report",
    "selection_set",
]

KINDS = ("appearance", "motion", "position")


def query_sensitivity(clips: Sequence[ClipFeatures]) -> dict[str, float]:
    """Relative change of each prompt vector between different expressions of one clip (module docstring, 1)."""
    out = {}
    for name in ("box", "seg", "box_state", "seg_state"):
        ratios = []
        for clip in clips:
            e = getattr(clip, name).float()
            if len(e) < 2:
                continue
            i, j = torch.triu_indices(len(e), len(e), 1)
            ratios.append(float((e[i] - e[j]).norm(dim=-1).mean() / e.norm(dim=-1).mean().clamp(min=1e-12)))
        out[name] = float(np.mean(ratios)) if ratios else float("nan")
    return out


def selection_set(
    clips: Sequence[ClipFeatures], queries: Callable[[ClipFeatures], Tensor], pos_iou: float = 0.5, neg_iou: float = 0.2
) -> tuple[SelectionSet, list[str]]:
    """One row per (clip, expression, frame with the target visible); ``queries(clip) -> [E, Dq]``. Also returns
    each row's expression kind."""
    rows: dict[str, list[Tensor]] = {
        k: [] for k in ("q", "boxes", "logits", "features", "appearance", "valid", "labels", "hit")
    }
    kinds = []
    for clip in clips:
        q = queries(clip)
        h, w = clip.record.size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        props = clip.proposals
        for e, expression in enumerate(clip.record.expressions):
            for i, box in enumerate(clip.record.target_boxes(expression, clip.frame_ids)):
                if box is None:
                    continue
                target = torch.tensor(box, dtype=torch.float32) / scale
                boxes = props.boxes[i].float()
                rows["q"].append(q[e].float())
                rows["boxes"].append(boxes)
                rows["logits"].append(props.logits[i].float())
                rows["features"].append(props.features[i].float())
                rows["appearance"].append(
                    props.appearance[i].float() if props.appearance is not None else torch.zeros(boxes.shape[0], 0)
                )
                rows["valid"].append(props.valid[i])
                rows["labels"].append(selection_labels(boxes, target, pos_iou, neg_iou))
                rows["hit"].append(box_iou(boxes, target[None])[:, 0] > 0.5)
                kinds.append(expression.kind or "")
    stacked = {k: torch.stack(v) for k, v in rows.items()}
    appearance = stacked["appearance"] if stacked["appearance"].shape[-1] else None
    data = SelectionSet(
        stacked["q"],
        stacked["boxes"],
        stacked["logits"],
        stacked["features"],
        appearance,
        stacked["valid"].bool(),
        stacked["labels"],
        stacked["hit"] & stacked["valid"].bool(),
    )
    return data, kinds


def _by_kind(hits: Tensor, kinds: list[str]) -> dict[str, float]:
    """Mean of ``hits [N]`` (bool or float) overall and per expression kind."""
    out = {"all": float(hits.float().mean())}
    for kind in KINDS:
        sel = torch.tensor([k == kind for k in kinds])
        if bool(sel.any()):
            out[kind] = float(hits[sel].float().mean())
    return out


def selection_report(
    selector: Selector, train: Sequence[ClipFeatures], held: Sequence[ClipFeatures], epochs: int = 20
) -> dict[str, dict[str, float]]:
    """Held-out top-1 selection (module docstring, 2): ``{row: {all, appearance, motion, position}}`` plus
    ``frames`` (held-out / probe-training frame counts)."""
    vocab = vocabulary([t for c in [*train, *held] for t in c.texts])
    bow = lambda c: torch.from_numpy(bag_of_words(c.texts, vocab))
    model_q = lambda c: c.box
    held_model, kinds = selection_set(held, model_q)
    train_model, _ = selection_set(train, model_q)
    held_bow, _ = selection_set(held, bow)
    train_bow, _ = selection_set(train, bow)
    feat_dim = held_model.features.shape[-1]
    app_dim = 0 if held_model.appearance is None else held_model.appearance.shape[-1]
    report = {}
    with torch.no_grad():
        report["model selector, [BOX]"] = _by_kind(
            top1_hits(selector_logits(selector, held_model), held_model.hit), kinds
        )
    for name, tr, te in (
        ("probe on bag of words", train_bow, held_bow),
        ("probe on frozen [BOX]", train_model, held_model),
    ):
        probe = train_selector_probe(tr, feat_dim, app_dim, epochs=epochs)
        with torch.no_grad():
            report[name] = _by_kind(top1_hits(selector_logits(probe, te), te.hit), kinds)
    objectness = held_model.logits.masked_fill(~held_model.valid, float("-inf"))
    report["objectness argmax"] = _by_kind(top1_hits(objectness, held_model.hit), kinds)
    report["oracle (a proposal hits)"] = _by_kind(held_model.hit.any(-1), kinds)
    report["frames"] = {"held_out": float(len(held_model)), "probe_train": float(len(train_model))}
    return report


def seg_report(clips: Sequence[ClipFeatures]) -> dict[str, dict[str, float]]:
    """``[SEG]``-only and identity-prompt decoding IoU per kind (module docstring, 4); rows without data are left out."""
    report = {}
    for name, field in (("[SEG] only", "seg_iou"), ("target's identity prompt", "identity_iou")):
        values, kinds = [], []
        for clip in clips:
            ious = getattr(clip, field)
            for e, expression in enumerate(clip.record.expressions):
                keep = ~np.isnan(ious[e])
                values.extend(ious[e][keep].tolist())
                kinds.extend([expression.kind or ""] * int(keep.sum()))
        if values:
            iou = torch.tensor(values)
            report[f"{name}: mean IoU"] = _by_kind(iou, kinds)
            report[f"{name}: IoU > 0.5"] = _by_kind(iou > 0.5, kinds)
    return report


def _time_samples(clip: ClipFeatures, source: str) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
    """Per object: features over time ``[O, U, D]``, present ``[O, U]`` and, per time unit, the (first, last)
    frame index (into ``clip.frame_ids``) it covers."""
    if source == "sam2":
        present = torch.from_numpy(~np.isnan(clip.object_boxes[..., 0]))
        return clip.sam_objects.float() * present[..., None], present, [(i, i) for i in range(len(clip.frame_ids))]
    tokens = {"vlm vision": clip.vision_tokens, "vlm lm": clip.lm_tokens, TOWER_INPUT: clip.vision_input}[source]
    gt = tokens.shape[0]
    temporal = -(-len(clip.frame_ids) // gt)
    pooled = [pool_tokens(tokens, m, temporal) for m in clip.object_masks]
    spans = [(g * temporal, min(len(clip.frame_ids), (g + 1) * temporal) - 1) for g in range(gt)]
    return torch.stack([p for p, _ in pooled]), torch.stack([k for _, k in pooled]), spans


def _clip_level(features: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
    """``[O, U, D]`` -> ``[O, 2D]`` = [mean over present units, last present - first present]; valid ``[O]``."""
    out = torch.zeros(features.shape[0], 2 * features.shape[2])
    for o in range(features.shape[0]):
        units = present[o].nonzero().flatten()
        if len(units):
            f = features[o, units]
            out[o] = torch.cat([f.mean(0), f[-1] - f[0]])
    return out, present.any(-1)


SOURCES = ("vlm vision", "vlm lm", "sam2")
TOWER_INPUT = "vlm vision input"  # a source when the VLM's tokens come from SAM2 (vlm_vision: sam2)


def _sources(clips: Sequence[ClipFeatures]) -> tuple[str, ...]:
    """The feature sources of the clips: :data:`SOURCES`, plus :data:`TOWER_INPUT` when every clip has it."""
    return (*SOURCES, TOWER_INPUT) if all(c.vision_input is not None for c in clips) else SOURCES


def _attribute_samples(clips: Sequence[ClipFeatures], source: str) -> dict[str, tuple[Tensor, Tensor]]:
    xs: dict[str, list[Tensor]] = {k: [] for k in ("colour", "shape", "identity", "quadrant", "direction")}
    ys: dict[str, list[int]] = {k: [] for k in xs}
    for clip in clips:
        labels = object_labels(clip.record)
        feats, present, spans = _time_samples(clip, source)
        h, w = clip.record.size
        level, valid = _clip_level(feats, present)
        for o, obj in enumerate(clip.obj_ids):
            lab = labels[obj]
            for u, (first, last) in enumerate(spans):
                if not bool(present[o, u]):
                    continue
                centre = np.mean([lab.centres[clip.frame_ids[t]] for t in range(first, last + 1)], axis=0)
                values = {
                    "colour": COLOUR_ORDER.index(lab.colour),
                    "shape": SHAPES.index(lab.shape),
                    "identity": lab.identity,
                    "quadrant": None if (qd := quadrant(centre, w, h)) is None else QUADRANTS.index(qd),
                }
                for k, v in values.items():
                    if v is not None:
                        xs[k].append(feats[o, u])
                        ys[k].append(v)
            if bool(valid[o]) and lab.direction is not None:
                xs["direction"].append(level[o])
                ys["direction"].append(DIRECTIONS.index(lab.direction))
    return {k: (torch.stack(xs[k]) if xs[k] else torch.zeros(0, 1), torch.tensor(ys[k], dtype=torch.int64)) for k in xs}


def attribute_report(train: Sequence[ClipFeatures], held: Sequence[ClipFeatures]) -> dict[str, dict[str, float]]:
    """Linear-probe accuracy per feature source and attribute (module docstring, 3), plus ``chance``."""
    report: dict[str, dict[str, float]] = {}
    for source in _sources([*train, *held]):
        tr, te = _attribute_samples(train, source), _attribute_samples(held, source)
        report[source] = {k: linear_probe_accuracy(*tr[k], *te[k]) for k in tr}
        if "chance" not in report:
            report["chance"] = {
                k: float(torch.bincount(te[k][1]).max()) / len(te[k][1]) if len(te[k][1]) else float("nan") for k in te
            }
            report["held-out samples"] = {k: float(len(te[k][1])) for k in te}
    return report


def _identification_set(clips: Sequence[ClipFeatures], source: str, vocab: dict[str, int]):
    queries, objects, valid, targets, kinds = [], [], [], [], []
    width = max(len(c.obj_ids) for c in clips)
    for clip in clips:
        feats, present = _time_samples(clip, source)[:2]
        level, ok = _clip_level(feats, present)
        pad = width - len(clip.obj_ids)
        level = torch.cat([level, level.new_zeros(pad, level.shape[1])])
        ok = torch.cat([ok, torch.zeros(pad, dtype=torch.bool)])
        bow = torch.from_numpy(bag_of_words(clip.texts, vocab))
        for e, expression in enumerate(clip.record.expressions):
            is_target = torch.tensor([o in expression.obj_ids for o in clip.obj_ids] + [False] * pad) & ok
            if not bool(is_target.any()):
                continue
            queries.append(bow[e])
            objects.append(level)
            valid.append(ok)
            targets.append(is_target)
            kinds.append(expression.kind or "")
    return torch.stack(queries), torch.stack(objects), torch.stack(valid), torch.stack(targets), kinds


def _pad(x: Tensor, width: int, fill: float | bool) -> Tensor:
    """Pad dimension 1 of ``x`` to ``width`` with ``fill``."""
    return torch.cat([x, x.new_full((x.shape[0], width - x.shape[1], *x.shape[2:]), fill)], 1)


def identification_report(train: Sequence[ClipFeatures], held: Sequence[ClipFeatures]) -> dict[str, dict[str, float]]:
    """Held-out target identification among ground-truth objects, per feature source and kind (docstring, 4)."""
    vocab = vocabulary([t for c in [*train, *held] for t in c.texts])
    report: dict[str, dict[str, float]] = {}
    for source in _sources([*train, *held]):
        q, f, v, t, _ = _identification_set(train, source, vocab)
        hq, hf, hv, ht, kinds = _identification_set(held, source, vocab)
        width = max(f.shape[1], hf.shape[1])
        probe = train_identifier(q, _pad(f, width, 0.0), _pad(v, width, False), _pad(t, width, False))
        with torch.no_grad():
            scores = probe(hq, _pad(hf, width, 0.0), _pad(hv, width, False))
        report[source] = _by_kind(_pad(ht, width, False).gather(1, scores.argmax(-1, keepdim=True))[:, 0], kinds)
        if "chance" not in report:
            report["chance"] = _by_kind(ht.sum(-1) / hv.sum(-1).clamp(min=1), kinds)
    return report
