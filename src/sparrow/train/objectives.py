"""The loss each stage optimises, computed from one :class:`~sparrow.model.sparrow_model.SparrowBatch`.

- ``segmenter``: SAM2 as a promptable segmenter. Every visible target on every SAM frame is decoded from its
  ground-truth box (two corner points, labels 2/3) and, with ``point_prompts``, separately from one positive point
  drawn inside its mask (label 1). The points of sample ``b`` come from a generator seeded by ``sample_seeds[b]``
  (the loop passes one seed per global sample, so the draws do not depend on how samples are split over processes;
  without seeds, from torch's global RNG). Mask BCE + Dice with the model's loss weights.
- ``proposer``: the Hungarian proposer loss on class-agnostic boxes (``batch.object_boxes``, or the target boxes).
- ``vlm`` / ``selection``: the model's own training loss (CE + mask BCE/Dice + selection + box).

Each function returns a dict of scalar losses with the total under ``"loss"``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sparrow.model.losses import mask_bce_loss, mask_dice_loss
from sparrow.model.pixel_decoder import PixelDecoder
from sparrow.model.proposer import proposer_loss
from sparrow.model.sparrow_model import SparrowBatch, SparrowModel


def _visible(batch: SparrowBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The ``M`` visible (sample, slot, SAM frame) targets, ordered by sample: their frame index ``[M]`` into the
    flattened ``[B*Ts]`` features, normalised boxes ``[M, 4]``, masks ``[M, H, W]`` and sample index ``[M]``."""
    ts = batch.masks.shape[2]
    present = ~torch.isnan(batch.boxes).any(-1) & (batch.masks.flatten(3).amax(-1) > 0)  # [B, N, Ts]
    rows, slots, times = present.nonzero(as_tuple=True)
    return rows * ts + times, batch.boxes[rows, slots, times], batch.masks[rows, slots, times], rows


def random_points(masks: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """One uniformly random foreground pixel per mask ``[M, H, W]`` -> ``[M, 2]`` xy in the ``size x size`` input
    (drawn from ``generator``, a CPU generator, or torch's global RNG)."""
    h, w = masks.shape[-2:]
    flat = masks.flatten(1)
    weights = flat / flat.sum(-1, keepdim=True)
    idx = torch.multinomial(weights.float().cpu(), 1, generator=generator).squeeze(1).to(masks.device)
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


def sample_points(masks: Tensor, rows: Tensor, size: int, sample_seeds: list[int] | None) -> Tensor:
    """:func:`random_points` for targets ``masks [M, H, W]`` of samples ``rows [M]`` (sorted): sample ``b``'s from a
    generator seeded by ``sample_seeds[b]``, so a target's point depends only on its sample's seed."""
    if sample_seeds is None:
        return random_points(masks, size)
    parts = []
    for b in rows.unique_consecutive().tolist():
        generator = torch.Generator().manual_seed(int(sample_seeds[b]))
        parts.append(random_points(masks[rows == b], size, generator))
    return torch.cat(parts)


def segmenter_loss(
    model: SparrowModel, batch: SparrowBatch, point_prompts: bool = True, sample_seeds: list[int] | None = None
) -> dict[str, Tensor]:
    """Box-prompted (and point-prompted) mask losses of SAM2's image path (``sample_seeds``: one per sample)."""
    decoder = model.pixel_decoder
    features = decoder.encode(batch.sam_pixels.flatten(0, 1))
    frames, boxes, masks, rows = _visible(batch)
    size = tuple(batch.masks.shape[-2:])
    weights = model.config.loss
    if len(frames) == 0:  # nothing visible: a zero loss that still touches the graph
        zero = features.embedding.sum() * 0.0
        return {"mask_bce": zero, "mask_dice": zero, "loss": zero}
    out = model.decode(features, frames, None, boxes)
    losses = _mask_losses(model, PixelDecoder.upsample(out.mask_logits, size), masks)
    total = weights.mask_bce * losses["mask_bce"] + weights.mask_dice * losses["mask_dice"]
    if point_prompts:
        points = sample_points(masks, rows, decoder.image_size, sample_seeds)
        out = model.decode(features, frames, point_embeddings(decoder, points), None)
        point = _mask_losses(model, PixelDecoder.upsample(out.mask_logits, size), masks, prefix="point_")
        losses.update(point)
        total = total + weights.mask_bce * point["point_mask_bce"] + weights.mask_dice * point["point_mask_dice"]
    losses["loss"] = total
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
    stage: str,
    model: SparrowModel,
    batch: SparrowBatch,
    point_prompts: bool = True,
    sample_seeds: list[int] | None = None,
) -> dict[str, Tensor]:
    """The losses of ``stage`` for ``batch`` (``model`` is the unwrapped model; call inside the DDP forward);
    ``sample_seeds``, one per sample, seed the random prompt draws (see the module docstring)."""
    if stage == "segmenter":
        return segmenter_loss(model, batch, point_prompts, sample_seeds)
    if stage == "proposer":
        return proposer_stage_loss(model, batch)
    return model(batch)
