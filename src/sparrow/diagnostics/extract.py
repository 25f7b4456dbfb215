"""What a SPARROW model makes of one SynthRef clip, cached for the grounding probes (``benchmarks/probe_grounding.py``).

For a record, on the ``vlm_frames`` evenly spaced frames the model's VLM sees (``sample_indices``, as inference does;
the same frames are the SAM frames here):

- per expression: the projected ``[BOX]``/``[SEG]`` embeddings ``[E, C]`` and the VLM states they are read from
  ``[E, d]``, by teacher forcing the question ``config.question_template`` and the answer ``Sure, [BOX] [SEG].``
  (or another answer, e.g. ``Sure, [SEG].`` for a model trained without ``[BOX]``);
- the VLM's visual tokens: the vision tower's output (the tokens the language model reads) and the language model's
  last-layer states at the video positions (causal attention: they do not depend on the question), both
  ``[gt, gh, gw, d]`` (``gt`` temporal groups of ``temporal_patch_size`` frames, ``gh x gw`` merged patches); with
  the SAM2 vision tower (``vlm_vision: sam2``) also the SAM2 cell features it projects ``[gt, gh, gw, D]``;
- per object: its visible mask on those frames ``[T, H, W]``, its visible boxes (NaN where absent), and SAM2's
  features ROI-pooled in its box (``proposal_appearance``, the selector's appearance keys) ``[T, A]``;
- the top-k proposals of every frame with their appearance (``SparrowModel.candidates``), detached;
- per expression and frame, the IoU with the target mask of the mask SAM2 decodes from the ``[SEG]`` embedding
  alone (no box), and, for a model with identity prompts, of the mask decoded from the target's identity prompt
  (the prompt the segmenter learned for the target's colour and shape: what an ideal ``[SEG]`` could reach); NaN
  where the target is not visible (or, for identity, where the targets have no single identity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sparrow.data.schema import VideoRecord
from sparrow.data.synthref.identity import object_identity
from sparrow.data.templates import clean_phrase
from sparrow.data.video_io import sample_indices
from sparrow.model.pixel_decoder import ImageFeatures, PixelDecoder
from sparrow.model.prompt_tokens import PromptPairs, teacher_forced_pairs
from sparrow.model.proposal_appearance import proposal_appearance
from sparrow.model.proposer import Proposals
from sparrow.model.sam2_vision import Sam2VisionTower, vision_tower
from sparrow.model.sparrow_model import SparrowModel
from sparrow.model.vlm_qwen2_5 import VLMBatch, VLMSample

__all__ = ["PROBE_ANSWER", "ClipFeatures", "extract_clip", "pool_tokens", "probe_question", "teacher_force"]

PROBE_ANSWER = "Sure, [BOX] [SEG]."


@dataclass
class ClipFeatures:
    """Cached model outputs of one clip (shapes in the module docstring); ``obj_ids`` orders the per-object arrays."""

    record: VideoRecord
    frame_ids: list[int]
    texts: list[str]
    box: Tensor  # [E, C]
    seg: Tensor  # [E, C]
    box_state: Tensor  # [E, d]
    seg_state: Tensor  # [E, d]
    vision_tokens: Tensor  # [gt, gh, gw, d]
    lm_tokens: Tensor  # [gt, gh, gw, d]
    vision_input: Tensor | None  # [gt, gh, gw, D] SAM2 cell features before the projector (vlm_vision: sam2), or None
    obj_ids: list[int]
    object_masks: np.ndarray  # [O, T, H, W] bool
    object_boxes: np.ndarray  # [O, T, 4] normalised xyxy, NaN where absent
    sam_objects: Tensor  # [O, T, A]
    proposals: Proposals  # [T, K, ...] with appearance
    seg_iou: np.ndarray  # [E, T]
    identity_iou: np.ndarray  # [E, T]


def pool_tokens(tokens: Tensor, masks: np.ndarray, temporal: int) -> tuple[Tensor, Tensor]:
    """Average the tokens ``[gt, gh, gw, d]`` over an object's masks ``[T, H, W]``, one vector per temporal group.

    Each token is weighted by the share of the object's pixels in its cell over the group's ``temporal`` frames
    (frames beyond ``T`` repeat the last, as the patching pads). Returns ``([gt, d], present [gt] bool)``.
    """
    gt, gh, gw, _ = tokens.shape
    m = torch.from_numpy(np.asarray(masks, dtype=np.float32))
    if m.shape[0] < gt * temporal:
        m = torch.cat([m, m[-1:].expand(gt * temporal - m.shape[0], -1, -1)])
    cells = F.adaptive_avg_pool2d(m[: gt * temporal][:, None], (gh, gw))[:, 0]  # [gt*temporal, gh, gw]
    weights = cells.reshape(gt, temporal, gh, gw).sum(1)  # [gt, gh, gw]
    total = weights.flatten(1).sum(-1)
    present = total > 0
    pooled = (weights[..., None] * tokens.float()).flatten(1, 2).sum(1) / total.clamp(min=1e-12)[:, None]
    return pooled * present[:, None], present


@torch.no_grad()
def extract_clip(model: SparrowModel, record: VideoRecord, answer: str = PROBE_ANSWER) -> ClipFeatures:
    """Run the model's VLM, SAM2 encoder and proposer once on a clip (see the module docstring); ``answer`` is the
    teacher-forced answer (``"Sure, [SEG]."`` for a model trained with ``[SEG]`` only: its ``[BOX]`` rows are 0)."""
    model.eval()
    frame_ids = sample_indices(record.num_frames, model.config.vlm_frames)
    frames = record.load_frames(frame_ids)
    texts = [e.text for e in record.expressions]
    vlm = model.vlm
    batch, hidden, pairs = teacher_force(model, frames, texts, answer)
    box, seg, box_state, seg_state = [], [], [], []
    for row, p in enumerate(pairs):
        emb = model.prompt_embeddings(hidden[row, :-1], p, probe_question(model, texts[row]))
        box.append(emb.box[0])
        seg.append(emb.seg[0])
        box_state.append(
            hidden[row, p.box_positions[0]]
            if p.box_positions[0] is not None
            else emb.box[0].new_zeros(hidden.shape[-1])
        )
        seg_state.append(hidden[row, p.seg_positions[0]])

    pix, grid = vlm.video_inputs(frames)
    gt, gh, gw = (int(v) for v in grid[0])
    gh, gw = gh // vlm.merge, gw // vlm.merge
    out = vlm.model.get_video_features(pix.to(model.device), grid.to(model.device))
    vision = out.pooler_output[0]
    sam2_tower = isinstance(vision_tower(vlm), Sam2VisionTower)
    video_rows = batch.input_ids[0] == vlm.video_token_id
    lm = hidden[0][video_rows]

    obj_ids = sorted(record.objects)
    h, w = record.size
    masks = np.stack([np.stack([record.objects[o].mask(t, record.size) for t in frame_ids]) for o in obj_ids])
    scale = np.array([w, h, w, h], dtype=np.float32)
    boxes = (
        np.array([[record.objects[o].boxes[t] or [np.nan] * 4 for t in frame_ids] for o in obj_ids], dtype=np.float32)
        / scale
    )
    features = model.pixel_decoder.encode(model.preprocessor(frames).to(model.device))
    maps = [features.embedding, *features.high_res]
    roi = torch.from_numpy(np.nan_to_num(boxes, nan=0.0)).permute(1, 0, 2).contiguous().to(model.device)  # [T, O, 4]
    sam_objects = proposal_appearance(maps, roi, grid=model.config.selector_appearance_grid).permute(
        1, 0, 2
    )  # [O, T, A]
    seg_iou, identity_iou = _decode_ious(model, record, frame_ids, features, torch.stack(seg))
    return ClipFeatures(
        record=record,
        frame_ids=frame_ids,
        texts=texts,
        box=torch.stack(box).cpu(),
        seg=torch.stack(seg).cpu(),
        box_state=torch.stack(box_state).cpu(),
        seg_state=torch.stack(seg_state).cpu(),
        vision_tokens=vision.reshape(gt, gh, gw, -1).cpu(),
        lm_tokens=lm.reshape(gt, gh, gw, -1).cpu(),
        vision_input=out.last_hidden_state.reshape(gt, gh, gw, -1).cpu() if sam2_tower else None,
        obj_ids=obj_ids,
        object_masks=masks,
        object_boxes=boxes,
        sam_objects=sam_objects.cpu(),
        proposals=model.candidates(features).detach(),
        seg_iou=seg_iou,
        identity_iou=identity_iou,
    )


def probe_question(model: SparrowModel, text: str) -> str:
    """The question the probes ask the model about expression ``text`` (its inference template)."""
    return model.config.question_template.format(query=clean_phrase(text))


def teacher_force(
    model: SparrowModel, frames: np.ndarray, texts: list[str], answer: str = PROBE_ANSWER
) -> tuple[VLMBatch, Tensor, list[PromptPairs]]:
    """The model's question about each of ``texts`` on ``frames`` ``[T, H, W, 3]``, answered by teacher forcing
    ``answer``: the collated batch, the VLM's last-layer states ``[E, L, d]`` and where ``[BOX]``/``[SEG]`` are read."""
    vlm = model.vlm
    samples = [VLMSample(frames, probe_question(model, t), answer) for t in texts]
    batch = vlm.collate(samples).to(model.device)
    _, hidden = vlm(batch)
    return (
        batch,
        hidden,
        teacher_forced_pairs(batch.input_ids, batch.attention_mask, vlm.box_token_id, vlm.seg_token_id),
    )


def _decode_ious(
    model: SparrowModel, record: VideoRecord, frame_ids: list[int], features: ImageFeatures, seg: Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """IoU ``[E, T]`` of the ``[SEG]``-only masks and of the target-identity-prompt masks (see the module docstring)."""
    t = len(frame_ids)
    frames = torch.arange(t, device=seg.device)
    seg_iou = np.full((len(record.expressions), t), np.nan)
    identity_iou = np.full_like(seg_iou, np.nan)
    for e, expression in enumerate(record.expressions):
        target = torch.from_numpy(record.target_masks(expression, frame_ids))
        visible = target.flatten(1).any(-1)
        masks = (
            PixelDecoder.upsample(model.decode(features, frames, seg[e].expand(t, -1), None).mask_logits, record.size)
            > 0
        )
        seg_iou[e] = torch.where(visible, _iou(masks.cpu(), target), torch.nan).numpy()
        idents = {object_identity(record.objects[o]) for o in expression.obj_ids}
        if model.identity_prompts is not None and len(idents) == 1 and None not in idents:
            prompt = model.identity_prompts.weight[next(iter(idents))]
            masks = (
                PixelDecoder.upsample(
                    model.decode(features, frames, prompt.expand(t, -1), None).mask_logits, record.size
                )
                > 0
            )
            identity_iou[e] = torch.where(visible, _iou(masks.cpu(), target), torch.nan).numpy()
    return seg_iou, identity_iou


def _iou(pred: Tensor, target: Tensor) -> Tensor:
    """Per-frame IoU of bool masks ``[T, H, W]`` -> ``[T]`` (0 where both are empty)."""
    inter = (pred & target).flatten(1).sum(-1).float()
    union = (pred | target).flatten(1).sum(-1).float()
    return inter / union.clamp(min=1)
