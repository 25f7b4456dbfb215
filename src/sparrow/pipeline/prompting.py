"""The dual prompt of one answer: generate it, project it, and choose the key frame and box of each target.

Tensors only (the frames come in as arrays from ``pipeline/segment.py``): the VLM generates the answer greedily
with its KV cache, the ``[BOX]``/``[SEG]`` states are projected by the model's heads, and for each target the
``[BOX]`` embedding scores the proposals of every candidate frame; the frame whose best proposal scores highest is
the key frame (``key_frame="auto"``), and SAM2 decodes its mask from that box plus ``[SEG]``. A model that selects
tracklets (``selection_level "track"``) links the proposals of the VLM's frames and the ``[BOX]`` embedding picks
one tracklet (with ``track_set_threshold`` > 0, also every other tracklet above it: an expression may name several
objects); its most confident box is the key box and the tracklet (:class:`TrackGuide`) goes with the choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sparrow.model.pixel_decoder import ImageFeatures
from sparrow.model.prompt_tokens import pair_prompt_tokens, teacher_forced_pairs
from sparrow.model.selector import select_boxes
from sparrow.model.sparrow_model import PromptEmbeddings, SparrowModel
from sparrow.model.track_selector import select_members
from sparrow.model.tracklets import TrackGuide
from sparrow.model.vlm_qwen2_5 import VLMSample


@dataclass
class Answer:
    """The VLM's answer and its projected prompts (``box``/``seg`` ``[N, C]`` for N targets)."""

    text: str
    prompts: PromptEmbeddings | None  # None only when generate_answer(force=False) found no [SEG]
    forced: bool  # no [SEG] was generated: "[BOX] [SEG]" was appended and read by teacher forcing
    orphan_boxes: int


@dataclass
class KeyChoice:
    """Where one target is prompted: frame index, selected box ``[4]`` (normalised xyxy), its score, mask logits."""

    frame: int
    box: torch.Tensor | None
    score: float | None
    mask_logits: torch.Tensor  # [S/4, S/4]
    track: TrackGuide | None = None  # the chosen tracklet (models that select tracklets)
    others: list[TrackGuide] = field(default_factory=list)  # more tracklets of the answer (track_set_threshold)


@dataclass
class Plan:
    """Everything the mask stage needs, decided once per call: the answer and each target's key choice."""

    answer: Answer
    choices: list[KeyChoice]

    def to_dict(self) -> dict[str, Any]:
        """Tensors, strings and numbers only (``torch.save``; reload with ``weights_only=True``), on the CPU."""
        p = self.answer.prompts
        return {
            "text": self.answer.text,
            "forced": self.answer.forced,
            "orphan_boxes": self.answer.orphan_boxes,
            "box": p.box.cpu(),
            "seg": p.seg.cpu(),
            "has_box": p.has_box.cpu(),
            "choices": [
                {
                    "frame": c.frame,
                    "box": None if c.box is None else c.box.cpu(),
                    "score": c.score,
                    "mask_logits": c.mask_logits.cpu(),
                    "track": None if c.track is None else _guide_dict(c.track),
                    "others": [_guide_dict(g) for g in c.others],
                }
                for c in self.choices
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], device: torch.device | str = "cpu") -> Plan:
        prompts = PromptEmbeddings(data["box"].to(device), data["seg"].to(device), data["has_box"].to(device))
        choices = [
            KeyChoice(
                int(c["frame"]),
                None if c["box"] is None else c["box"].to(device),
                c["score"],
                c["mask_logits"].to(device),
                None if c.get("track") is None else _guide(c["track"], device),
                [_guide(g, device) for g in c.get("others", [])],
            )
            for c in data["choices"]
        ]
        return cls(Answer(data["text"], prompts, bool(data["forced"]), int(data["orphan_boxes"])), choices)


def _guide_dict(guide: TrackGuide) -> dict[str, Any]:
    return {"frame_ids": list(guide.frame_ids), "boxes": guide.boxes.cpu(), "present": guide.present.cpu()}


def _guide(data: dict[str, Any], device: torch.device | str) -> TrackGuide:
    return TrackGuide([int(f) for f in data["frame_ids"]], data["boxes"].to(device), data["present"].to(device))


def encode_frames(model: SparrowModel, frames: np.ndarray) -> ImageFeatures:
    """SAM2 features of frames uint8 ``[N, H, W, 3]`` (resized and normalised to SAM2's input)."""
    pixels = model.preprocessor(frames).to(model.device)
    return model.pixel_decoder.encode(pixels)


def generate_answer(model: SparrowModel, sample: VLMSample, max_new_tokens: int, force: bool = True) -> Answer:
    """Generate the answer to ``sample`` and project its ``[BOX]``/``[SEG]`` states.

    With no ``[SEG]`` in the answer and ``force``, ``[BOX] [SEG]`` is appended and read by teacher forcing (rather
    than returning empty masks scored 0); :attr:`Answer.forced` records it. Without ``force`` such an answer comes
    back with ``prompts=None`` (a conversation turn that refers to nothing).
    """
    vlm = model.vlm
    batch = vlm.collate([sample], padding_side="left").to(model.device)
    gen = vlm.generate(batch, max_new_tokens=max_new_tokens)[0]
    pairs = pair_prompt_tokens(gen.tokens, vlm.box_token_id, vlm.seg_token_id)
    if len(pairs):
        prompts = model.prompt_embeddings(gen.states, pairs, sample.question)
        return Answer(gen.text.strip(), prompts, False, pairs.orphan_boxes)
    if not force:
        return Answer(gen.text.strip(), None, False, pairs.orphan_boxes)
    text = (gen.text.strip() + " [BOX] [SEG].").strip()
    forced = VLMSample(sample.frames, sample.question, text, sample.seconds_per_frame, sample.tsf_crops, sample.history)
    batch = vlm.collate([forced]).to(model.device)
    hidden = vlm.teacher_force(batch)
    pairs = teacher_forced_pairs(batch.input_ids, batch.attention_mask, vlm.box_token_id, vlm.seg_token_id)[0]
    return Answer(text, model.prompt_embeddings(hidden[0, :-1], pairs, sample.question), True, pairs.orphan_boxes)


def choose_key(
    model: SparrowModel, prompts: PromptEmbeddings, target: int, features: ImageFeatures, frame_ids: list[int]
) -> KeyChoice:
    """For ``target``: the frame among ``frame_ids`` (the rows of ``features``) whose prompt fits best.

    With a ``[BOX]``: the frame whose selected proposal has the highest sigmoid score, decoded from that box and
    ``[SEG]``; for a model that selects tracklets, when ``frame_ids`` are the VLM's frames, :func:`choose_tracklet`.
    Without: every candidate is decoded from ``[SEG]`` alone and SAM2's object score picks the frame.
    """
    cfg = model.config.selection
    seg = prompts.seg[target : target + 1]
    selector = model.track_selector
    if bool(prompts.has_box[target]) and selector is not None and len(frame_ids) == selector.frames:
        choice = choose_tracklet(model, prompts, target, features, frame_ids)
        if choice is not None:
            return choice
    if bool(prompts.has_box[target]):
        top = model.candidates(features)
        best: tuple[float, int, torch.Tensor] | None = None
        for i in range(len(frame_ids)):
            out = model.select(prompts.box[target : target + 1], top, i)
            idx, boxes = select_boxes(out, cfg.threshold, cfg.max_boxes)
            score = float(torch.sigmoid(out.logits[0, idx[0][0]]))
            if best is None or score > best[0]:
                best = (score, i, boxes[0][0])
        score, i, box = best
        logits = model.decode(features, torch.tensor([i], device=seg.device), seg, box[None]).mask_logits[0]
        return KeyChoice(frame_ids[i], box, score, logits)
    n = len(frame_ids)
    out = model.decode(features, torch.arange(n, device=seg.device), seg.expand(n, -1), None)
    i = int(out.object_score_logits.argmax())
    return KeyChoice(frame_ids[i], None, None, out.mask_logits[i])


def choose_tracklet(
    model: SparrowModel, prompts: PromptEmbeddings, target: int, features: ImageFeatures, frame_ids: list[int]
) -> KeyChoice | None:
    """For ``target``: the tracklet its ``[BOX]`` embedding scores highest among those linked on ``frame_ids`` (the
    VLM's frames, the rows of ``features``); the key frame is the one where the tracklet's proposal is most confident
    (objectness), decoded from its box and ``[SEG]``; the score is the tracklet's softmax probability. With
    ``track_set_threshold`` > 0 the other tracklets above it go with the choice too (``others``,
    ``track_selector.select_members``). None when no tracklet was linked (no valid proposal on any frame)."""
    seg = prompts.seg[target : target + 1]
    words = None if prompts.words is None else prompts.words[target : target + 1]
    word_mask = None if prompts.word_mask is None else prompts.word_mask[target : target + 1]
    tracks, logits = model.clip_tracklets(prompts.box[target : target + 1], features, words, word_mask)
    if len(tracks) == 0:
        return None
    members = select_members(logits[0], model.config.track_set_threshold)
    best = members[0]
    present = tracks.present[best]
    i = int(torch.where(present, tracks.logits[best], float("-inf")).argmax())
    box = tracks.boxes[best, i]
    mask_logits = model.decode(features, torch.tensor([i], device=seg.device), seg, box[None]).mask_logits[0]
    score = float(torch.softmax(logits[0].float(), -1)[best])
    guides = [TrackGuide(list(frame_ids), tracks.boxes[m], tracks.present[m]) for m in members]
    return KeyChoice(frame_ids[i], box, score, mask_logits, guides[0], guides[1:])


def frame_features(features: ImageFeatures, i: int) -> ImageFeatures:
    """Row ``i`` of a feature batch, keeping a batch dimension of 1."""
    return ImageFeatures(features.embedding[i : i + 1], [h[i : i + 1] for h in features.high_res])
