"""Random access to the entries of a large top-level JSON object without loading the file.

``mask_dict.json`` of MeViS / ReVOS maps ``str(anno_id)`` to a list of COCO RLEs, one per frame: hundreds of MB
for a full split. :class:`JsonMapIndex` scans the file once (in fixed-size blocks, vectorised with NumPy: memory
independent of the file size) for the byte span of each top-level value, then parses only the value asked for.
The scan runs on the first :meth:`JsonMapIndex.get`, not when the index is created.

Escapes are honoured (a quote preceded by an odd run of backslashes is part of a string), so any valid JSON
object works; a file that is not one JSON object (truncated, unbalanced) raises :class:`SparrowError` naming it.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path
from typing import Any

import numpy as np

from sparrow.errors import SparrowError

BLOCK = 1 << 24  # bytes scanned per step (16 MiB)
_OPEN = np.frombuffer(b"{[", dtype=np.uint8)
_CLOSE = np.frombuffer(b"}]", dtype=np.uint8)


class JsonMapIndex:
    """Lazy ``key -> value`` access to one JSON file whose top level is an object.

    ``get(key)`` returns the parsed value or None when the key is absent; ``keys()`` lists the keys in file order.
    The file must not change while the index is used.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._spans: dict[str, tuple[int, int]] | None = None

    def _index(self) -> dict[str, tuple[int, int]]:
        if self._spans is None:
            if not self.path.is_file():
                raise SparrowError("missing annotation file", self.path)
            self._spans = _scan(self.path)
        return self._spans

    def keys(self) -> list[str]:
        return list(self._index())

    def __contains__(self, key: str) -> bool:
        return key in self._index()

    def __len__(self) -> int:
        return len(self._index())

    def get(self, key: str) -> Any:
        span = self._index().get(key)
        if span is None:
            return None
        with open(self.path, "rb") as handle:
            handle.seek(span[0])
            raw = handle.read(span[1] - span[0])
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SparrowError(f"entry {key!r} is not valid JSON ({exc.msg})", self.path) from exc


def _scan(path: Path) -> dict[str, tuple[int, int]]:
    """Byte spans ``[start, end)`` of every top-level value of the JSON object in ``path``."""
    size = path.stat().st_size
    if size == 0:
        raise SparrowError("empty file where a JSON object was expected", path)
    spans: dict[str, tuple[int, int]] = {}
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        first = mm[: min(size, 4096)].lstrip()
        if not first.startswith(b"{"):
            raise SparrowError("not a JSON object (expected '{' first)", path)
        in_string = False
        depth = 0
        last_quotes: list[int] = []  # global positions of the last two real quotes seen
        pending: tuple[str, int] | None = None  # key and value start waiting for the value's end
        pos = 0
        while pos < size:
            end = min(size, pos + BLOCK)
            while end < size and mm[end - 1] == 0x5C:  # never split a run of backslashes
                end += 1
            buf = np.frombuffer(mm[pos:end], dtype=np.uint8)
            quotes = _real_quotes(buf)
            structural = np.flatnonzero(np.isin(buf, np.frombuffer(b"{}[]:,", dtype=np.uint8)))
            before = np.searchsorted(quotes, structural)
            outside = ((before + int(in_string)) % 2) == 0
            structural, before = structural[outside], before[outside]
            chars = buf[structural]
            delta = np.isin(chars, _OPEN).astype(np.int64) - np.isin(chars, _CLOSE).astype(np.int64)
            after = depth + np.cumsum(delta)
            depth_before = after - delta
            top = np.flatnonzero((depth_before == 1) & np.isin(chars, np.frombuffer(b":,}", dtype=np.uint8)))
            for i in top:
                at, char = int(structural[i]), chars[i]
                if char == 0x3A:  # ':' after a key
                    n = int(before[i])
                    pair = [pos + int(q) for q in quotes[max(0, n - 2) : n]]
                    pair = (last_quotes + pair)[-2:]
                    if len(pair) != 2:
                        raise SparrowError(f"malformed JSON object near byte {pos + at}", path)
                    key = json.loads(mm[pair[0] : pair[1] + 1])
                    pending = (key, pos + at + 1)
                elif pending is not None:  # ',' or the closing '}' ends the pending value
                    spans[pending[0]] = (pending[1], pos + at)
                    pending = None
            if len(quotes):
                last_quotes = (last_quotes + [pos + int(q) for q in quotes[-2:]])[-2:]
            in_string = bool((int(in_string) + len(quotes)) % 2)
            depth = int(after[-1]) if len(after) else depth
            pos = end
        if depth != 0 or in_string or pending is not None:
            raise SparrowError("not valid JSON (truncated or unbalanced)", path)
    return spans


def _real_quotes(buf: np.ndarray) -> np.ndarray:
    """Positions of the ``"`` bytes of ``buf`` that are not escaped by an odd run of backslashes before them."""
    quotes = np.flatnonzero(buf == 0x22)
    slashes = np.flatnonzero(buf == 0x5C)
    if len(slashes) == 0 or len(quotes) == 0:
        return quotes
    run_start = np.ones(len(slashes), dtype=bool)
    run_start[1:] = slashes[1:] != slashes[:-1] + 1
    starts = slashes[run_start]
    offset = slashes - starts[np.cumsum(run_start) - 1]
    escaped = slashes[offset % 2 == 0] + 1  # each escaping backslash escapes the byte after it
    return quotes[~np.isin(quotes, escaped)]
