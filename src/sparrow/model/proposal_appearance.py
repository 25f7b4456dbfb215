"""What a proposal looks like: ROI-pooled SAM2 features inside its box, for the ``[BOX]`` selector.

The class-agnostic proposer's query features are trained to find objects, not to tell them apart, so on their own
they carry little of what a referring sentence names (colour, shape, texture). The selector therefore also sees,
for every proposal, SAM2's image features averaged inside the box (``torchvision.ops.roi_align``) at every level:
the stride-16 embedding and the two high-resolution maps, whose early-stage features keep colour. No parameters:
the selector's own projections learn what to use.

Averaging keeps what an object is made of (colour) but not its outline: a linear probe reads colour from the average
95 % of the time and shape 39 % (docs/results.md). With ``grid = g > 0`` (``SparrowConfig.selector_appearance_grid``)
each map is ROI-aligned to a ``g x g`` grid that is kept, not averaged, so the key sees the object's layout too.

:func:`proposal_silhouettes` gives the outline directly: the mask SAM2 decodes from each box
(``SparrowModel.mask_boxes`` decodes it anyway to tighten the box), ROI-aligned in the tightened box to an ``s x s``
grid of probabilities. Scale and position drop out, and what is left is the shape (track selection,
``SparrowConfig.track_silhouette``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align

__all__ = ["appearance_dim", "proposal_appearance", "proposal_silhouettes"]


def appearance_dim(hidden_size: int, grid: int = 0) -> int:
    """Channels of :func:`proposal_appearance` for SAM2 hidden size ``C``: ``C + C/4 + C/8`` (the three levels),
    times ``grid**2`` when a grid is kept."""
    return (hidden_size + hidden_size // 4 + hidden_size // 8) * max(grid, 1) ** 2


def proposal_appearance(maps: list[Tensor], boxes: Tensor, output_size: int = 2, grid: int = 0) -> Tensor:
    """Each feature map inside each box, concatenated over maps: averaged (``grid = 0``) or on a kept ``grid x grid``.

    Args:
        maps: feature maps ``[B, C_l, h_l, w_l]`` of the same images (any resolutions).
        boxes: ``[B, K, 4]`` normalised xyxy boxes.
        output_size: ROI-align grid per box before averaging (``grid = 0``).
        grid: keep a ``grid x grid`` ROI-align output per map, flattened channel-major (0: average).

    Returns:
        ``[B, K, sum(C_l) * max(grid, 1)**2]``.
    """
    if grid < 0:
        raise ValueError(f"proposal_appearance: grid must be >= 0, got {grid}")
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"proposal_appearance: boxes must be [B, K, 4], got {tuple(boxes.shape)}")
    b, k, _ = boxes.shape
    pooled = []
    for fmap in maps:
        if fmap.dim() != 4 or fmap.shape[0] != b:
            raise ValueError(f"proposal_appearance: feature map {tuple(fmap.shape)} does not match {b} images")
        h, w = fmap.shape[-2:]
        scale = torch.tensor([w, h, w, h], dtype=fmap.dtype, device=fmap.device)
        rois = [boxes[i].to(fmap.dtype) * scale for i in range(b)]
        size = grid if grid else output_size
        out = roi_align(fmap, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        pooled.append((out.flatten(1) if grid else out.mean(dim=(-2, -1))).reshape(b, k, -1))
    return torch.cat(pooled, dim=-1)


def proposal_silhouettes(mask_logits: Tensor, boxes: Tensor, size: int) -> Tensor:
    """The mask of each proposal inside its box: ``mask_logits [M, h, w]`` (SAM2's low-resolution logits, one mask
    per box), ``boxes [M, 4]`` normalised xyxy -> probabilities ``[M, size * size]`` (row-major), the logits
    bilinearly sampled on a ``size x size`` grid over the box (so sub-pixel outlines survive) and then squashed."""
    if size < 1:
        raise ValueError(f"proposal_silhouettes: size must be >= 1, got {size}")
    if mask_logits.dim() != 3 or boxes.shape != (mask_logits.shape[0], 4):
        raise ValueError(
            f"proposal_silhouettes: need mask_logits [M, h, w] and boxes [M, 4], got {tuple(mask_logits.shape)} "
            f"and {tuple(boxes.shape)}"
        )
    h, w = mask_logits.shape[-2:]
    logits = mask_logits[:, None].float()
    scale = torch.tensor([w, h, w, h], dtype=logits.dtype, device=logits.device)
    rois = torch.cat(
        [torch.arange(len(boxes), dtype=logits.dtype, device=logits.device)[:, None], boxes.to(logits) * scale], 1
    )
    sampled = roi_align(logits, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return torch.sigmoid(sampled).flatten(1).to(mask_logits.dtype)
