"""Where the ``[BOX]`` and ``[SEG]`` embeddings are read, and how they pair up (VLM-agnostic).

Convention (LISA): the embedding of a special token is the last-layer hidden state of
the position whose *next* token is that token. During teacher forcing that is position ``j`` with
``input_ids[j + 1] == token``; during generation it is the state that produced the token.

Pairing: each ``[SEG]`` pairs with the ``[BOX]`` that precedes it when no other ``[SEG]`` lies between them;
a ``[SEG]`` without a ``[BOX]`` gets ``None`` (it is decoded from ``[SEG]`` alone); a ``[BOX]`` not followed by a
``[SEG]`` is an orphan and is counted, never silently re-aligned (the authors' release re-aligns by index).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PromptPairs:
    """Positions (indices into the state sequence) of each target's ``[BOX]`` and ``[SEG]`` states."""

    box_positions: list[int | None]
    seg_positions: list[int]
    orphan_boxes: int = 0

    def __len__(self) -> int:
        return len(self.seg_positions)


def pair_prompt_tokens(next_tokens: list[int] | torch.Tensor, box_id: int, seg_id: int) -> PromptPairs:
    """Pair ``[BOX]``/``[SEG]`` occurrences of one sequence.

    ``next_tokens[j]`` is the token predicted from state ``j`` (teacher forcing: ``input_ids[1:]``;
    generation: the generated tokens). Returned positions index the states.
    """
    tokens = next_tokens.tolist() if isinstance(next_tokens, torch.Tensor) else list(next_tokens)
    boxes: list[int | None] = []
    segs: list[int] = []
    pending: int | None = None
    orphans = 0
    for j, tok in enumerate(tokens):
        if tok == box_id:
            if pending is not None:
                orphans += 1
            pending = j
        elif tok == seg_id:
            boxes.append(pending)
            segs.append(j)
            pending = None
    if pending is not None:
        orphans += 1
    return PromptPairs(box_positions=boxes, seg_positions=segs, orphan_boxes=orphans)


def teacher_forced_pairs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, box_id: int, seg_id: int
) -> list[PromptPairs]:
    """Pairs for each row of a right- or left-padded batch ``[B, L]``; positions index ``hidden[b, :]``."""
    out = []
    for ids, mask in zip(input_ids, attention_mask):
        next_tokens = torch.where(mask[1:].bool(), ids[1:], torch.full_like(ids[1:], -1))
        out.append(pair_prompt_tokens(next_tokens, box_id, seg_id))
    return out


def gather_states(states: torch.Tensor, positions: list[int | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``states[p]`` for each position (zeros where None) -> ``([N, d], present [N] bool)``."""
    d = states.shape[-1]
    if not positions:
        return states.new_zeros((0, d)), torch.zeros(0, dtype=torch.bool, device=states.device)
    present = torch.tensor([p is not None for p in positions], device=states.device)
    index = torch.tensor([p if p is not None else 0 for p in positions], device=states.device)
    picked = states[index] * present[:, None].to(states.dtype)
    return picked, present
