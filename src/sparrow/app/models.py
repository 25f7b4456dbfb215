"""The models the app offers, each loaded once on first use and shared by every session.

Runs are serialised by the app's queue (one at a time per model pool), so a loaded pipeline is never used by two
requests at once; the lock only guards loading.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

Loader = Callable[..., Any]


def default_loader(name: str, device: str | None = None, dtype: str | None = None) -> Any:
    """:func:`sparrow.pipeline.load` with the device and dtype the app was started with."""
    from sparrow.pipeline import load

    return load(name, device=device, dtype=dtype)


class ModelPool:
    """Named models (``default``, ``tiny``, ``real`` or saved folders), loaded lazily by ``loader``."""

    def __init__(
        self, names: Sequence[str], device: str | None = None, dtype: str | None = None, loader: Loader = default_loader
    ) -> None:
        if not names:
            raise ValueError("ModelPool needs at least one model name")
        self.names = list(dict.fromkeys(names))
        self.device, self.dtype, self._loader = device, dtype, loader
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        """The pipeline for ``name`` (loaded now if it is not yet)."""
        if name not in self.names:
            raise KeyError(f"model {name!r} is not offered by this app (offered: {self.names})")
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = self._loader(name, device=self.device, dtype=self.dtype)
            return self._loaded[name]

    def preload(self, name: str, pipeline: Any) -> None:
        """Register an already loaded pipeline under ``name`` (tests, or a model built in the same process)."""
        with self._lock:
            if name not in self.names:
                self.names.append(name)
            self._loaded[name] = pipeline
