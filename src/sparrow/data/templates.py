"""Question and answer templates for referring-segmentation training samples.

Answers hold one ``[SEG]`` per target slot; :func:`insert_box_tokens` then puts ``[BOX]`` before every bare
``[SEG]``, so every answer the model is trained on reads ``... [BOX] [SEG] ...``. Template choice is
driven by a caller's :class:`numpy.random.Generator`, so it is seeded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

SEG_TOKEN = "[SEG]"
BOX_TOKEN = "[BOX]"

REFERRING_QUESTIONS: tuple[str, ...] = (
    "Can you segment {phrase} in this video?",
    "Please locate {phrase} in this video.",
    "What is {phrase} in this video? Please respond with segmentation masks.",
    "Perform spatial segmentation of {phrase}",
)
REFERRING_ANSWERS: tuple[str, ...] = (
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
)

_BARE_SEG = re.compile(r"(?<!\[BOX\] )\[SEG\]")


def insert_box_tokens(answer: str) -> str:
    """Put ``[BOX] `` before every ``[SEG]`` not already preceded by it: "Sure, [SEG]." -> "Sure, [BOX] [SEG]."."""
    out = _BARE_SEG.sub(f"{BOX_TOKEN} {SEG_TOKEN}", answer)
    pairs = out.count(f"{BOX_TOKEN} {SEG_TOKEN}")
    if not out.count(SEG_TOKEN) == out.count(BOX_TOKEN) == pairs:  # e.g. "[BOX][SEG]" or a stray "[BOX]"
        raise ValueError(f"answer has a [SEG] that is not paired with [BOX]: {answer!r}")
    return out


def clean_phrase(text: str) -> str:
    """The expression as it goes inside a question: stripped, trailing full stop removed."""
    return " ".join(text.split()).rstrip(".").strip()


@dataclass(frozen=True)
class ReferringTemplates:
    """The template sets a dataset draws from; each question must contain ``{phrase}``, each answer one ``[SEG]``."""

    questions: tuple[str, ...] = REFERRING_QUESTIONS
    answers: tuple[str, ...] = REFERRING_ANSWERS

    def __post_init__(self) -> None:
        if not self.questions or not self.answers:
            raise ValueError("templates need at least one question and one answer")
        for q in self.questions:
            if "{phrase}" not in q:
                raise ValueError(f"question template without {{phrase}}: {q!r}")
        for a in self.answers:
            if a.count(SEG_TOKEN) != 1 or BOX_TOKEN in a:
                raise ValueError(f"answer template must hold exactly one [SEG] and no [BOX]: {a!r}")

    def question(self, phrase: str, rng: np.random.Generator) -> str:
        """A question about ``phrase``; the template is drawn from ``rng``."""
        template = self.questions[int(rng.integers(0, len(self.questions)))]
        return template.format(phrase=clean_phrase(phrase))

    def answer(self, num_slots: int, rng: np.random.Generator) -> str:
        """An answer with ``num_slots`` ``[BOX] [SEG]`` pairs (slots joined with "and" beyond the first)."""
        if num_slots < 1:
            raise ValueError(f"an answer needs at least one slot, got {num_slots}")
        template = self.answers[int(rng.integers(0, len(self.answers)))]
        slots = ", ".join([SEG_TOKEN] * (num_slots - 1)) + (" and " if num_slots > 1 else "") + SEG_TOKEN
        return insert_box_tokens(template.replace(SEG_TOKEN, slots))
