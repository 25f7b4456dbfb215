"""``[BOX]``-conditioned proposal selection and text-conditioned box refinement (docs/architecture.md §6 items 4-5).

For the ``N`` ``[BOX]`` embeddings ``E [N, embed_dim]`` of one image and its ``P`` proposals (features
``F [P, feature_dim]``, objectness logits ``o [P]``, boxes ``B [P, 4]``):

* **score**: ``L = (E W_q)(K)^T / sqrt(key_dim) + log(max(sigmoid(o), 1e-6))``, invalid proposals ``-inf``, with
  keys ``K = F W_k`` or, with ``appearance_dim`` (our addition, see ``proposal_appearance.py``),
  ``K = F W_k + A W_a + MLP(sine(B))`` from the proposal's ROI-pooled image features ``A [P, appearance_dim]`` and
  its box;
* **refinement**: an MLP on ``[E W_q || K]`` predicts, for every (embedding, proposal) pair, a delta added to
  the proposal box in inverse-sigmoid ``cxcywh`` space. Its last layer is zero-initialised, so it starts as the
  identity. The refined box is the one used to prompt SAM2 (the release computes and discards it, §10 row 5);
* **rule** (:func:`select_boxes`): ``sigmoid(L) >= threshold`` sorted by score, else the argmax; at most
  ``max_boxes`` per embedding;
* **labels** (:func:`selection_labels`): IoU with the target box; the paper rule (positive ``IoU > 0.5``, negative
  ``IoU < 0.2``, ignore between) by default, the release rule (positive ``IoU >= 0.3``, the rest negative) with
  ``pos_iou=0.3, neg_iou=0.3, inclusive_pos=True``;
* **losses**: :func:`selection_loss` (BCE-with-logits on non-ignored, valid entries) and :func:`refinement_loss`
  (L1 + (1 - GIoU) of the refined boxes of positives); the paper weights them 1.0 and 2.0 (``LossWeights``).
  Our addition, :func:`ranking_loss` (``LossWeights.selection_rank``, off by default): a softmax over the valid
  proposals of a frame that puts the positives above every other proposal. The BCE averages ~100 mostly easy
  negatives (background, duplicates), so the few other objects of the frame, the negatives a query must beat, weigh
  little in it; the listwise term weighs the target against them directly.

Boxes are normalised ``xyxy`` in ``[0, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, box_iou, generalized_box_iou_loss

from sparrow.model.proposer import MLP, Proposals, cxcywh_to_unit_xyxy, inverse_sigmoid, sine_embedding

__all__ = [
    "Selector",
    "SelectorOutput",
    "ranking_loss",
    "refinement_loss",
    "select_boxes",
    "selection_labels",
    "selection_loss",
]

_LOG_MIN_SCORE = math.log(1e-6)


@dataclass
class SelectorOutput:
    """``logits [N, P]`` fused selection logits (invalid proposals ``-inf``); ``refined_boxes [N, P, 4]`` xyxy."""

    logits: Tensor
    refined_boxes: Tensor


def _single_image(proposals: Proposals) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Boxes ``[P,4]``, logits ``[P]``, features ``[P,d]``, valid ``[P]`` from proposals of one image."""
    boxes, logits, feats, valid = proposals.boxes, proposals.logits, proposals.features, proposals.valid
    if boxes.dim() == 3:
        if boxes.shape[0] != 1:
            raise ValueError(f"Selector takes the proposals of ONE image, got a batch of {boxes.shape[0]}")
        boxes, logits, feats, valid = boxes[0], logits[0], feats[0], valid[0]
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or logits.shape != boxes.shape[:1] or feats.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"Selector: inconsistent proposal shapes boxes {tuple(boxes.shape)}, logits {tuple(logits.shape)}, "
            f"features {tuple(feats.shape)}"
        )
    return boxes, logits, feats, valid.to(torch.bool)


class Selector(nn.Module):
    """Scores proposals against ``[BOX]`` embeddings and refines each proposal box per embedding.

    Args:
        embed_dim: size of the ``[BOX]`` embedding (output of the box L->V head).
        feature_dim: size of the proposal features (the proposer's hidden size).
        key_dim: size of the shared query/key space (256 in the release).
        appearance_dim: size of the proposals' ``appearance`` (0: not used; then proposals need none).
    """

    def __init__(self, embed_dim: int, feature_dim: int, key_dim: int = 256, appearance_dim: int = 0) -> None:
        super().__init__()
        self.key_dim = key_dim
        self.appearance_dim = appearance_dim
        self.w_q = nn.Linear(embed_dim, key_dim)
        self.w_k = nn.Linear(feature_dim, key_dim)
        if appearance_dim:
            self.w_a = nn.Sequential(nn.LayerNorm(appearance_dim), nn.Linear(appearance_dim, key_dim))
            self.w_geo = MLP(4 * 32, key_dim, key_dim, 2)  # sine(4 box coordinates x 32)
        self.refine = MLP(2 * key_dim, key_dim, 4, 3)
        nn.init.zeros_(self.refine.layers[-1].weight)
        nn.init.zeros_(self.refine.layers[-1].bias)

    def forward(self, box_embeddings: Tensor, proposals: Proposals) -> SelectorOutput:
        """Score and refine the proposals of ONE image.

        Args:
            box_embeddings: ``[N, embed_dim]`` (``[embed_dim]`` is taken as ``N = 1``).
            proposals: proposals of that image, either with a batch dimension of size 1 (``boxes [1, P, 4]``, as
                returned by :meth:`Proposer.top_proposals` / :meth:`Proposals.image`) or squeezed (``boxes [P, 4]``).

        Returns:
            :class:`SelectorOutput` with ``logits [N, P]`` and ``refined_boxes [N, P, 4]``.
        """
        if box_embeddings.dim() == 1:
            box_embeddings = box_embeddings[None]
        if box_embeddings.dim() != 2:
            raise ValueError(f"Selector expects [N, embed_dim] box embeddings, got {tuple(box_embeddings.shape)}")
        boxes, obj_logits, feats, valid = _single_image(proposals)
        q = self.w_q(box_embeddings)  # [N, k]
        k = self.w_k(feats.to(q.dtype))  # [P, k]
        if self.appearance_dim:
            appearance = proposals.appearance
            if appearance is None:
                raise ValueError(
                    "Selector uses proposal appearance, but the proposals carry none (SparrowModel.candidates adds it)"
                )
            appearance = appearance[0] if appearance.dim() == 3 else appearance
            k = k + self.w_a(appearance.to(q.dtype)) + self.w_geo(sine_embedding(boxes.to(q.dtype), 32))
        logits = q @ k.transpose(0, 1) / math.sqrt(self.key_dim)
        logits = logits + F.logsigmoid(obj_logits.to(q.dtype)).clamp(min=_LOG_MIN_SCORE)[None]
        logits = logits.masked_fill(~valid[None], float("-inf"))

        n, p = q.shape[0], k.shape[0]
        pair = torch.cat([q[:, None].expand(n, p, -1), k[None].expand(n, p, -1)], dim=-1)  # [N, P, 2k]
        delta = self.refine(pair)  # [N, P, 4]
        base = inverse_sigmoid(box_convert(boxes.to(q.dtype), "xyxy", "cxcywh"))  # [P, 4]
        refined = cxcywh_to_unit_xyxy((base[None] + delta).sigmoid())
        return SelectorOutput(logits=logits, refined_boxes=refined)


def select_boxes(
    output: SelectorOutput, threshold: float = 0.4, max_boxes: int | None = 1
) -> tuple[list[Tensor], list[Tensor]]:
    """Apply the selection rule to every embedding.

    For embedding ``i``: proposals with ``sigmoid(logit) >= threshold`` sorted by decreasing score; if none passes,
    the single best valid proposal (argmax fallback); at most ``max_boxes`` (``None``: no cap). Invalid proposals
    (``-inf`` logits) are never chosen; an embedding with no valid proposal gets nothing.

    Returns:
        ``(indices, boxes)``: per embedding an int64 index tensor ``[k_i]`` into the proposals and the refined boxes
        ``[k_i, 4]`` at those indices.
    """
    if max_boxes is not None and max_boxes <= 0:
        raise ValueError(f"select_boxes: max_boxes must be positive or None, got {max_boxes}")
    logits = output.logits.detach()
    indices: list[Tensor] = []
    boxes: list[Tensor] = []
    for i in range(logits.shape[0]):
        row = logits[i]
        valid = row > float("-inf")  # also False for NaN
        order = torch.argsort(row, descending=True, stable=True)
        order = order[valid[order]]
        passing = order[row[order].sigmoid() >= threshold]
        chosen = passing if passing.numel() > 0 else order[:1]
        if max_boxes is not None:
            chosen = chosen[:max_boxes]
        indices.append(chosen)
        boxes.append(output.refined_boxes[i, chosen])
    return indices, boxes


def selection_labels(
    proposal_boxes: Tensor,
    target_box: Tensor,
    pos_iou: float = 0.5,
    neg_iou: float = 0.2,
    inclusive_pos: bool = False,
) -> Tensor:
    """IoU-based selection labels.

    Args:
        proposal_boxes: ``[P, 4]`` xyxy.
        target_box: ``[4]`` xyxy (the target's box; the release uses the box of the mask union over the SAM frames).
        pos_iou: positive threshold; positive means ``IoU > pos_iou`` (``IoU >= pos_iou`` when ``inclusive_pos``).
        neg_iou: negative means ``IoU < neg_iou`` (always strict).
        inclusive_pos: see ``pos_iou``.

    Proposals that are neither positive nor negative are ignored (label -1). Paper rule: the defaults
    (``> 0.5`` positive, ``< 0.2`` negative). Release rule: ``pos_iou=0.3, neg_iou=0.3, inclusive_pos=True``
    (``>= 0.3`` positive, everything else negative, nothing ignored).

    Returns:
        ``[P]`` float: 1 positive, 0 negative, -1 ignore.
    """
    if neg_iou > pos_iou:
        raise ValueError(f"selection_labels: neg_iou {neg_iou} must not exceed pos_iou {pos_iou}")
    if proposal_boxes.dim() != 2 or proposal_boxes.shape[-1] != 4 or target_box.shape != (4,):
        raise ValueError(
            f"selection_labels expects [P, 4] and [4] boxes, got {tuple(proposal_boxes.shape)} and "
            f"{tuple(target_box.shape)}"
        )
    iou = box_iou(proposal_boxes.detach().float(), target_box.detach().float()[None].to(proposal_boxes.device))[:, 0]
    labels = torch.full_like(iou, -1.0)
    labels[iou < neg_iou] = 0.0
    labels[(iou >= pos_iou) if inclusive_pos else (iou > pos_iou)] = 1.0
    return labels


def selection_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean BCE-with-logits over entries with a label (``>= 0``) and a finite logit (a valid proposal).

    ``logits [N, P]`` (or ``[P]``); ``labels`` of the same shape or broadcastable to it. Returns 0 (connected to the
    graph) when no entry counts.
    """
    logits, labels = torch.broadcast_tensors(logits, labels.to(device=logits.device, dtype=logits.dtype))
    keep = (labels >= 0) & torch.isfinite(logits)
    if not bool(keep.any()):
        return torch.where(torch.isfinite(logits), logits, torch.zeros_like(logits)).sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[keep], labels[keep], reduction="mean")


def ranking_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Multi-positive softmax loss: ``logsumexp(valid) - logsumexp(positives)`` per row, mean over rows with a positive.

    ``logits [P]`` or ``[N, P]`` (invalid proposals ``-inf``), ``labels`` of the same shape (1 positive, 0 negative,
    -1 ignore; ignored proposals leave the denominator too). Returns 0 (connected to the graph) when no row has a
    finite positive.
    """
    if logits.dim() not in (1, 2) or labels.shape != logits.shape:
        raise ValueError(
            f"ranking_loss expects [P] or [N, P] logits and labels, got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    logits2, labels2 = (logits[None], labels[None]) if logits.dim() == 1 else (logits, labels)
    finite = torch.isfinite(logits2)
    labels2 = labels2.to(logits2.device)
    pos = finite & (labels2 > 0.5)
    rows = pos.any(-1)
    if not bool(rows.any()):
        return torch.where(finite, logits2, torch.zeros_like(logits2)).sum() * 0.0
    keep = finite & (labels2 >= 0)
    neg_inf = torch.full_like(logits2, float("-inf"))
    total = torch.where(keep, logits2, neg_inf)[rows].logsumexp(-1)
    positive = torch.where(pos, logits2, neg_inf)[rows].logsumexp(-1)
    return (total - positive).mean()


def refinement_loss(refined_boxes: Tensor, labels: Tensor, target_box: Tensor) -> Tensor:
    """``L1 + (1 - GIoU)`` between the refined boxes of positive proposals and the target box, mean over positives.

    ``refined_boxes [P, 4]`` with ``labels [P]`` and ``target_box [4]``, or ``[N, P, 4]`` with ``labels [N, P]`` and
    ``target_box [N, 4]`` (one target per embedding). L1 is the sum of the 4 absolute coordinate errors (DETR).
    Returns 0 (connected to the graph) when there is no positive.
    """
    if refined_boxes.dim() == 2:
        refined_boxes, labels, target_box = refined_boxes[None], labels[None], target_box[None]
    if (
        refined_boxes.dim() != 3
        or labels.shape != refined_boxes.shape[:2]
        or target_box.shape
        != (
            refined_boxes.shape[0],
            4,
        )
    ):
        raise ValueError(
            f"refinement_loss: shapes refined {tuple(refined_boxes.shape)}, labels {tuple(labels.shape)}, "
            f"target {tuple(target_box.shape)} do not agree"
        )
    pos = labels > 0.5
    if not bool(pos.any()):
        return refined_boxes.sum() * 0.0
    pred = refined_boxes[pos].float()  # [M, 4]
    tgt = target_box.to(pred)[:, None].expand_as(refined_boxes)[pos]
    l1 = (pred - tgt).abs().sum(-1)
    giou = generalized_box_iou_loss(pred, tgt, reduction="none")
    return (l1 + giou).mean()
