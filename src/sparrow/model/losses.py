"""Mask losses and the weighted total of the SPARROW training objective.

``L = ce * CE + mask_bce * BCE(mask) + mask_dice * Dice(mask) + selection * BCE(selection) + box * (L1 + GIoU)``
with the release weights 1.0 / 2.0 / 0.5 and the paper's filter-loss weights 1.0 / 2.0.
The selection and box terms are :func:`sparrow.model.selector.selection_loss` and
:func:`sparrow.model.selector.refinement_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LossWeights", "mask_bce_loss", "mask_dice_loss", "weighted_total"]


@dataclass
class LossWeights:
    """Weights of the training losses; the field names are the keys of the loss dictionary."""

    ce: float = 1.0
    mask_bce: float = 2.0
    mask_dice: float = 0.5
    selection: float = 1.0
    box: float = 2.0
    selection_rank: float = 0.0  # listwise selection loss (our addition, model/selector.py::ranking_loss); 0 = off
    track_selection: float = 1.0  # [BOX] vs the clip's tracklets (selection_level "track", model/track_selector.py)
    track_membership: float = 0.0  # per-tracklet BCE, labels per named object (track_selector stage; 0 = off)
    prompt_identity: float = 1.0  # [BOX]/[SEG] vs identity prompts (SynthRef, stage.identity_prompts in the vlm stage)
    proposer: float = 1.0  # only present when the proposer is trained (stage 0 / tiny joint training)


def _check(logits: Tensor, targets: Tensor, valid: Tensor | None, name: str) -> Tensor:
    """Validate shapes; return the bool slot mask ``[N]``."""
    if logits.dim() != 3 or targets.shape != logits.shape:
        raise ValueError(
            f"{name}: expects logits and targets [N, H, W], got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    if valid is None:
        return torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    if valid.shape != logits.shape[:1]:
        raise ValueError(f"{name}: valid must be [N]={logits.shape[0]}, got {tuple(valid.shape)}")
    return valid.to(device=logits.device, dtype=torch.bool)


def _mean_over_slots(per_mask: Tensor, valid: Tensor) -> Tensor:
    if not bool(valid.any()):
        return per_mask.sum() * 0.0  # connected to the graph, value 0
    return per_mask[valid].mean()


def mask_bce_loss(logits: Tensor, targets: Tensor, valid: Tensor | None = None, ignore: Tensor | None = None) -> Tensor:
    """Pixel BCE-with-logits: mean over all ``H*W`` pixels of each mask, then mean over the valid masks.

    Args:
        logits: ``[N, H, W]`` mask logits.
        targets: ``[N, H, W]`` in ``{0, 1}`` (float or bool).
        valid: ``[N]`` bool, padded slots False (they do not count); default all valid.
        ignore: optional ``[N, H, W]`` bool; ignored pixels add 0 but still count in ``H*W`` (as in the release).

    Returns 0 (connected to the graph) when no slot is valid.
    """
    valid = _check(logits, targets, valid, "mask_bce_loss")
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    if ignore is not None:
        loss = loss.masked_fill(ignore.to(torch.bool), 0.0)
    return _mean_over_slots(loss.flatten(1).mean(-1), valid)


def mask_dice_loss(
    logits: Tensor, targets: Tensor, valid: Tensor | None = None, scale: float = 1000.0, eps: float = 1e-6
) -> Tensor:
    """Soft Dice in the LISA form, per mask then mean over the valid masks.

    With ``p = sigmoid(logits)``: ``1 - (2 sum(p y)/scale + eps) / (sum(p)/scale + sum(y)/scale + eps)``,
    ``scale = 1000``, ``eps = 1e-6``. ``logits, targets [N, H, W]``; ``valid [N]`` bool. An empty prediction of an
    empty target scores 0. Returns 0 (connected to the graph) when no slot is valid.
    """
    valid = _check(logits, targets, valid, "mask_dice_loss")
    p = logits.sigmoid().flatten(1)
    y = targets.to(p.dtype).flatten(1)
    numerator = 2 * (p * y).sum(-1) / scale
    denominator = p.sum(-1) / scale + y.sum(-1) / scale
    per_mask = 1 - (numerator + eps) / (denominator + eps)
    return _mean_over_slots(per_mask, valid)


def weighted_total(losses: dict[str, Tensor], weights: LossWeights) -> Tensor:
    """``sum(weight[k] * losses[k])`` over the keys of :class:`LossWeights` present in ``losses``.

    Other keys (logging-only entries) are left out. Returns a zero tensor when no weighted key is present.
    """
    total: Tensor | None = None
    for f in fields(weights):
        if f.name in losses:
            term = getattr(weights, f.name) * losses[f.name]
            total = term if total is None else total + term
    if total is None:
        any_tensor = next(iter(losses.values()), None)
        return torch.zeros(()) if any_tensor is None else any_tensor.new_zeros(())
    return total
