"""``[BOX]``-conditioned choice of one tracklet for the whole clip (track-level selection, docs/architecture.md §6
item 19; the tracklets come from ``model/tracklets.py``).

For ``Q`` ``[BOX]`` embeddings ``E [Q, embed_dim]`` and ``N`` tracklets with appearance ``A [N, appearance_dim]``
(mean proposal key) and geometry ``G [N, trajectory_dim]`` (``trajectory_features``):

    h = GELU(E W_q [+ R(words)] + LayerNorm(A) W_a [+ MLP(S)] + MLP(G))   [Q, N, hidden]   (no normalisation of G)
    L = w2 . GELU(W_1 h)                                                  [Q, N]

``S [N, silhouette_dim]`` (``silhouette_dim > 0``, the last columns of the appearance input) is the tracklet's mean
mask inside its box (``SparrowConfig.track_silhouette``): the shape, which averaged features keep poorly.

``R`` (``question_dim > 0``) is a :class:`~sparrow.model.question_reader.QuestionReader` of the question's token
embeddings ``[Q, L, question_dim]``: the words reach the selector directly, beside the ``[BOX]`` embedding.

The sum inside the first non-linearity makes the score a function of query *and* tracklet (a conjunction such as
"red and moving left"), where the per-frame selector's bilinear score ``(E W_q) . K`` is a linear classifier of
each key. On SynthRef with a perfect reading of the words (a bag of words as ``E``) and the ground-truth objects as
tracklets, this scorer picks the target on 69 % of the VLM's frames after 400 training videos, against 32-38 % for
the per-frame bilinear selector (docs/results.md, "Track-level selection").

Training: :func:`track_selection_loss`, ``-log sum_{positives} softmax(L)`` over a clip's tracklets, the positives
being the tracklets that cover the target on the most frames and the target's other fragments left out of the
softmax (``tracklets.tracklet_labels``). :func:`track_membership_loss` (``loss.track_membership``) adds a binary
cross-entropy per tracklet, so that ``sigmoid(L)`` says whether a tracklet belongs to the answer on its own: an
expression may name several objects (``tracklets.object_tracklet_labels``), and inference keeps every tracklet above
``SparrowConfig.track_set_threshold`` beside the best one (docs/architecture.md §6 item 22).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparrow.model.question_reader import QuestionReader

__all__ = ["TrackSelector", "select_members", "track_membership_loss", "track_selection_loss"]


class TrackSelector(nn.Module):
    """Score tracklets for ``[BOX]`` embeddings (module docstring)."""

    def __init__(
        self,
        embed_dim: int,
        appearance_dim: int,
        trajectory_dim: int,
        hidden: int = 256,
        question_dim: int = 0,
        silhouette_dim: int = 0,
    ) -> None:
        super().__init__()
        if (trajectory_dim - 8) % 5 or trajectory_dim <= 8:
            raise ValueError(f"trajectory_dim must be 5 T + 8 (tracklets.trajectory_dim), got {trajectory_dim}")
        self.trajectory_dim = trajectory_dim
        self.frames = (trajectory_dim - 8) // 5  # the number of linked frames the selector was built for
        self.query = nn.Linear(embed_dim, hidden)
        self.appearance = nn.Sequential(nn.LayerNorm(appearance_dim), nn.Linear(appearance_dim, hidden))
        # no LayerNorm here: it would normalise each tracklet's geometry by its own mean and spread, and where an
        # object is is what position expressions ask (the features are already in [0, 1] or a few units)
        self.trajectory = nn.Sequential(nn.Linear(trajectory_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.score = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.reader = QuestionReader(question_dim, hidden) if question_dim else None
        self.silhouette_dim = silhouette_dim
        self.silhouette = (
            nn.Sequential(nn.Linear(silhouette_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
            if silhouette_dim
            else None
        )

    def forward(
        self,
        box_embeddings: Tensor | None,
        appearance: Tensor,
        trajectory: Tensor,
        words: Tensor | None = None,
        word_mask: Tensor | None = None,
    ) -> Tensor:
        """``box_embeddings [Q, embed_dim]``, ``appearance [N, appearance_dim + silhouette_dim]``, ``trajectory
        [N, trajectory_dim]`` -> logits ``[Q, N]`` (``[Q, 0]`` for a clip without tracklets). A selector with a
        reader also takes the question's token embeddings ``words [Q, L, question_dim]`` and ``word_mask [Q, L]``;
        ``box_embeddings`` may then be None (the words alone: selector pretraining,
        ``train/selector_pretraining.py``)."""
        dtype = self.query.weight.dtype
        if self.reader is not None and (words is None or word_mask is None):
            raise ValueError("this track selector reads the question: pass words and word_mask")
        if box_embeddings is None and self.reader is None:
            raise ValueError("a track selector without a question reader needs the [BOX] embeddings")
        terms = [] if box_embeddings is None else [self.query(box_embeddings.to(dtype))]
        if self.reader is not None:
            terms.append(self.reader(words, word_mask))
        q = torch.stack(terms).sum(0)  # [Q, h]
        appearance = appearance.to(dtype)
        if self.silhouette is not None:
            appearance, shape = appearance.split([appearance.shape[-1] - self.silhouette_dim, self.silhouette_dim], -1)
        k = self.appearance(appearance) + self.trajectory(trajectory.to(dtype))  # [N, h]
        if self.silhouette is not None:
            k = k + self.silhouette(shape)
        return self.score(q[:, None] + k[None])[..., 0]


def track_selection_loss(logits: Tensor, positive: Tensor, ignore: Tensor | None = None) -> Tensor:
    """``-log sum_{positive} softmax(logits)`` averaged over the rows that have a positive; ``logits, positive
    [Q, N]``. ``ignore [Q, N]`` (optional) leaves tracklets out of the softmax: the other fragments of the target
    (``tracklets.tracklet_labels``), which are neither the answer nor another object. Rows without a positive (the
    target on no tracklet) contribute nothing; all such rows give 0 with a gradient path, so a batch can always
    back-propagate."""
    has = positive.any(-1)
    if not bool(has.any()):
        return logits.sum() * 0.0
    lg = logits[has].float()
    if ignore is not None:
        lg = lg.masked_fill(ignore[has] & ~positive[has], float("-inf"))
    pos = lg.masked_fill(~positive[has], float("-inf"))
    return (torch.logsumexp(lg, -1) - torch.logsumexp(pos, -1)).mean()


def track_membership_loss(logits: Tensor, positive: Tensor, ignore: Tensor | None = None) -> Tensor:
    """Binary cross-entropy of ``sigmoid(logits)`` against ``positive`` (``[Q, N]``), over the tracklets not in
    ``ignore`` (the positives always count), averaged per row and then over the rows that have a positive; 0 with a
    gradient path when no row has one."""
    has = positive.any(-1)
    if not bool(has.any()):
        return logits.sum() * 0.0
    lg, pos = logits[has].float(), positive[has]
    keep = torch.ones_like(pos) if ignore is None else pos | ~ignore[has]
    bce = F.binary_cross_entropy_with_logits(lg, pos.float(), reduction="none") * keep
    return (bce.sum(-1) / keep.sum(-1).clamp(min=1)).mean()


def select_members(logits: Tensor, threshold: float) -> list[int]:
    """The tracklets an answer takes from its logits ``[N]`` (N >= 1): the best one, then, when ``threshold`` > 0,
    every other whose ``sigmoid`` exceeds it, by decreasing score."""
    order = torch.argsort(logits.float(), descending=True).tolist()
    if threshold <= 0:
        return order[:1]
    probs = torch.sigmoid(logits.float())
    return order[:1] + [i for i in order[1:] if float(probs[i]) > threshold]
