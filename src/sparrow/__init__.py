"""SPARROW: pixel-grounded video understanding.

Quick use::

    import sparrow
    model = sparrow.load("tiny")                 # or a folder written by save_pretrained
    result = model.segment("video.mp4", "the red circle moving left")
    result.masks  # bool [T, H, W]

Heavy modules (torch, transformers) are imported only when a function needs them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(name_or_path: str = "default", **kwargs: Any):
    """Load a SPARROW model: ``"default"`` (the bundled model), ``"tiny"`` (random tiny preset) or a folder."""
    from sparrow.model.loading import load_model

    return load_model(name_or_path, **kwargs)
