"""``run_items``: the one entry point, dispatching to the local loop or to Ray (``engine/ray_engine.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sparrow.engine.base import EngineOptions, ItemResult, call_with_retries
from sparrow.engine.ray_engine import run_on_ray
from sparrow.errors import SparrowError


def run_items(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    options: EngineOptions | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
) -> list[ItemResult]:
    """Run ``fn`` over ``items`` with the engine of ``options``; results in completion order."""
    options = options or EngineOptions()
    items = list(items)
    if options.engine == "local":
        results = []
        for item in items:
            result = call_with_retries(fn, item, options.retries)
            if on_result is not None:
                on_result(result)
            results.append(result)
        return results
    if options.engine == "ray":
        return run_on_ray(fn, items, options, on_result)
    raise SparrowError(f"unknown engine {options.engine!r} (use local or ray)")
