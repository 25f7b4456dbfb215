"""Target-Specific Tracked Features (TSF): the offline target-track pipeline.

For each (video, expression): the target's box in every frame (annotation, or a zero-shot detector on a
reference frame followed by a tracker), crops of the target from the original frames, appearance + geometry
features, K-means, and the K medoid crops stored as ``(frame index, box)`` in one cache file per shard.

Modules: ``detect`` (reference-frame detectors), ``track`` (box trackers), ``crops`` (cutting crops; what the
model's injection calls), ``features`` (crop features), ``cluster`` (K-means + medoids), ``cache`` (shard
files), ``build`` (the driver), ``commands`` (``sparrow tsf build|show``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TSFEntry": "sparrow.tsf.cache",
    "TSFRecord": "sparrow.tsf.cache",
    "read_tsf_cache": "sparrow.tsf.cache",
    "crop_box": "sparrow.tsf.crops",
    "tsf_crop_images": "sparrow.tsf.crops",
    "tsf_crops_for": "sparrow.tsf.crops",
    "CachedCrops": "sparrow.tsf.crops",
    "BuildConfig": "sparrow.tsf.build",
    "build_tsf": "sparrow.tsf.build",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy, so that `sparrow --help` does not import cv2/torch
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sparrow.tsf' has no attribute {name!r}")
