"""The Ray engine: one Ray task per item, at most ``2 x workers`` in flight, results collected as they finish.

``ray.init(address=...)`` joins a running cluster (``--address ray://host:10001`` or ``auto``); without an address
a local instance with ``workers`` CPUs is started and shut down at the end. Worker crashes are retried by Ray
(``max_retries``); exceptions inside ``fn`` by :func:`call_with_retries` in the worker. Worker processes are kept
between items, GPU ones too (``max_calls=0``), so what ``fn`` caches per process stays loaded. Output written by ``fn``
must go to storage every node sees (a shared file system) on a multi-node cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sparrow.engine.base import EngineOptions, ItemResult, call_with_retries
from sparrow.errors import SparrowError

RAY_HINT = 'the Ray engine needs Ray: pip install "sparrow-video[ray]" (ray[data]==2.60.0)'


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise SparrowError(RAY_HINT) from exc
    return ray


def run_on_ray(
    fn: Callable[[Any], Any], items: list[Any], options: EngineOptions, on_result: Callable[[ItemResult], None] | None
) -> list[ItemResult]:
    ray = _ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **options.ray_init}
        if options.address:
            ray.init(address=options.address, **kwargs)
        else:
            ray.init(num_cpus=max(1, options.workers), **kwargs)
        started = True
    try:
        # max_calls=0: a worker process runs any number of items, so the models it caches (sparrow infer's pipeline,
        # curate's detector/SAM2) load once per worker; Ray's default for tasks with GPUs is one item per process
        task = ray.remote(num_cpus=1, num_gpus=options.gpus_per_item, max_retries=options.retries, max_calls=0)(
            call_with_retries
        )
        fn_ref = ray.put(fn)
        pending: dict[Any, Any] = {}
        results: list[ItemResult] = []
        queue = list(items)
        limit = 2 * max(1, options.workers)
        while queue or pending:
            while queue and len(pending) < limit:
                item = queue.pop(0)
                pending[task.remote(fn_ref, item, options.retries)] = item
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                item = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died more often than max_retries
                    result = ItemResult(item, "failed", reason=f"ray: {type(exc).__name__}: {str(exc)[:200]}")
                if on_result is not None:
                    on_result(result)
                results.append(result)
        return results
    finally:
        if started:
            ray.shutdown()
