"""Bipartite matching between predicted and ground-truth boxes (DETR / Deformable-DETR style).

``box_match_cost`` builds the ``[Q, N]`` cost ``w_class * focal_cost + w_l1 * L1 + w_giou * (-GIoU)``
(the authors' release: weights 2 / 5 / 2); ``hungarian_match`` solves it with ``scipy.optimize.linear_sum_assignment``.
All boxes are normalised ``xyxy`` in ``[0, 1]``; the L1 term is the sum of absolute coordinate differences.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import generalized_box_iou

__all__ = ["box_match_cost", "focal_class_cost", "hungarian_match"]


def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost one-to-one assignment.

    Args:
        cost: ``[Q, N]`` cost of assigning query ``q`` to target ``n`` (``Q`` may differ from ``N``).

    Returns:
        ``(query_idx, target_idx)``: two int64 tensors of length ``min(Q, N)`` on ``cost.device``,
        sorted by ``query_idx``; ``cost[query_idx, target_idx].sum()`` is minimal.
    """
    if cost.dim() != 2:
        raise ValueError(f"hungarian_match expects a [Q, N] cost matrix, got shape {tuple(cost.shape)}")
    q, n = cost.shape
    if q == 0 or n == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=cost.device)
        return empty, empty.clone()
    c = cost.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(c).all():
        raise ValueError("hungarian_match: the cost matrix contains NaN or infinite entries")
    rows, cols = linear_sum_assignment(c.numpy())
    return (
        torch.as_tensor(rows, dtype=torch.int64, device=cost.device),
        torch.as_tensor(cols, dtype=torch.int64, device=cost.device),
    )


def focal_class_cost(pred_logits: Tensor, alpha: float = 0.25, gamma: float = 2.0, eps: float = 1e-8) -> Tensor:
    """Per-query classification cost of calling a query positive, in the focal-loss form of Deformable DETR.

    ``cost = alpha (1-p)^gamma (-log p) - (1-alpha) p^gamma (-log(1-p))`` with ``p = sigmoid(logit)``.
    ``pred_logits [Q] -> [Q]``; lower means the query is a better positive.
    """
    p = pred_logits.sigmoid()
    pos = alpha * (1 - p).pow(gamma) * (-(p + eps).log())
    neg = (1 - alpha) * p.pow(gamma) * (-(1 - p + eps).log())
    return pos - neg


def box_match_cost(
    pred_boxes: Tensor,
    pred_logits: Tensor,
    target_boxes: Tensor,
    w_class: float = 2.0,
    w_l1: float = 5.0,
    w_giou: float = 2.0,
) -> Tensor:
    """Matching cost between ``Q`` predictions and ``N`` targets.

    Args:
        pred_boxes: ``[Q, 4]`` normalised xyxy.
        pred_logits: ``[Q]`` objectness logits.
        target_boxes: ``[N, 4]`` normalised xyxy.
        w_class, w_l1, w_giou: weights of the focal class cost, the L1 distance and the negative GIoU.

    Returns:
        ``[Q, N]`` float32 cost (callers that only match compute it under ``no_grad``).
    """
    if pred_boxes.dim() != 2 or pred_boxes.shape[-1] != 4:
        raise ValueError(f"pred_boxes must be [Q, 4], got {tuple(pred_boxes.shape)}")
    if target_boxes.dim() != 2 or target_boxes.shape[-1] != 4:
        raise ValueError(f"target_boxes must be [N, 4], got {tuple(target_boxes.shape)}")
    if pred_logits.shape != pred_boxes.shape[:1]:
        raise ValueError(f"pred_logits must be [Q]={pred_boxes.shape[0]}, got {tuple(pred_logits.shape)}")
    pred_boxes = pred_boxes.float()
    tgt = target_boxes.to(device=pred_boxes.device, dtype=torch.float32)
    cost_class = focal_class_cost(pred_logits.float())[:, None].expand(-1, tgt.shape[0])
    cost_l1 = torch.cdist(pred_boxes, tgt, p=1)
    cost_giou = -generalized_box_iou(pred_boxes, tgt)
    return w_class * cost_class + w_l1 * cost_l1 + w_giou * cost_giou
