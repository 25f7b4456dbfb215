"""Track-level selection on SynthRef, measured (``benchmarks/probe_tracklets.py``): does the ``[BOX]`` embedding
pick the tracklet of the object the sentence names?

For each clip, on the ``vlm_frames`` evenly spaced frames the VLM sees (as inference does), :func:`tracklet_clip`
teacher-forces ``Sure, [BOX] [SEG].`` for every expression, links the proposals into tracklets exactly as the
pipeline does (``SparrowModel.mask_boxes`` then ``link_proposals``) and keeps each tracklet's appearance and
trajectory, and per expression which tracklet covers the target on which frames.

:func:`tracklet_report` scores, over the held-out expressions, the share of target-visible frames on which the
chosen tracklet's box overlaps the target by IoU > 0.5 (the frame-level figure of ``selection_report``, so the two
compare):

- ``model``: the model's track selector on its own ``[BOX]`` embedding;
- ``probe on bag of words``: a fresh :class:`~sparrow.model.track_selector.TrackSelector` trained on a bag of words
  of the expression (what a perfect reading of the words gets from these tracklets);
- ``probe on frozen [BOX]``: the same probe trained on the model's frozen ``[BOX]`` embedding;
- ``probe on question states``: the same probe trained on the language model's last-layer states averaged over the
  tokens between the video and ``[BOX]`` (the question and the answer's start): what the language model knows of
  the sentence, whether or not it reaches ``[BOX]``;
- ``best tracklet``: the tracklet that covers the target on the most frames (the ceiling of any single choice);
- ``frame oracle``: some tightened proposal hits on the frame (the ceiling of choosing per frame).

Rows are given overall and per expression kind, with the number of held-out frames and a 95 % interval of the
overall share, resampling videos (``all_low``, ``all_high``).

With ``tracks="gt"`` the tracklets are the annotated objects themselves (their boxes on the VLM's frames, appearance
pooled in those boxes, objectness 0): what selection could reach with perfect detection and linking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from sparrow.data.schema import VideoRecord
from sparrow.data.synthref.expressions import KINDS
from sparrow.data.video_io import sample_indices
from sparrow.diagnostics.extract import PROBE_ANSWER, probe_question, teacher_force
from sparrow.diagnostics.labels import bag_of_words, vocabulary
from sparrow.eval.intervals import bootstrap_ratio
from sparrow.model.pixel_decoder import ImageFeatures
from sparrow.model.proposal_appearance import proposal_appearance
from sparrow.model.sparrow_model import SparrowModel
from sparrow.model.track_selector import TrackSelector, track_selection_loss
from sparrow.model.tracklets import (
    Tracklets,
    link_proposals,
    tracklet_appearance,
    tracklet_hits,
    tracklet_labels,
    trajectory_features,
)

__all__ = ["TrackletClip", "tracklet_clip", "tracklet_report", "train_tracklet_probe"]


@dataclass
class TrackletClip:
    """One clip's tracklets and expressions: ``box [E, C]`` the teacher-forced ``[BOX]`` embeddings, ``question
    [E, d]`` the mean language-model state over the tokens between the video and ``[BOX]``, ``logits
    [E, N]`` the model's tracklet logits, ``appearance [N, A]``, ``trajectory [N, G]``, ``hits [E, N, T]`` bool,
    ``visible [E, T]`` bool (target visible), ``frame_oracle [E, T]`` bool, ``texts`` and ``kinds`` per expression."""

    record: VideoRecord
    texts: list[str]
    kinds: list[str]
    box: Tensor
    question: Tensor
    logits: Tensor
    appearance: Tensor
    trajectory: Tensor
    hits: Tensor
    visible: Tensor
    frame_oracle: Tensor


@torch.no_grad()
def tracklet_clip(
    model: SparrowModel, record: VideoRecord, answer: str = PROBE_ANSWER, tracks: str = "linked"
) -> TrackletClip:
    """Run the model's VLM, SAM2, proposer and tracklet linking once on a clip (module docstring); ``tracks``:
    ``"linked"`` (the model's own tracklets) or ``"gt"`` (the annotated objects)."""
    if tracks not in ("linked", "gt"):
        raise ValueError(f"tracks must be 'linked' or 'gt', got {tracks!r}")
    model.eval()
    frame_ids = sample_indices(record.num_frames, model.config.vlm_frames)
    frames = record.load_frames(frame_ids)
    texts = [e.text for e in record.expressions]
    vlm = model.vlm
    batch, hidden, pairs = teacher_force(model, frames, texts, answer)
    prompts = [
        model.prompt_embeddings(hidden[row, :-1], p, probe_question(model, texts[row])) for row, p in enumerate(pairs)
    ]
    box = torch.stack([emb.box[0] for emb in prompts])
    words = word_mask = None
    if prompts[0].words is not None:
        words, word_mask = model.vlm.question_embeddings([probe_question(model, t) for t in texts])
    question = []
    for row, p in enumerate(pairs):
        last_video = int(torch.nonzero(batch.input_ids[row] == vlm.video_token_id).max())
        question.append(hidden[row, last_video + 1 : p.box_positions[0]].float().mean(0))

    features = model.pixel_decoder.encode(model.preprocessor(frames).to(model.device))
    top = model.mask_boxes(features, model.candidates(features))
    h, w = record.size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    if tracks == "gt":
        linked, appearance = _object_tracklets(model, record, frame_ids, features, scale)
    else:
        linked = link_proposals(top.boxes, top.logits, top.valid, appearance=top.appearance)
        appearance = tracklet_appearance(linked, top.appearance)
    trajectory = trajectory_features(linked)
    logits = model.track_selector(box, appearance, trajectory, words, word_mask)

    hits, visible, oracle = [], [], []
    for expression in record.expressions:
        target = torch.tensor(
            [[np.nan] * 4 if b is None else b for b in record.target_boxes(expression, frame_ids)],
            dtype=torch.float32,
        )
        target = target / scale
        seen = ~torch.isnan(target).any(-1)
        hits.append(tracklet_hits(linked, target).cpu())
        visible.append(seen)
        frame_hit = torch.zeros(len(frame_ids), dtype=torch.bool)
        for t in torch.nonzero(seen).flatten().tolist():
            cands = top.boxes[t][top.valid[t]].float().cpu()
            frame_hit[t] = bool(len(cands)) and bool((box_iou(cands, target[t][None])[:, 0] > 0.5).any())
        oracle.append(frame_hit)
    return TrackletClip(
        record=record,
        texts=texts,
        kinds=[e.kind or "" for e in record.expressions],
        box=box.cpu(),
        question=torch.stack(question).cpu(),
        logits=logits.cpu(),
        appearance=appearance.cpu(),
        trajectory=trajectory.cpu(),
        hits=torch.stack(hits),
        visible=torch.stack(visible),
        frame_oracle=torch.stack(oracle),
    )


def _object_tracklets(
    model: SparrowModel, record: VideoRecord, frame_ids: list[int], features: ImageFeatures, scale: Tensor
) -> tuple[Tracklets, Tensor]:
    """The annotated objects as tracklets on ``frame_ids`` (boxes normalised by ``scale``, objectness 0) and their
    appearance ``[O, A]``, pooled in their boxes from the frames' SAM2 features as the proposals' keys are."""
    ids = sorted(record.objects)
    boxes = (
        torch.tensor([[record.objects[o].boxes[t] or [0.0] * 4 for t in frame_ids] for o in ids], dtype=torch.float32)
        / scale
    )  # [O, T, 4]
    present = torch.tensor([[record.objects[o].boxes[t] is not None for t in frame_ids] for o in ids])
    maps = [features.embedding, *features.high_res]
    keys = (
        proposal_appearance(
            maps,
            boxes.permute(1, 0, 2).contiguous().to(features.embedding.device),
            grid=model.config.selector_appearance_grid,
        )
        .permute(1, 0, 2)
        .cpu()
    )  # [O, T, A]
    weight = present.float()[..., None]
    appearance = (keys * weight).sum(1) / weight.sum(1).clamp(min=1)
    index = torch.where(present, 0, -1)
    return Tracklets(index, boxes * present[..., None], torch.zeros(present.shape), present), appearance


def train_tracklet_probe(
    clips: Sequence[TrackletClip], queries: Callable[[TrackletClip], Tensor], epochs: int = 30, lr: float = 1e-3
) -> TrackSelector | None:
    """A fresh :class:`TrackSelector` (hidden 256, seed 0) trained on ``clips`` with ``queries(clip) -> [E, Dq]``:
    one expression at a time, :func:`track_selection_loss` against its best tracklets, the target's other fragments
    left out (``tracklet_labels``); None when no expression has a tracklet on its target (nothing to learn from)."""
    rows = [
        (queries(c)[e], c.appearance, c.trajectory, *tracklet_labels(c.hits[e]))
        for c in clips
        for e in range(len(c.texts))
        if len(c.appearance) and bool(c.hits[e].any())
    ]
    if not rows:
        return None
    torch.manual_seed(0)
    probe = TrackSelector(rows[0][0].shape[0], rows[0][1].shape[1], rows[0][2].shape[1])
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for i in torch.randperm(len(rows), generator=gen).tolist():
            q, a, g, positive, ignore = rows[i]
            loss = track_selection_loss(probe(q[None], a, g), positive[None], ignore[None])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe.eval()


def _frame_hits(clips: Sequence[TrackletClip], choose: Callable[[TrackletClip, int], int | None]) -> dict[str, float]:
    """Share of target-visible frames whose chosen tracklet hits, overall and per kind, the 95 % interval of the
    overall share over videos (``all_low``, ``all_high``; ``eval.intervals.bootstrap_ratio``), plus ``frames``."""
    hit = {k: 0 for k in ("all", *KINDS)}
    seen = {k: 0 for k in ("all", *KINDS)}
    per_video: list[tuple[int, int]] = []
    for c in clips:
        video = [0, 0]
        for e, kind in enumerate(c.kinds):
            n = int(c.visible[e].sum())
            k = choose(c, e) if len(c.appearance) else None
            h = 0 if k is None else int(c.hits[e, k].sum())
            video[0] += h
            video[1] += n
            for key in ("all", kind):
                if key in hit:
                    hit[key] += h
                    seen[key] += n
        per_video.append((video[0], video[1]))
    out = {k: hit[k] / seen[k] for k in hit if seen[k]}
    if seen["all"]:
        _, out["all_low"], out["all_high"] = bootstrap_ratio([h for h, _ in per_video], [n for _, n in per_video])
    out["frames"] = float(seen["all"])
    return out


def tracklet_report(
    train: Sequence[TrackletClip], held: Sequence[TrackletClip], epochs: int = 30
) -> dict[str, dict[str, float]]:
    """The rows of the module docstring on ``held``; the probes train on ``train`` (a probe row is left out when no
    training expression has a tracklet on its target)."""
    vocab = vocabulary([t for c in train for t in c.texts])
    bow = lambda c: torch.from_numpy(bag_of_words(c.texts, vocab)).float()
    frozen = lambda c: c.box.float()
    question = lambda c: c.question.float()
    report = {"model": _frame_hits(held, lambda c, e: int(c.logits[e].argmax()))}
    rows = (("probe on bag of words", bow), ("probe on frozen [BOX]", frozen), ("probe on question states", question))
    for name, queries in rows:
        probe = train_tracklet_probe(train, queries, epochs=epochs)
        if probe is None:
            continue
        with torch.no_grad():
            report[name] = _frame_hits(
                held, lambda c, e, p=probe, q=queries: int(p(q(c)[e][None], c.appearance, c.trajectory)[0].argmax())
            )
    report["best tracklet"] = _frame_hits(held, lambda c, e: int(c.hits[e].sum(1).argmax()))
    oracle = {k: 0.0 for k in ("all", *KINDS)}
    count = {k: 0 for k in ("all", *KINDS)}
    for c in held:
        for e, kind in enumerate(c.kinds):
            for key in ("all", kind):
                if key in oracle:
                    oracle[key] += float(c.frame_oracle[e].sum())
                    count[key] += int(c.visible[e].sum())
    report["frame oracle"] = {k: oracle[k] / count[k] for k in oracle if count[k]}
    return report
