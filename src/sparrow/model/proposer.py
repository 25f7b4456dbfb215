"""Class-agnostic box proposer on SAM2's stride-16 image embedding.

A DETR-style decoder: ``num_queries`` learned content queries, each with a learned anchor box, cross-attend to
the projected SAM2 image embedding (the same encoder pass that feeds the mask decoder, so SAM2's encoder runs once;
the authors' release runs a second frozen copy). Every decoder layer refines the anchor boxes by a delta in
inverse-sigmoid ``cxcywh`` space (iterative refinement, references detached between layers as in Deformable DETR)
and scores objectness. The query position embedding is an MLP of the sine embedding of the current anchor box
(DAB-DETR style).

Two-stage query selection (``two_stage=True``, the default; Deformable-DETR two-stage / DINO mixed query
selection): a dense head predicts an objectness logit and a box for every feature cell (relative to a cell anchor);
the ``num_queries`` best cells give the decoder its initial reference boxes (detached), the content queries stay
learned. The dense head is trained one-to-many (cells near an object's centre and inside its box are positives, as
FCOS centre sampling), which converges in a few hundred steps where learned anchors alone do not: on SynthRef, a
tiny proposer with learned anchors reached recall@0.5 of 0.29 after 1,200 steps.

Differences from the release (documented choices): plain multi-head attention on the single stride-16 level instead
of deformable attention; one objectness head instead of the fused ``coco``/``sa1b`` pair; no transformer encoder
(SAM2's features are already contextual). Training: ``proposer_loss`` = sigmoid focal objectness (alpha 0.25) x2,
L1 x5, GIoU x2 after Hungarian matching with the same 2/5/2 costs, normalised by the number of target boxes, plus the
same loss on every earlier decoder layer (auxiliary losses). Under ``torch.distributed`` the normalisers are counted
over all processes (DETR), so P processes with batch b train exactly like one process with batch P*b.

Boxes are normalised ``xyxy`` in ``[0, 1]`` everywhere.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

from sparrow.model.matching import box_match_cost, hungarian_match

__all__ = ["Proposals", "Proposer", "ProposerConfig", "ProposerLossWeights", "inverse_sigmoid", "proposer_loss"]


@dataclass
class ProposerConfig:
    """Proposer sizes. The tiny preset uses ``in_channels=128`` and ~16-32 queries."""

    in_channels: int = 256  # SAM2 hidden size C of the stride-16 image embedding
    hidden_size: int = 256  # d
    num_queries: int = 300
    num_layers: int = 6
    num_heads: int = 8
    top_k: int = 100  # proposals kept for selection
    ffn_size: int | None = None  # decoder feed-forward size; default 4 * hidden_size
    dropout: float = 0.0
    prior_prob: float = 0.01  # initial objectness probability (bias -log(99))
    two_stage: bool = True  # initial references from the dense per-cell head (False: learned anchors)
    fine_channels: int = 0  # > 0: also read SAM2's stride-8 map with this many channels (memory and cells at stride 8)

    def __post_init__(self) -> None:
        for name in ("in_channels", "hidden_size", "num_queries", "num_layers", "num_heads", "top_k"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ProposerConfig.{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by 4 (sine position embedding)")


@dataclass
class Proposals:
    """Proposals of a batch of images.

    ``boxes [B, P, 4]`` normalised xyxy in ``[0, 1]``; ``logits [B, P]`` objectness logits; ``features [B, P, d]``;
    ``valid [B, P]`` bool. ``aux`` holds ``(boxes, logits)`` of the earlier decoder layers (only on the full output
    of :meth:`Proposer.forward`, used by the auxiliary losses; empty after :meth:`Proposer.top_proposals`).
    """

    boxes: Tensor
    logits: Tensor
    features: Tensor
    valid: Tensor
    aux: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    dense: tuple[Tensor, Tensor] | None = None  # two-stage: per-cell (boxes [B, hw, 4], logits [B, hw]) and ...
    grid: tuple[int, int] | None = None  # ... the cell grid (h, w) they come from
    appearance: Tensor | None = None  # [B, P, A] ROI-pooled image features (sparrow.model.proposal_appearance)
    silhouette: Tensor | None = None  # [B, P, s*s] each box's SAM2 mask inside it (SparrowModel.mask_boxes)

    @property
    def scores(self) -> Tensor:
        """Objectness probabilities ``[B, P]``."""
        return self.logits.sigmoid()

    def image(self, b: int) -> Proposals:
        """Proposals of image ``b`` with the batch dimension kept (size 1), without ``aux``."""
        return self.images(b, b + 1)

    def images(self, start: int, stop: int) -> Proposals:
        """Proposals of images ``start .. stop - 1`` (e.g. one clip's frames of a batch), without ``aux``."""
        sl = slice(start, stop)
        kept = {k: getattr(self, k)[sl] for k in ("appearance", "silhouette") if getattr(self, k) is not None}
        return Proposals(self.boxes[sl], self.logits[sl], self.features[sl], self.valid[sl], **kept)

    def detach(self) -> Proposals:
        """A copy with every tensor detached (the proposer is frozen while the selector trains)."""
        return Proposals(
            self.boxes.detach(),
            self.logits.detach(),
            self.features.detach(),
            self.valid,
            [(b.detach(), lg.detach()) for b, lg in self.aux],
            None if self.dense is None else (self.dense[0].detach(), self.dense[1].detach()),
            self.grid,
            None if self.appearance is None else self.appearance.detach(),
            None if self.silhouette is None else self.silhouette.detach(),
        )


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """``logit(x)`` with ``x`` clamped to ``[eps, 1 - eps]``."""
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


def sine_embedding(coords: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """Sine/cosine embedding of coordinates in ``[0, 1]``: ``[..., k] -> [..., k * num_feats]``."""
    dim_t = torch.arange(num_feats // 2, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * dim_t / num_feats)
    x = coords.float()[..., None] * (2 * math.pi) / dim_t  # [..., k, num_feats/2]
    emb = torch.cat([x.sin(), x.cos()], dim=-1)  # [..., k, num_feats]
    return emb.flatten(-2).to(coords.dtype)


def grid_position_embedding(h: int, w: int, d: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """2-D sine position embedding of an ``h x w`` grid of cell centres: ``[h * w, d]``."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([xx.flatten(), yy.flatten()], dim=-1)  # [hw, 2] (x, y)
    return sine_embedding(coords, d // 2).to(dtype)


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class DecoderLayer(nn.Module):
    """Post-norm DETR decoder layer: self-attention, cross-attention to the image, feed-forward.

    Positions are added to queries and keys only (never to values), as in DETR.
    """

    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor) -> Tensor:
        """``tgt, query_pos [B, Q, d]``; ``memory [B, HW, d]``; ``memory_pos [1 or B, HW, d]`` -> ``[B, Q, d]``."""
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.drop(self.self_attn(q, q, tgt, need_weights=False)[0]))
        attn = self.cross_attn(tgt + query_pos, memory + memory_pos, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.drop(attn))
        return self.norm3(tgt + self.drop(self.ffn(tgt)))


class Proposer(nn.Module):
    """Learned queries -> ``num_queries`` class-agnostic boxes, objectness logits and features."""

    def __init__(self, config: ProposerConfig) -> None:
        super().__init__()
        self.config = config
        d, q = config.hidden_size, config.num_queries
        groups = math.gcd(32, d)  # GroupNorm as in DETR-family input projections
        self.input_proj = nn.Sequential(nn.Conv2d(config.in_channels, d, kernel_size=1), nn.GroupNorm(groups, d))
        if config.fine_channels:
            self.fine_proj = nn.Sequential(nn.Conv2d(config.fine_channels, d, kernel_size=1), nn.GroupNorm(groups, d))
        self.query_content = nn.Embedding(q, d)
        if config.two_stage:
            self.enc_output = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d))
            self.enc_class = nn.Linear(d, 1)
            self.enc_box = MLP(d, d, 4, 3)
        else:
            self.anchors = nn.Embedding(q, 4)  # inverse-sigmoid cxcywh
        self.query_pos = MLP(2 * d, d, d, 2)  # sine(4 coords x d/2) -> d
        ffn = config.ffn_size or 4 * d
        self.layers = nn.ModuleList(
            DecoderLayer(d, config.num_heads, ffn, config.dropout) for _ in range(config.num_layers)
        )
        self.box_heads = nn.ModuleList(MLP(d, d, 4, 3) for _ in range(config.num_layers))
        self.class_heads = nn.ModuleList(nn.Linear(d, 1) for _ in range(config.num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero box deltas; objectness bias at ``prior_prob``; without ``two_stage``, anchors on a jittered grid
        with varied sizes (drawn from a fixed local generator, so the global RNG is untouched)."""
        bias = -math.log((1 - self.config.prior_prob) / self.config.prior_prob)
        with torch.no_grad():
            if self.config.two_stage:
                nn.init.constant_(self.enc_class.bias, bias)
                nn.init.zeros_(self.enc_box.layers[-1].weight)
                nn.init.zeros_(self.enc_box.layers[-1].bias)
            else:
                self.anchors.weight.copy_(inverse_sigmoid(self._grid_anchors()))
            for head in self.class_heads:
                nn.init.constant_(head.bias, bias)
            for head in self.box_heads:
                nn.init.zeros_(head.layers[-1].weight)
                nn.init.zeros_(head.layers[-1].bias)

    def _grid_anchors(self) -> Tensor:
        """``[Q, 4]`` cxcywh anchors on a jittered grid with widths and heights in ``[0.05, 0.5]``."""
        q = self.config.num_queries
        g = torch.Generator().manual_seed(0)
        side = math.ceil(math.sqrt(q))
        idx = torch.arange(q)
        cx = ((idx % side).float() + 0.5 + 0.3 * (torch.rand(q, generator=g) - 0.5)) / side
        cy = ((idx // side).float() + 0.5 + 0.3 * (torch.rand(q, generator=g) - 0.5)) / math.ceil(q / side)
        wh = 0.05 + 0.45 * torch.rand(q, 2, generator=g)
        return torch.stack([cx, cy, wh[:, 0], wh[:, 1]], dim=-1)

    def forward(self, image_embedding: Tensor, fine: Tensor | None = None) -> Proposals:
        """``image_embedding [B, C, h, w]`` (SAM2's stride-16 embedding) -> all ``num_queries`` proposals.

        With ``fine_channels``, ``fine [B, fine_channels, 2h, 2w]`` (SAM2's stride-8 map) is required: the memory is
        then the upsampled projected embedding plus the projected stride-8 map (an FPN-style sum), on the 2h x 2w grid.

        The returned :class:`Proposals` has ``boxes [B, Q, 4]``, ``logits [B, Q]``, ``features [B, Q, d]``,
        ``valid [B, Q]`` (all True), ``aux`` with one ``(boxes, logits)`` pair per earlier decoder layer and, with
        ``two_stage``, ``dense`` (per-cell boxes ``[B, hw, 4]`` and logits ``[B, hw]``). With ``two_stage``,
        ``Q = min(num_queries, h * w)``.
        """
        if image_embedding.dim() != 4 or image_embedding.shape[1] != self.config.in_channels:
            raise ValueError(
                f"Proposer expects [B, {self.config.in_channels}, h, w] image features, "
                f"got {tuple(image_embedding.shape)}"
            )
        projected = self.input_proj(image_embedding)
        if self.config.fine_channels:
            want = (self.config.fine_channels, 2 * image_embedding.shape[2], 2 * image_embedding.shape[3])
            if fine is None or fine.dim() != 4 or tuple(fine.shape[1:]) != want:
                got = None if fine is None else tuple(fine.shape)
                raise ValueError(f"Proposer expects the stride-8 map [B, {want[0]}, {want[1]}, {want[2]}], got {got}")
            projected = F.interpolate(projected, scale_factor=2.0, mode="nearest") + self.fine_proj(fine)
        b, _, h, w = projected.shape
        memory = projected.flatten(2).transpose(1, 2)  # [B, hw, d]
        memory_pos = grid_position_embedding(h, w, self.config.hidden_size, memory.device, memory.dtype)[None]
        dense = None
        if self.config.two_stage:
            enc = self.enc_output(memory)
            dense_ref = (
                inverse_sigmoid(cell_anchors(h, w, memory.device, memory.dtype))[None] + self.enc_box(enc)
            ).sigmoid()
            dense_logits = self.enc_class(enc).squeeze(-1)  # [B, hw]
            k = min(self.config.num_queries, h * w)
            idx = dense_logits.detach().topk(k, dim=1).indices
            ref = dense_ref.detach().gather(1, idx[..., None].expand(-1, -1, 4))
            tgt = self.query_content.weight[None, :k].expand(b, -1, -1)
            dense = (cxcywh_to_unit_xyxy(dense_ref), dense_logits)
        else:
            tgt = self.query_content.weight[None].expand(b, -1, -1)
            ref = self.anchors.weight.sigmoid()[None].expand(b, -1, -1)  # cxcywh in (0, 1)
        outputs: list[tuple[Tensor, Tensor]] = []
        for layer, box_head, class_head in zip(self.layers, self.box_heads, self.class_heads):
            query_pos = self.query_pos(sine_embedding(ref, self.config.hidden_size // 2))
            tgt = layer(tgt, query_pos, memory, memory_pos)
            new_ref = (inverse_sigmoid(ref) + box_head(tgt)).sigmoid()
            outputs.append((cxcywh_to_unit_xyxy(new_ref), class_head(tgt).squeeze(-1)))
            ref = new_ref.detach()
        boxes, logits = outputs[-1]
        valid = torch.ones(b, boxes.shape[1], dtype=torch.bool, device=boxes.device)
        return Proposals(
            boxes=boxes,
            logits=logits,
            features=tgt,
            valid=valid,
            aux=outputs[:-1],
            dense=dense,
            grid=(h, w) if dense is not None else None,
        )

    def top_proposals(self, proposals: Proposals, k: int | None = None) -> Proposals:
        """Keep the ``k`` (default ``config.top_k``, at most P) proposals with the highest objectness per image.

        Invalid proposals rank last. Output tensors are ``[B, k, ...]`` sorted by decreasing objectness; ``aux`` is
        dropped. Gathering is differentiable; detach first if the proposer is frozen.
        """
        k = self.config.top_k if k is None else k
        if k <= 0:
            raise ValueError(f"top_proposals: k must be positive, got {k}")
        k = min(k, proposals.logits.shape[1])
        rank = proposals.logits.detach().masked_fill(~proposals.valid, float("-inf"))
        idx = rank.topk(k, dim=1).indices  # [B, k], sorted
        return Proposals(
            boxes=proposals.boxes.gather(1, idx[..., None].expand(-1, -1, 4)),
            logits=proposals.logits.gather(1, idx),
            features=proposals.features.gather(1, idx[..., None].expand(-1, -1, proposals.features.shape[-1])),
            valid=proposals.valid.gather(1, idx),
        )


def cell_anchors(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Anchor box of every cell of an ``h x w`` grid, ``[h * w, 4]`` cxcywh: the cell centre, two cells wide
    (at least 0.05 of the image)."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    size = torch.tensor([max(2.0 / w, 0.05), max(2.0 / h, 0.05)], device=device)
    return torch.cat([xx.flatten()[:, None], yy.flatten()[:, None], size.expand(h * w, 2)], dim=-1).to(dtype)


def cxcywh_to_unit_xyxy(boxes: Tensor) -> Tensor:
    """``[..., 4]`` cxcywh -> xyxy clamped to ``[0, 1]`` (non-degenerate for centres inside the image).

    The clamp is straight-through: its value is clamped, its gradient is the identity, so a corner predicted outside
    the image still receives the gradient that pulls it back (a plain clamp would freeze it there).
    """
    xyxy = box_convert(boxes, "cxcywh", "xyxy")
    return xyxy + (xyxy.clamp(0.0, 1.0) - xyxy).detach()


@dataclass
class ProposerLossWeights:
    """Loss and matching-cost weights (the authors' release: focal x2, L1 x5, GIoU x2; costs 2 / 5 / 2)."""

    objectness: float = 2.0
    l1: float = 5.0
    giou: float = 2.0
    cost_class: float = 2.0
    cost_l1: float = 5.0
    cost_giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    aux: bool = True  # add the same loss for every earlier decoder layer
    dense: float = 1.0  # weight of the two-stage dense head's one-to-many loss (same focal / L1 / GIoU weights)
    center_radius: float = 1.5  # dense positives: cells within this many cells of an object's centre, inside its box


def _layer_loss(
    boxes: Tensor, logits: Tensor, targets: list[Tensor], weights: ProposerLossWeights, num_boxes: float
) -> dict[str, Tensor]:
    """Unweighted objectness / L1 / GIoU of one decoder layer's output ``boxes [B,Q,4]``, ``logits [B,Q]``."""
    boxes, logits = boxes.float(), logits.float()  # losses and matching in float32 under autocast too
    obj_target = torch.zeros_like(logits)
    matched_pred, matched_tgt = [], []
    for b, tgt in enumerate(targets):
        tgt = tgt.to(device=boxes.device, dtype=boxes.dtype)
        if tgt.shape[0] == 0:
            continue
        with torch.no_grad():
            cost = box_match_cost(boxes[b], logits[b], tgt, weights.cost_class, weights.cost_l1, weights.cost_giou)
        qi, ti = hungarian_match(cost)
        obj_target[b, qi] = 1.0
        matched_pred.append(boxes[b, qi])
        matched_tgt.append(tgt[ti])
    focal = sigmoid_focal_loss(
        logits, obj_target, alpha=weights.focal_alpha, gamma=weights.focal_gamma, reduction="sum"
    )
    out = {"objectness": focal / num_boxes}
    if matched_pred:
        pred, tgt = torch.cat(matched_pred), torch.cat(matched_tgt)
        out["l1"] = F.l1_loss(pred, tgt, reduction="sum") / num_boxes
        out["giou"] = generalized_box_iou_loss(pred, tgt, reduction="sum") / num_boxes
    else:
        zero = boxes.sum() * 0.0  # keeps the graph connected
        out["l1"] = zero
        out["giou"] = zero.clone()
    return out


def dense_assignment(targets: Tensor, h: int, w: int, radius: float) -> Tensor:
    """One-to-many assignment of the cells of an ``h x w`` grid to target boxes ``[N, 4]`` (normalised xyxy).

    A cell is a positive of a target when its centre lies inside the box and within ``radius`` cells of the box
    centre; the cell holding the box centre is always a positive. A cell claimed by several targets takes the
    smallest. Returns ``[h * w]`` long: the target index, or -1 for a negative cell.
    """
    device = targets.device
    ys = (torch.arange(h, device=device, dtype=targets.dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=targets.dtype) + 0.5) / w
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    cx, cy = xx.flatten()[:, None], yy.flatten()[:, None]  # [hw, 1]
    x0, y0, x1, y1 = targets.unbind(-1)  # [N]
    gx, gy = (x0 + x1) / 2, (y0 + y1) / 2
    inside = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)
    near = ((cx - gx).abs() < radius / w) & ((cy - gy).abs() < radius / h)
    centre_cell = (gy.clamp(0, 1 - 1e-6) * h).long() * w + (gx.clamp(0, 1 - 1e-6) * w).long()  # [N]
    positive = inside & near
    positive[centre_cell, torch.arange(len(targets), device=device)] = True
    area = ((x1 - x0) * (y1 - y0)).expand_as(positive)
    area = torch.where(positive, area, torch.full_like(area, float("inf")))
    best = area.argmin(dim=1)
    return torch.where(positive.any(dim=1), best, torch.full_like(best, -1))


def global_count(count: int, device: torch.device) -> float:
    """A loss normaliser: ``max(count, 1)``, or under ``torch.distributed`` with W > 1 processes the count summed
    over them (at least 1) divided by W, so that DDP's mean of the per-process gradients equals the gradient of one
    process holding the whole batch (DETR's ``num_boxes``). Every process must call it (it is a collective)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        total = torch.tensor([float(count)], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return max(float(total.item()), 1.0) / dist.get_world_size()
    return float(max(count, 1))


def dense_loss(
    boxes: Tensor, logits: Tensor, grid: tuple[int, int], targets: list[Tensor], weights: ProposerLossWeights
) -> dict[str, Tensor]:
    """One-to-many loss of the two-stage dense head: per-cell ``boxes [B, hw, 4]``, ``logits [B, hw]``.

    Focal objectness over all cells, L1 and GIoU over positive cells (see :func:`dense_assignment`), each divided by
    the number of positive cells (at least 1).
    """
    boxes, logits = boxes.float(), logits.float()
    obj_target = torch.zeros_like(logits)
    pred, tgt_boxes = [], []
    for b, tgt in enumerate(targets):
        if tgt.shape[0] == 0:
            continue
        tgt = tgt.to(device=boxes.device, dtype=boxes.dtype)
        assigned = dense_assignment(tgt, grid[0], grid[1], weights.center_radius)
        pos = assigned >= 0
        obj_target[b, pos] = 1.0
        pred.append(boxes[b, pos])
        tgt_boxes.append(tgt[assigned[pos]])
    num = global_count(sum(len(p) for p in pred), logits.device)
    out = {
        "objectness": sigmoid_focal_loss(
            logits, obj_target, alpha=weights.focal_alpha, gamma=weights.focal_gamma, reduction="sum"
        )
        / num
    }
    if pred:
        p, t = torch.cat(pred), torch.cat(tgt_boxes)
        out["l1"] = F.l1_loss(p, t, reduction="sum") / num
        out["giou"] = generalized_box_iou_loss(p, t, reduction="sum") / num
    else:
        out["l1"] = boxes.sum() * 0.0
        out["giou"] = boxes.sum() * 0.0
    return out


def proposer_loss(
    proposals: Proposals, targets: list[Tensor], weights: ProposerLossWeights | None = None
) -> dict[str, Tensor]:
    """Hungarian-matched detection loss of the full proposer output.

    Args:
        proposals: the output of :meth:`Proposer.forward` (all queries; ``aux`` used when ``weights.aux``).
        targets: ``B`` tensors ``[N_b, 4]`` of normalised xyxy boxes (``N_b`` may be 0).
        weights: :class:`ProposerLossWeights`.

    Returns:
        ``{"objectness", "l1", "giou"}``: unweighted losses of the last layer, each summed and divided by the total
        number of target boxes in the batch (at least 1; L1 sums the 4 coordinate errors); ``"aux"``: the weighted
        sum over earlier layers (0 if none); ``"dense"``: the weighted one-to-many loss of the two-stage dense head
        (0 without one); ``"total"``: ``2*objectness + 5*l1 + 2*giou + aux + dense * weights.dense``.
    """
    weights = weights or ProposerLossWeights()
    if len(targets) != proposals.boxes.shape[0]:
        raise ValueError(f"proposer_loss: {len(targets)} target sets for a batch of {proposals.boxes.shape[0]}")
    for b, t in enumerate(targets):
        if t.dim() != 2 or t.shape[-1] != 4:
            raise ValueError(f"proposer_loss: targets[{b}] must be [N, 4] xyxy, got {tuple(t.shape)}")
    num_boxes = global_count(sum(int(t.shape[0]) for t in targets), proposals.logits.device)

    def weighted(parts: dict[str, Tensor]) -> Tensor:
        return weights.objectness * parts["objectness"] + weights.l1 * parts["l1"] + weights.giou * parts["giou"]

    out = _layer_loss(proposals.boxes, proposals.logits, targets, weights, num_boxes)
    aux = proposals.logits.new_zeros(())
    if weights.aux:
        for boxes, logits in proposals.aux:
            aux = aux + weighted(_layer_loss(boxes, logits, targets, weights, num_boxes))
    out["aux"] = aux
    dense = proposals.logits.new_zeros(())
    if proposals.dense is not None and weights.dense > 0:
        if proposals.grid is None:
            raise ValueError("proposer_loss: dense proposals without their grid")
        dense = weighted(dense_loss(proposals.dense[0], proposals.dense[1], proposals.grid, targets, weights))
    out["dense"] = dense
    out["total"] = weighted(out) + aux + weights.dense * dense
    return out
