"""A direct reading of the question for the track selector (docs/architecture.md §6 item 20).

The ``[BOX]`` state of the language model is what the method selects with, but on this project's training budget it
barely depends on the query (docs/results.md: sensitivity 1-6 %, a selector on the frozen ``[BOX]`` state no better
than objectness). :class:`QuestionReader` gives the track selector the sentence itself: the language model's own
input embeddings of the question's tokens ``X [Q, L, token_dim]`` (frozen: the same table the language model reads)
go through one small transformer layer with learned positions, and ``heads`` attention-pooling heads read them out::

    H = Encoder(LayerNorm(X) W_in + P)             [Q, L, hidden]
    a_h = softmax_L(H w_h)   (padding masked)       [Q, L]  per head h
    r = W_out concat_h(sum_L a_h H_h)               [Q, hidden]

where ``H_h`` is head ``h``'s slice of the hidden width. The result is added to the selector's projection of the
``[BOX]`` embedding (``track_selector.TrackSelector``), so ``[BOX]`` can still add what the words alone do not say.
Because it needs neither video nor the language model's forward pass, the reader and the selector train on cached
tracklets of thousands of clips (``train/selector_pretraining.py``) at a fraction of a vlm step's cost.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["QuestionReader"]


class QuestionReader(nn.Module):
    """Question token embeddings -> a query for the track selector (module docstring)."""

    def __init__(self, token_dim: int, hidden: int, heads: int = 4, max_tokens: int = 64) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.max_tokens = max_tokens
        # a language model's input embeddings are small (std ~0.02-0.1): normalised, the words are not drowned by
        # the positions
        self.project = nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, hidden))
        self.position = nn.Embedding(max_tokens, hidden)
        self.encoder = nn.TransformerEncoderLayer(
            hidden, heads, 2 * hidden, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.norm = nn.LayerNorm(hidden)
        self.pool = nn.Linear(hidden, heads)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """``tokens [Q, L, token_dim]``, ``mask [Q, L]`` bool (True: a question token; every row needs one) ->
        ``[Q, hidden]``. Tokens past ``max_tokens`` are cut off."""
        if tokens.shape[:2] != mask.shape:
            raise ValueError(f"tokens {tuple(tokens.shape)} and mask {tuple(mask.shape)} disagree")
        if not bool(mask.any(-1).all()):
            raise ValueError("every question needs at least one token")
        tokens, mask = tokens[:, : self.max_tokens], mask[:, : self.max_tokens]
        dtype = self.position.weight.dtype
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.project(tokens.to(dtype)) + self.position(positions)[None]
        x = self.norm(self.encoder(x, src_key_padding_mask=~mask))  # [Q, L, h]
        weights = self.pool(x).masked_fill(~mask[..., None], float("-inf")).softmax(1)  # [Q, L, heads]
        q, length, hidden = x.shape
        pooled = torch.einsum("qlk,qlkd->qkd", weights, x.view(q, length, self.heads, hidden // self.heads))
        return self.out(pooled.reshape(q, hidden))
