"""Small trained probes for the grounding diagnostics: linear classifiers, proposal selectors, target identifiers.

All are trained with a fixed seed and a fixed recipe on features of one set of videos and scored on another, so a
figure says what a *linear* (or selector-shaped) read-out can get from the features, not what the model does.

- :func:`linear_probe_accuracy`: multinomial logistic regression (standardised inputs, L2, full-batch L-BFGS).
- :func:`selector_logits`: the selection logits of :class:`~sparrow.model.selector.Selector` for a batch of frames
  ``[N, K]`` (equal to ``Selector.forward`` frame by frame; refinement is not needed to pick).
- :func:`train_selector_probe`: a fresh ``Selector`` whose query is any vector (a bag of words, a frozen ``[BOX]``
  embedding), trained on cached proposals with selection BCE (paper labels) + a listwise term
  ``-log sum_{positives} softmax(logits)``.
- :func:`train_identifier`: a bilinear scorer ``(A q) . (B f)`` picking the target among a clip's ground-truth
  objects from their features ``f``, trained with the same listwise loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparrow.model.proposer import sine_embedding
from sparrow.model.selector import Selector, ranking_loss, selection_loss

__all__ = [
    "Identifier",
    "SelectionSet",
    "linear_probe_accuracy",
    "listwise_loss",
    "selector_logits",
    "top1_hits",
    "train_identifier",
    "train_selector_probe",
]


def linear_probe_accuracy(
    x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, l2: float = 1e-3, iterations: int = 100
) -> float:
    """Held-out accuracy of a multinomial logistic regression ``x [N, D] -> y [N]`` (int64 class ids).

    Inputs are standardised with the training mean/std; classes absent from training can never be predicted.
    """
    if len(x_train) == 0 or len(x_test) == 0:
        return float("nan")
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    xtr, xte = (x_train - mean) / std, (x_test - mean) / std
    classes = int(max(y_train.max(), y_test.max())) + 1
    torch.manual_seed(0)
    layer = nn.Linear(xtr.shape[1], classes)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(layer(xtr), y_train) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((layer(xte).argmax(-1) == y_test).float().mean())


@dataclass
class SelectionSet:
    """Frames to select on, all with ``K`` proposals: query vectors ``queries [N, Dq]``; proposal ``boxes [N, K, 4]``,
    objectness ``logits [N, K]``, ``features [N, K, d]``, ``appearance [N, K, A]`` (or None), ``valid [N, K]``;
    ``labels [N, K]`` (1 / 0 / -1 ignore, ``selection_labels``); ``hit [N, K]`` bool: IoU > 0.5 with the target."""

    queries: Tensor
    boxes: Tensor
    logits: Tensor
    features: Tensor
    appearance: Tensor | None
    valid: Tensor
    labels: Tensor
    hit: Tensor

    def __len__(self) -> int:
        return self.queries.shape[0]

    def with_queries(self, queries: Tensor) -> SelectionSet:
        return SelectionSet(
            queries, self.boxes, self.logits, self.features, self.appearance, self.valid, self.labels, self.hit
        )

    def subset(self, index: Tensor) -> SelectionSet:
        pick = lambda t: None if t is None else t[index]
        return SelectionSet(*(pick(getattr(self, f)) for f in self.__dataclass_fields__))


def selector_logits(selector: Selector, data: SelectionSet) -> Tensor:
    """Fused selection logits ``[N, K]`` of one query per frame (invalid proposals ``-inf``), as ``Selector.forward``."""
    q = selector.w_q(data.queries.to(selector.w_q.weight.dtype))  # [N, k]
    k = selector.w_k(data.features.to(q.dtype))  # [N, K, k]
    if selector.appearance_dim:
        k = k + selector.w_a(data.appearance.to(q.dtype)) + selector.w_geo(sine_embedding(data.boxes.to(q.dtype), 32))
    logits = torch.einsum("nc,nkc->nk", q, k) / math.sqrt(selector.key_dim)
    logits = logits + F.logsigmoid(data.logits.to(q.dtype)).clamp(min=math.log(1e-6))
    return logits.masked_fill(~data.valid, float("-inf"))


def listwise_loss(logits: Tensor, positive: Tensor) -> Tensor:
    """``-log sum_{positive} softmax(logits)`` averaged over rows with a positive; ``logits, positive [N, K]``
    (the selector's :func:`~sparrow.model.selector.ranking_loss` with no ignored entries)."""
    return ranking_loss(logits, positive.to(logits.dtype))


def top1_hits(logits: Tensor, hit: Tensor) -> Tensor:
    """Per frame, whether the argmax proposal is a hit: ``[N]`` bool from ``logits, hit [N, K]``."""
    return hit.gather(1, logits.argmax(-1, keepdim=True))[:, 0]


def train_selector_probe(
    data: SelectionSet,
    feature_dim: int,
    appearance_dim: int,
    epochs: int = 20,
    batch: int = 64,
    lr: float = 1e-3,
    key_dim: int = 64,
) -> Selector:
    """A fresh :class:`Selector` (query/key width ``key_dim``; the model's is 256) for queries of size
    ``data.queries.shape[1]``, trained on ``data`` (seed 0)."""
    torch.manual_seed(0)
    selector = Selector(
        embed_dim=data.queries.shape[1], feature_dim=feature_dim, key_dim=key_dim, appearance_dim=appearance_dim
    )
    opt = torch.optim.AdamW(selector.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for start in range(0, len(data), batch):
            part = data.subset(order[start : start + batch])
            logits = selector_logits(selector, part)
            labels = torch.where(part.valid, part.labels, torch.full_like(part.labels, -1.0))
            loss = selection_loss(logits, labels) + listwise_loss(logits, (part.labels > 0.5) & part.valid)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return selector.eval()


class Identifier(nn.Module):
    """Bilinear scorer of candidate objects for a query: ``score = (A q) . (B f) / sqrt(k)``."""

    def __init__(self, query_dim: int, feature_dim: int, key_dim: int = 64) -> None:
        super().__init__()
        self.key_dim = key_dim
        self.a = nn.Linear(query_dim, key_dim)
        self.b = nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, key_dim))

    def forward(self, queries: Tensor, objects: Tensor, valid: Tensor) -> Tensor:
        """``queries [N, Dq]``, ``objects [N, O, Df]``, ``valid [N, O]`` -> scores ``[N, O]`` (invalid ``-inf``)."""
        scores = torch.einsum("nc,noc->no", self.a(queries), self.b(objects)) / math.sqrt(self.key_dim)
        return scores.masked_fill(~valid, float("-inf"))


def train_identifier(
    queries: Tensor, objects: Tensor, valid: Tensor, targets: Tensor, epochs: int = 200, lr: float = 3e-3
) -> Identifier:
    """Train an :class:`Identifier` full-batch (seed 0); ``targets [N, O]`` bool marks each query's objects."""
    torch.manual_seed(0)
    model = Identifier(queries.shape[1], objects.shape[2])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
    for _ in range(epochs):
        loss = listwise_loss(model(queries, objects, valid), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
