"""SPARROW: pixel-grounded video understanding.

Quick use::

    import sparrow
    model = sparrow.load("default")              # a SegmentationPipeline; or "tiny", "real", a model folder
    result = model.segment("video.mp4", "the red circle moving left")
    result.masks  # bool [T, H, W]

Heavy modules (torch, transformers) are imported only when a function needs them.
"""

from __future__ import annotations

from typing import Any

from sparrow.version import __version__

__all__ = ["__version__", "load"]


def load(name_or_path: str = "default", **kwargs: Any):
    """A :class:`~sparrow.pipeline.SegmentationPipeline`: ``"default"`` (the bundled model), ``"tiny"`` (random tiny
    preset), ``"real"`` or a model folder. Imported on call so that ``import sparrow`` stays light (no torch)."""
    from sparrow.pipeline import load as load_pipeline

    return load_pipeline(name_or_path, **kwargs)
