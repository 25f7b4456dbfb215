"""The pipeline layer: everything that USES the network on videos, above ``model/`` and below the CLI and app.

``segment.py`` (one video + query -> :class:`SegmentationResult`, :func:`load`), ``prompting.py`` (answer, prompts,
key frame), ``masks.py`` (track / framewise / perframe), ``results.py``, ``writer.py`` (PNG, JSON, overlay),
``infer.py`` (a split into the scorers' layout), ``demo.py``, ``commands.py`` (the ``segment``/``infer``/``demo``
commands). See docs/architecture.md. Names are resolved on first use, so that ``sparrow --help`` (which imports
``commands``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SegmentationPipeline": "sparrow.pipeline.segment",
    "SegmentSession": "sparrow.pipeline.segment",
    "load": "sparrow.pipeline.segment",
    "SegmentationResult": "sparrow.pipeline.results",
    "TargetResult": "sparrow.pipeline.results",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sparrow.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
