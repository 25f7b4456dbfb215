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

BLOCK = 1 << 22  # bytes scanned per step (4 MiB)
_STRUCTURAL = np.zeros(256, dtype=bool)  # byte -> is one of {}[]:,
_STRUCTURAL[list(b"{}[]:,")] = True
_DELTA = np.zeros(256, dtype=np.int8)  # byte -> nesting change
_DELTA[list(b"{[")] = 1
_DELTA[list(b"}]")] = -1


class JsonMapIndex:
    """Lazy ``key -> value`` access to one JSON file whose top level is an object.

    ``get(key)`` returns the parsed value or None when the key is absent; ``keys()`` lists the keys in file order.
    The index holds two offsets and a dict slot per key (about 150 bytes), nothing per value. The file must not
    change while the index is used.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._rows: dict[str, int] | None = None
        self._spans = np.zeros((0, 2), dtype=np.int64)

    def _index(self) -> dict[str, int]:
        if self._rows is None:
            if not self.path.is_file():
                raise SparrowError("missing annotation file", self.path)
            self._rows, self._spans = _scan(self.path)
        return self._rows

    def keys(self) -> list[str]:
        return list(self._index())

    def __contains__(self, key: str) -> bool:
        return key in self._index()

    def __len__(self) -> int:
        return len(self._index())

    def get(self, key: str) -> Any:
        row = self._index().get(key)
        if row is None:
            return None
        start, end = (int(v) for v in self._spans[row])
        with open(self.path, "rb") as handle:
            handle.seek(start)
            raw = handle.read(end - start)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SparrowError(f"entry {key!r} is not valid JSON ({exc.msg})", self.path) from exc


def _scan(path: Path) -> tuple[dict[str, int], np.ndarray]:
    """``({key: row}, spans [N, 2])``: byte spans ``[start, end)`` of every top-level value of the JSON object."""
    size = path.stat().st_size
    if size == 0:
        raise SparrowError("empty file where a JSON object was expected", path)
    colons, key_open, key_close, separators = [], [], [], []
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if not mm[: min(size, 4096)].lstrip().startswith(b"{"):
            raise SparrowError("not a JSON object (expected '{' first)", path)
        in_string, depth, carried = False, 0, np.zeros(0, dtype=np.int64)  # carried: last two real quotes
        pos = 0
        while pos < size:
            end = min(size, pos + BLOCK)
            while end < size and mm[end - 1] == 0x5C:  # never split a run of backslashes
                end += 1
            buf = np.frombuffer(mm[pos:end], dtype=np.uint8)
            quotes = _real_quotes(buf) + pos
            structural = np.flatnonzero(_STRUCTURAL[buf]) + pos
            del buf
            before = np.searchsorted(quotes, structural)
            outside = ((before + int(in_string)) % 2) == 0
            structural, before = structural[outside], before[outside]
            chars = np.frombuffer(mm[pos:end], dtype=np.uint8)[structural - pos]
            delta = _DELTA[chars]
            after = depth + np.cumsum(delta, dtype=np.int64)
            top = (after - delta) == 1
            is_colon = top & (chars == 0x3A)
            allq = np.concatenate([carried, quotes])
            n = before[is_colon] + len(carried)
            if np.any(n < 2):
                raise SparrowError(f"malformed JSON object near byte {int(structural[is_colon][0])}", path)
            colons.append(structural[is_colon])
            key_open.append(allq[n - 2])
            key_close.append(allq[n - 1])
            separators.append(structural[top & ((chars == 0x2C) | (chars == 0x7D))])
            carried = allq[-2:]
            in_string = bool((int(in_string) + len(quotes)) % 2)
            depth = int(after[-1]) if len(after) else depth
            pos = end
        if depth != 0 or in_string:
            raise SparrowError("not valid JSON (truncated or unbalanced)", path)
        colon = np.concatenate(colons)
        opened, closed = np.concatenate(key_open), np.concatenate(key_close)
        seps = np.concatenate(separators)
        nxt = np.searchsorted(seps, colon)
        if len(colon) and nxt.max() >= len(seps):
            raise SparrowError("not valid JSON (truncated or unbalanced)", path)
        spans = np.stack([colon + 1, seps[nxt]], axis=1) if len(colon) else np.zeros((0, 2), dtype=np.int64)
        rows: dict[str, int] = {}
        for i, (a, b) in enumerate(zip(opened.tolist(), closed.tolist(), strict=True)):
            raw = mm[a + 1 : b]
            rows[json.loads(mm[a : b + 1]) if 0x5C in raw else raw.decode("utf-8")] = i
    return rows, spans


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
    escaped = slashes[offset % 2 == 0] + 1  # each escaping backslash escapes the byte after it (sorted)
    at = np.minimum(np.searchsorted(escaped, quotes), len(escaped) - 1)
    return quotes[escaped[at] != quotes]
