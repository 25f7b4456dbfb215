"""The engine interface and the local engine (see the package doc)."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sparrow.errors import SparrowError


@dataclass
class ItemResult:
    """What one item gave: ``status`` "ok" (with ``value``) or "failed" (with ``reason``), and attempts made."""

    item: Any
    status: str
    value: Any = None
    reason: str | None = None
    attempts: int = 1


@dataclass
class EngineOptions:
    """How to run: ``engine`` "local" or "ray"; Ray's ``address`` (None: start a local instance with
    ``workers`` CPUs), ``gpus_per_item`` for GPU stages, ``retries`` for transient failures, and extra
    ``ray_init`` keyword arguments (e.g. ``object_store_memory``, ``_temp_dir``)."""

    engine: str = "local"
    address: str | None = None
    workers: int = 1
    retries: int = 2
    gpus_per_item: float = 0.0
    ray_init: dict[str, Any] = field(default_factory=dict)


def call_with_retries(fn: Callable[[Any], Any], item: Any, retries: int) -> ItemResult:
    """``fn(item)`` with up to ``retries`` repeats of a transient failure (any exception but SparrowError)."""
    attempts = 0
    while True:
        attempts += 1
        try:
            return ItemResult(item, "ok", value=fn(item), attempts=attempts)
        except SparrowError as exc:
            return ItemResult(item, "failed", reason=str(exc), attempts=attempts)
        except Exception as exc:  # noqa: BLE001 - a transient failure is retried, then recorded (not swallowed)
            if attempts > retries:
                last = traceback.format_exception_only(type(exc), exc)[-1].strip()
                return ItemResult(item, "failed", reason=f"after {attempts} attempts: {last}", attempts=attempts)
