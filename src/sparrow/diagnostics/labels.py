"""Ground-truth labels of SynthRef objects for the grounding probes: colour, shape, identity, where, which way.

Every label is read back from a written split (object attributes and the checker's motion predicates in
``sparrow.data.synthref.expressions``), never from a model:

- ``colour`` (6 classes), ``shape`` (6), ``identity`` (36 = colour x shape, ``sparrow.data.synthref.identity``);
- ``quadrant`` of the object's centre on a frame (``top-left`` ... ``bottom-right``), None when the centre lies within
  ``margin`` of a middle line (a viewer could not say);
- ``direction`` over the clip: ``static``, ``left``, ``right``, ``up`` or ``down`` when that motion predicate is
  true (world motion, as the expressions say it), None otherwise (bouncing, zig-zag, unsure, ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sparrow.data.schema import VideoRecord
from sparrow.data.synthref.expressions import facts_from_record, motion_truth
from sparrow.data.synthref.identity import identity_index

__all__ = ["DIRECTIONS", "QUADRANTS", "ObjectLabels", "bag_of_words", "object_labels", "quadrant", "vocabulary"]

QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
DIRECTIONS = ("static", "left", "right", "up", "down")


@dataclass(frozen=True)
class ObjectLabels:
    """Labels of one object; ``centres [T, 2]`` frame pixels (x, y) on every frame."""

    colour: str
    shape: str
    size: str
    identity: int
    direction: str | None
    centres: np.ndarray


def quadrant(centre: Sequence[float], width: int, height: int, margin: float = 0.08) -> str | None:
    """Quadrant of a centre ``(x, y)``, or None within ``margin`` (fraction of the side) of a middle line."""
    x, y = float(centre[0]) / width, float(centre[1]) / height
    if abs(x - 0.5) < margin or abs(y - 0.5) < margin:
        return None
    return QUADRANTS[2 * int(y > 0.5) + int(x > 0.5)]


def object_labels(record: VideoRecord) -> dict[int, ObjectLabels]:
    """Labels of every object of a SynthRef record (SparrowError from the reader if it is not SynthRef)."""
    facts = facts_from_record(record)
    out = {}
    for obj_id, f in facts.items():
        direction = next((d for d in DIRECTIONS if motion_truth(d, f) is True), None)
        out[obj_id] = ObjectLabels(f.colour, f.shape, f.size, identity_index(f.colour, f.shape), direction, f.centres)
    return out


_WORD = re.compile(r"[a-z\-]+")


def vocabulary(texts: Sequence[str]) -> dict[str, int]:
    """Word -> column of :func:`bag_of_words`, in sorted order over the words of ``texts``."""
    words = sorted({w for t in texts for w in _WORD.findall(t.lower())})
    return {w: i for i, w in enumerate(words)}


def bag_of_words(texts: Sequence[str], vocab: dict[str, int]) -> np.ndarray:
    """L2-normalised word counts ``[N, V]`` float32 (words outside ``vocab`` are dropped)."""
    out = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in _WORD.findall(t.lower()):
            if w in vocab:
                out[i, vocab[w]] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-6)
