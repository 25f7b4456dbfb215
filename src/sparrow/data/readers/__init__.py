"""Readers of benchmark and source layouts into the one schema (:class:`sparrow.data.schema.VideoRecord`).

One module per official layout; each has ``SPLITS``, ``EVAL_SPLITS`` (splits that must not leak into training),
``splits(root)`` (those present) and ``read(root, split)``. Readers stream: opening a split lists files and parses
small metadata; masks and boxes are read when an object is first accessed. :func:`read_dataset` dispatches on the
format name used by ``sparrow data check|convert --format``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from sparrow.errors import SparrowError

if TYPE_CHECKING:
    from sparrow.data.schema import VideoRecord

# format name -> (module, read function)
FORMATS: dict[str, tuple[str, str]] = {
    "mevis": ("sparrow.data.readers.mevis_layout", "read"),
    "refytvos": ("sparrow.data.readers.refvos", "read"),
    "refdavis": ("sparrow.data.readers.refvos", "read_refdavis"),
    "revos": ("sparrow.data.readers.revos", "read"),
    "a2d": ("sparrow.data.readers.a2d", "read"),
    "lasot": ("sparrow.data.readers.lasot", "read"),
    "got10k": ("sparrow.data.readers.got10k", "read"),
    "hcstvg": ("sparrow.data.readers.hcstvg", "read"),
    "vidstg": ("sparrow.data.readers.vidstg", "read"),
    "vidsentence": ("sparrow.data.readers.vidsentence", "read"),
    "refsav": ("sparrow.data.readers.refsav", "read"),
    "curated": ("sparrow.data.readers.curated", "read"),
}


def reader_module(format: str) -> ModuleType:
    if format not in FORMATS:
        raise SparrowError(f"unknown dataset format {format!r}; supported: {', '.join(FORMATS)}")
    return importlib.import_module(FORMATS[format][0])


def available_splits(root: str | Path, format: str) -> list[str]:
    """The splits of ``format`` present under ``root``."""
    if not Path(root).is_dir():
        raise SparrowError("no such dataset folder", root)
    return reader_module(format).splits(root)


def eval_splits(format: str) -> tuple[str, ...]:
    """Splits of ``format`` used for evaluation (they must not overlap a training split)."""
    return tuple(reader_module(format).EVAL_SPLITS)


def read_dataset(root: str | Path, format: str, split: str | None = None) -> list[VideoRecord]:
    """Records of one split of a dataset in ``format`` (``split`` None: the only split present, else an error)."""
    module = reader_module(format)
    if split is None:
        present = available_splits(root, format)
        if len(present) != 1:
            raise SparrowError(f"choose a split with --split (found {', '.join(present) or 'none'})", root)
        split = present[0]
    return getattr(module, FORMATS[format][1])(root, split)
