"""The loss each stage optimises, computed from one :class:`~sparrow.model.sparrow_model.SparrowBatch`.

- ``segmenter``: SAM2 as a promptable segmenter. Every visible target on every SAM frame is decoded from its
  ground-truth box (two corner points, labels 2/3) and, with ``point_prompts``, separately from one positive point
  drawn inside its mask (label 1, from the torch RNG, which the loop seeds per step). Mask BCE + Dice with the model's
  loss weights.
  With ``identity_prompts`` (SynthRef samples with identity targets, a model with ``config.identity_prompts`` rows),
  every identity of each sample's video is also decoded on every SAM frame from its learned prompt alone (in place
  of ``[SEG]``, no box) against the union mask of that identity's objects (empty where none is visible); and each
  visible identity's
  SAM2 embedding, averaged over its mask, is classified against all prompts as prototypes
  (``CE(pooled . E^T / sqrt(C))``, ``identity_cls``, weight 1). SAM2's features and decoder so learn to tell colours
  and shapes apart, which box and point prompts never ask of them. The prototype term is what makes it learn: with
  the decode alone a tiny SAM2 stayed prompt-independent (both prompts gave the same mask after 320 steps on two
  objects), with it the right object had IoU 0.78-0.87 and the wrong one 0.01-0.03 after 80 steps.
- ``proposer``: the Hungarian proposer loss on class-agnostic boxes (``batch.object_boxes``, or the target boxes).
- ``vlm`` / ``selection``: the model's own training loss (CE + mask BCE/Dice + selection + box).

Each function returns a dict of scalar losses with the total under ``"loss"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sparrow.errors import SparrowError
from sparrow.model.losses import mask_bce_loss, mask_dice_loss
from sparrow.model.pixel_decoder import ImageFeatures, PixelDecoder
from sparrow.model.proposer import proposer_loss
from sparrow.model.sparrow_model import SparrowBatch, SparrowModel


def _visible(batch: SparrowBatch) -> tuple[Tensor, Tensor, Tensor]:
    """The ``M`` visible (sample, slot, SAM frame) targets: their frame index ``[M]`` into the flattened ``[B*Ts]``
    features, normalised boxes ``[M, 4]`` and masks ``[M, H, W]``."""
    ts = batch.masks.shape[2]
    present = ~torch.isnan(batch.boxes).any(-1) & (batch.masks.flatten(3).amax(-1) > 0)  # [B, N, Ts]
    rows, slots, times = present.nonzero(as_tuple=True)
    return rows * ts + times, batch.boxes[rows, slots, times], batch.masks[rows, slots, times]


def random_points(masks: Tensor, size: int) -> Tensor:
    """One uniformly random foreground pixel per mask ``[M, H, W]`` -> ``[M, 2]`` xy in the ``size x size`` input."""
    h, w = masks.shape[-2:]
    flat = masks.flatten(1)
    weights = flat / flat.sum(-1, keepdim=True)
    idx = torch.multinomial(weights.float().cpu(), 1).squeeze(1).to(masks.device)
    ys, xs = (idx // w).float() + 0.5, (idx % w).float() + 0.5
    return torch.stack([xs / w * size, ys / h * size], dim=-1)


def point_embeddings(decoder: PixelDecoder, points: Tensor) -> Tensor:
    """SAM2 prompt-encoder tokens of positive points ``[M, 2]`` (pixels of the S x S input) -> ``[M, C]``."""
    labels = torch.ones(points.shape[0], 1, 1, dtype=torch.int32, device=points.device)
    sparse, _ = decoder.sam.prompt_encoder(
        input_points=points[:, None, None, :], input_labels=labels, input_boxes=None, input_masks=None
    )
    return sparse[:, 0, 0]


def _mask_losses(model: SparrowModel, logits: Tensor, targets: Tensor, prefix: str = "") -> dict[str, Tensor]:
    return {
        f"{prefix}mask_bce": mask_bce_loss(logits, targets),
        f"{prefix}mask_dice": mask_dice_loss(logits, targets),
    }


def identity_losses(model: SparrowModel, batch: SparrowBatch, features: ImageFeatures) -> dict[str, Tensor]:
    """Mask BCE/Dice of identity-prompted decodes and the prototype classification (see the module docstring):
    ``identity_mask_bce``, ``identity_mask_dice``, ``identity_cls``. ``features`` are those of ``batch.sam_pixels``
    flattened ``[B*Ts, ...]``."""
    table = model.identity_prompts
    if table is None:
        raise SparrowError("stage.identity_prompts needs a model with identity prompts (model.config.identity_prompts: 36)")
    if batch.identity_ids is None or batch.identity_masks is None:
        raise SparrowError("stage.identity_prompts needs samples with identity targets (SynthRef sources)")
    ids, masks = batch.identity_ids, batch.identity_masks  # [B, M], [B, M, Ts, H, W]
    if int(ids.max()) >= table.num_embeddings:
        raise SparrowError(f"identity {int(ids.max())} out of range for {table.num_embeddings} identity prompts")
    ts, h, w = masks.shape[2:]
    rows, slots = (ids >= 0).nonzero(as_tuple=True)
    frames = (rows[:, None] * ts + torch.arange(ts, device=rows.device)).flatten()
    labels = ids[rows, slots].repeat_interleave(ts)
    targets = masks[rows, slots].flatten(0, 1)  # [K*Ts, H, W]
    out = model.decode(features, frames, table(labels), None)
    losses = _mask_losses(model, PixelDecoder.upsample(out.mask_logits, (h, w)), targets, "identity_")
    # prototypes: the mask-averaged stride-16 embedding of each visible identity, classified against every prompt
    embedding = features.embedding[frames]  # [K*Ts, C, h16, w16]
    share = F.adaptive_avg_pool2d(targets[:, None].to(embedding.dtype), embedding.shape[-2:])  # [K*Ts, 1, h16, w16]
    area = share.flatten(1).sum(-1)
    seen = area > 0
    if bool(seen.any()):
        pooled = (embedding[seen] * share[seen]).flatten(2).sum(-1) / area[seen, None]
        logits = pooled @ table.weight.t() / math.sqrt(pooled.shape[-1])
        losses["identity_cls"] = F.cross_entropy(logits, labels[seen])
    else:
        losses["identity_cls"] = table.weight.sum() * 0.0
    return losses


def segmenter_loss(
    model: SparrowModel, batch: SparrowBatch, point_prompts: bool = True, identity_prompts: bool = False
) -> dict[str, Tensor]:
    """Box-prompted (and point-prompted, and identity-prompted) mask losses of SAM2's image path."""
    decoder = model.pixel_decoder
    features = decoder.encode(batch.sam_pixels.flatten(0, 1))
    frames, boxes, masks = _visible(batch)
    size = tuple(batch.masks.shape[-2:])
    weights = model.config.loss
    identity = identity_losses(model, batch, features) if identity_prompts else {}
    extra = 0.0
    if identity:
        extra = (
            weights.mask_bce * identity["identity_mask_bce"] + weights.mask_dice * identity["identity_mask_dice"]
            + identity["identity_cls"]
        )
    if len(frames) == 0:  # nothing visible: a zero loss that still touches the graph
        zero = features.embedding.sum() * 0.0
        return {"mask_bce": zero, "mask_dice": zero, **identity, "loss": zero + extra}
    out = model.decode(features, frames, None, boxes)
    losses = _mask_losses(model, PixelDecoder.upsample(out.mask_logits, size), masks)
    total = weights.mask_bce * losses["mask_bce"] + weights.mask_dice * losses["mask_dice"]
    if point_prompts:
        points = random_points(masks, decoder.image_size)
        out = model.decode(features, frames, point_embeddings(decoder, points), None)
        point = _mask_losses(model, PixelDecoder.upsample(out.mask_logits, size), masks, prefix="point_")
        losses.update(point)
        total = total + weights.mask_bce * point["point_mask_bce"] + weights.mask_dice * point["point_mask_dice"]
    losses.update(identity)
    losses["loss"] = total + extra
    return losses


def proposer_stage_loss(model: SparrowModel, batch: SparrowBatch) -> dict[str, Tensor]:
    """Class-agnostic proposer loss on the frozen SAM2 features of every SAM frame."""
    with torch.no_grad():
        features = model.pixel_decoder.encode(batch.sam_pixels.flatten(0, 1))
    proposals = model.propose(features)
    targets = batch.object_boxes or [
        bx[~torch.isnan(bx).any(-1)] for bx in batch.boxes.permute(0, 2, 1, 3).flatten(0, 1)
    ]
    parts = proposer_loss(proposals, targets)
    return {"proposer": parts["total"], "loss": model.config.loss.proposer * parts["total"]}


def stage_loss(
    stage: str, model: SparrowModel, batch: SparrowBatch, point_prompts: bool = True, identity_prompts: bool = False
) -> dict[str, Tensor]:
    """The losses of ``stage`` for ``batch`` (``model`` is the unwrapped model; call inside the DDP forward)."""
    if stage == "segmenter":
        return segmenter_loss(model, batch, point_prompts, identity_prompts)
    if stage == "proposer":
        return proposer_stage_loss(model, batch)
    return model(batch)
