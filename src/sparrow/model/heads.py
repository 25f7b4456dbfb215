"""Language-to-vision heads: project an LLM hidden state at ``[BOX]`` / ``[SEG]`` into SAM2's prompt space.

The paper uses two separate heads, ``W_b`` for ``[BOX]`` and ``W_s`` for ``[SEG]``;
the authors' release shares one. Each head is ``Linear(d_llm, d_llm) -> ReLU -> Linear(d_llm, d_out)``.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["LanguageToVisionHead"]


class LanguageToVisionHead(nn.Module):
    """MLP ``d_llm -> d_llm -> d_out`` applied to the last dimension.

    Args:
        d_llm: hidden size of the language model.
        d_out: size of the vision-side prompt embedding (SAM2's hidden size, 256 for the real model).
    """

    def __init__(self, d_llm: int, d_out: int) -> None:
        super().__init__()
        if d_llm <= 0 or d_out <= 0:
            raise ValueError(f"LanguageToVisionHead sizes must be positive, got d_llm={d_llm}, d_out={d_out}")
        self.d_llm = d_llm
        self.d_out = d_out
        self.fc1 = nn.Linear(d_llm, d_llm)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(d_llm, d_out)

    def forward(self, hidden: Tensor) -> Tensor:
        """``hidden [..., d_llm] -> [..., d_out]``."""
        if hidden.shape[-1] != self.d_llm:
            raise ValueError(f"LanguageToVisionHead expects last dim {self.d_llm}, got shape {tuple(hidden.shape)}")
        return self.fc2(self.act(self.fc1(hidden)))
