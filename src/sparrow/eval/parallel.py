"""Run one scoring function over many sequences, in processes, with results in the input order."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Half the visible CPU cores (at least 1)."""
    return max(1, (os.cpu_count() or 2) // 2)


def run_ordered(
    fn: Callable[[T], R], items: Sequence[T], workers: int | None = None, progress: str | None = None
) -> list[R]:
    """``[fn(x) for x in items]``, spread over ``workers`` processes (1 = in this process).

    The order of the results is the order of ``items`` whatever the worker timing; an exception in a worker
    (including :class:`~sparrow.errors.SparrowError`) propagates to the caller unchanged. ``fn`` must be a
    module-level function and ``items`` picklable. ``progress`` names a tqdm bar (None: no bar).
    """
    from tqdm import tqdm

    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    items = list(items)
    bar = tqdm(total=len(items), desc=progress, disable=progress is None, leave=False)
    try:
        if workers == 1 or len(items) <= 1:
            out = []
            for x in items:
                out.append(fn(x))
                bar.update(1)
            return out
        with ProcessPoolExecutor(max_workers=min(workers, len(items))) as pool:
            out = []
            for r in pool.map(fn, items, chunksize=1):
                out.append(r)
                bar.update(1)
            return out
    finally:
        bar.close()
