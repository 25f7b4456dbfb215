"""The loss each stage optimises, computed from one :class:`~sparrow.model.sparrow_model.SparrowBatch`.

- ``segmenter``: SAM2 as a promptable segmenter. Every visible target on every SAM frame is decoded from its
  ground-truth box (two corner points, labels 2/3) and, with ``point_prompts``, separately from one positive point
  drawn inside its mask (label 1). The points of sample ``b`` come from a generator seeded by ``sample_seeds[b]``
  (the loop passes one seed per global sample, so the draws do not depend on how samples are split over processes;
  without seeds, from torch's global RNG). With ``box_jitter`` the prompt boxes are noisy (:func:`jitter_boxes`, as
  SAM trains), so that a loose proposal box still gives the whole object. Mask BCE + Dice with the model's loss
  weights.
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
- ``memory``: SAM2's memory path. Each target visible on a sample's first SAM frame is prompted there with a mask
  (its ground truth, or with ``memory_prompt="box"`` the mask SAM2 decodes from its ground-truth box, as ``track``
  mode prompts with a decoded mask) and tracked over the following SAM frames (consecutive frames with
  ``data.sampling: clip``) by :func:`~sparrow.model.memory_training.unroll_memory`. Losses on the tracked frames:
  mask BCE + Dice (the model's weights) on the raw decoder logits where the target is visible (with SAM2's multimask
  tracking: the best of the candidates, as SAM2 trains, plus an L1 loss on their predicted IoU), and BCE of the
  object-presence logit on every tracked frame (``object_score``). With ``stage.memory_image_loss`` the image
  path's box-prompted mask losses are added (for runs that also train the mask decoder).

Each function returns a dict of scalar losses with the total under ``"loss"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sparrow.errors import SparrowError
from sparrow.model.losses import mask_bce_loss, mask_dice_loss
from sparrow.model.memory_training import MemoryUnroll, prompt_mask, unroll_memory
from sparrow.model.pixel_decoder import ImageFeatures, PixelDecoder
from sparrow.model.proposer import proposer_loss
from sparrow.model.sparrow_model import SparrowBatch, SparrowModel
from sparrow.train.config import MEMORY_PROMPTS, StageConfig


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


def jitter_boxes(boxes: Tensor, rows: Tensor, scale: float, sample_seeds: list[int] | None) -> Tensor:
    """Noisy prompt boxes, as SAM trains its box prompts: each corner coordinate of ``boxes [M, 4]`` (normalised
    ``xyxy`` of samples ``rows [M]``, sorted) moves by Gaussian noise of std ``scale`` times the box's width (x) or
    height (y), clipped at two std; the result is clamped to the frame and keeps at least a 1/1000 extent. Sample
    ``b``'s noise comes from a generator seeded by ``sample_seeds[b]`` (torch's global RNG without seeds)."""
    if scale <= 0 or len(boxes) == 0:
        return boxes
    if sample_seeds is None:
        noise = torch.randn(boxes.shape)
    else:
        noise = torch.cat(
            [
                torch.randn((int((rows == b).sum()), 4), generator=torch.Generator().manual_seed(int(sample_seeds[b])))
                for b in rows.unique_consecutive().tolist()
            ]
        )
    side = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # [M, 4]: w, h, w, h
    moved = boxes + noise.to(boxes).clamp(-2, 2) * scale * side
    lo = torch.minimum(moved[:, :2], moved[:, 2:]).clamp(0, 1)
    hi = torch.maximum(torch.maximum(moved[:, :2], moved[:, 2:]).clamp(0, 1), lo + 1e-3)
    return torch.cat([lo, hi], dim=1)


def identity_losses(model: SparrowModel, batch: SparrowBatch, features: ImageFeatures) -> dict[str, Tensor]:
    """Mask BCE/Dice of identity-prompted decodes and the prototype classification (see the module docstring):
    ``identity_mask_bce``, ``identity_mask_dice``, ``identity_cls``. ``features`` are those of ``batch.sam_pixels``
    flattened ``[B*Ts, ...]``."""
    table = model.identity_prompts
    if table is None:
        raise SparrowError(
            "stage.identity_prompts needs a model with identity prompts (model.config.identity_prompts: 36)"
        )
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
    model: SparrowModel,
    batch: SparrowBatch,
    point_prompts: bool = True,
    sample_seeds: list[int] | None = None,
    identity_prompts: bool = False,
    box_jitter: float = 0.0,
) -> dict[str, Tensor]:
    """Box-prompted (and point-prompted, and identity-prompted) mask losses of SAM2's image path (``sample_seeds``:
    one per sample); the prompt boxes get :func:`jitter_boxes` noise of scale ``box_jitter``, so that the decoder
    segments the whole object from the proposer's loose boxes too."""
    decoder = model.pixel_decoder
    features = decoder.encode(batch.sam_pixels.flatten(0, 1))
    frames, boxes, masks, rows = _visible(batch)
    size = tuple(batch.masks.shape[-2:])
    weights = model.config.loss
    identity = identity_losses(model, batch, features) if identity_prompts else {}
    extra = 0.0
    if identity:
        extra = (
            weights.mask_bce * identity["identity_mask_bce"]
            + weights.mask_dice * identity["identity_mask_dice"]
            + identity["identity_cls"]
        )
    if len(frames) == 0:  # nothing visible: a zero loss that still touches the graph
        zero = features.embedding.sum() * 0.0
        return {"mask_bce": zero, "mask_dice": zero, **identity, "loss": zero + extra}
    out = model.decode(features, frames, None, jitter_boxes(boxes, rows, box_jitter, sample_seeds))
    losses = _mask_losses(model, PixelDecoder.upsample(out.mask_logits, size), masks)
    total = weights.mask_bce * losses["mask_bce"] + weights.mask_dice * losses["mask_dice"]
    if point_prompts:
        points = sample_points(masks, rows, decoder.image_size, sample_seeds)
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


def _key_prompt(model: SparrowModel, pixels: Tensor, mask: Tensor, box: Tensor, source: str) -> Tensor:
    """The first frame's mask prompt ``[S, S]`` of one target: its ground-truth ``mask`` ``[H, W]``, or the mask the
    frozen pixel decoder gives for its ground-truth ``box`` ``[4]`` on ``pixels`` ``[3, S, S]``."""
    size = model.pixel_decoder.image_size
    if source == "box":
        with torch.no_grad():
            out = model.pixel_decoder.decode(model.pixel_decoder.encode(pixels[None]), None, box[None])
            mask = PixelDecoder.upsample(out.mask_logits, tuple(mask.shape[-2:]))[0] > 0
    return prompt_mask(mask, size)


def _per_mask_losses(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """BCE and Dice of each mask: ``logits``, ``targets`` ``[N, H, W]`` -> two ``[N]``."""
    bce = torch.stack([mask_bce_loss(logits[i : i + 1], targets[i : i + 1]) for i in range(len(logits))])
    dice = torch.stack([mask_dice_loss(logits[i : i + 1], targets[i : i + 1]) for i in range(len(logits))])
    return bce, dice


def _clip_terms(model: SparrowModel, out: MemoryUnroll, targets: Tensor) -> dict[str, Tensor]:
    """Per-frame loss terms of one unrolled clip; ``targets`` ``[Ts, H, W]`` (frame 0 is the prompted one).

    ``object_score`` ``[Ts-1]``; over the ``P`` tracked frames where the target is visible: ``mask_bce``,
    ``mask_dice`` ``[P]`` of the best candidate, ``track_iou`` ``[P]`` (IoU of the candidate SAM2 keeps, unclamped) and, with
    several candidates, ``iou_l1`` ``[P]``.
    """
    weights = model.config.loss
    size = tuple(targets.shape[-2:])
    present = targets[1:].flatten(1).amax(-1) > 0  # [Ts-1]
    terms = {
        "object_score": F.binary_cross_entropy_with_logits(out.object_score_logits, present.float(), reduction="none")
    }
    steps, cands = out.mask_logits.shape[:2]
    logits = PixelDecoder.upsample(out.mask_logits.flatten(0, 1), size).view(steps, cands, *size)[present]
    if len(logits) == 0:
        return terms
    y = targets[1:][present][:, None].expand_as(logits)  # [P, M, H, W]
    bce, dice = (v.view(-1, cands) for v in _per_mask_losses(logits.flatten(0, 1), y.flatten(0, 1)))
    best = (weights.mask_bce * bce + weights.mask_dice * dice).argmin(-1, keepdim=True)  # SAM2 trains the best one
    terms["mask_bce"], terms["mask_dice"] = bce.gather(-1, best)[:, 0], dice.gather(-1, best)[:, 0]
    hard, truth = logits.detach() > 0, y > 0
    iou = (hard & truth).flatten(2).sum(-1) / (hard | truth).flatten(2).sum(-1).clamp(min=1)  # [P, M]
    terms["track_iou"] = iou.gather(-1, out.chosen[present][:, None])[:, 0]
    if cands > 1:
        terms["iou_l1"] = (out.iou_scores[present] - iou).abs().mean(-1)
    return terms


def memory_loss(
    model: SparrowModel, batch: SparrowBatch, prompt: str = "mask", image_loss: bool = False
) -> dict[str, Tensor]:
    """Mask and object-presence losses of SAM2's memory propagation over each sample's SAM frames (module doc).

    Every term is a mean over all tracked frames of the batch; ``track_iou`` is a metric, not optimised. With
    ``image_loss`` the box-prompted mask losses of the image path (:func:`segmenter_loss` without points) are added
    as ``image_mask_bce`` / ``image_mask_dice``, to keep box prompting intact when the mask decoder also trains.
    """
    if prompt not in MEMORY_PROMPTS:
        raise ValueError(f"memory prompt must be one of {MEMORY_PROMPTS}, got {prompt!r}")
    parts: dict[str, list[Tensor]] = {}
    for b, n in (batch.masks[:, :, 0].flatten(2).amax(-1) > 0).nonzero().tolist():
        targets = batch.masks[b, n]  # [Ts, H, W]
        key = _key_prompt(model, batch.sam_pixels[b, 0], targets[0], batch.boxes[b, n, 0], prompt)
        for name, value in _clip_terms(model, unroll_memory(model.sam, batch.sam_pixels[b], key), targets).items():
            parts.setdefault(name, []).append(value)
    zero = model.sam.memory_temporal_positional_encoding.sum() * 0.0  # nothing to track: 0, still in the graph
    losses = {
        name: torch.cat(parts[name]).mean() if name in parts else zero
        for name in ("mask_bce", "mask_dice", "object_score")
    }
    weights = model.config.loss
    total = weights.mask_bce * losses["mask_bce"] + weights.mask_dice * losses["mask_dice"] + losses["object_score"]
    if "iou_l1" in parts:
        losses["iou_l1"] = torch.cat(parts["iou_l1"]).mean()
        total = total + losses["iou_l1"]
    if image_loss:
        image = segmenter_loss(model, batch, point_prompts=False)
        losses["image_mask_bce"], losses["image_mask_dice"] = image["mask_bce"], image["mask_dice"]
        total = total + image["loss"]
    losses["loss"] = total
    if "track_iou" in parts:
        losses["track_iou"] = torch.cat(parts["track_iou"]).mean().detach()
    return losses


def stage_loss(
    stage: StageConfig, model: SparrowModel, batch: SparrowBatch, sample_seeds: list[int] | None = None
) -> dict[str, Tensor]:
    """The losses of ``stage`` for ``batch`` (``model`` is the unwrapped model; call inside the DDP forward);
    ``sample_seeds``, one per sample, seed the random prompt draws (see the module docstring)."""
    if stage.name == "segmenter":
        return segmenter_loss(model, batch, stage.point_prompts, sample_seeds, stage.identity_prompts, stage.box_jitter)
    if stage.name == "proposer":
        return proposer_stage_loss(model, batch)
    if stage.name == "memory":
        return memory_loss(model, batch, stage.memory_prompt, stage.memory_image_loss)
    return model(batch)
