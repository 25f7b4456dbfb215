"""Run one function over many independent items, on this machine or on a Ray cluster, with retries.

``run_items(fn, items, engine="local" | "ray", ...)`` calls ``fn(item)`` for each item and hands each
:class:`ItemResult` to ``on_result`` in the driver as it arrives. ``fn`` must be a picklable top-level function
and items picklable values; ``fn`` should write its own output (so a killed run keeps what finished) and the
caller skips finished items on resume. A :class:`~sparrow.errors.SparrowError` (a data problem: deterministic) is
recorded as failed at once; any other exception is retried up to ``retries`` times, then recorded as failed with
its type and message. Ray is optional (``pip install sparrow-video[ray]``); the local engine needs nothing.
"""

from __future__ import annotations

from sparrow.engine.base import EngineOptions, ItemResult, call_with_retries
from sparrow.engine.runner import run_items

__all__ = ["EngineOptions", "ItemResult", "call_with_retries", "run_items"]
