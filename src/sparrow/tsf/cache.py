"""The TSF cache: one JSON-lines file per shard, mapping (video_id, exp_id) -> K x (frame index, box) + status.

File ``tsf-<i>-of-<n>.jsonl`` (``i``, ``n`` zero-padded to 5 digits). Line 1 is a header::

    {"format": "sparrow-tsf", "version": 1, "k": 4, "detector": "gt", "tracker": "gt", "shard": [i, n]}

then one line per (video, expression)::

    {"video": "v0", "exp": "0", "status": "ok", "reason": null, "source": "annotation", "num_frames": 30,
     "entries": [[frame, x0, y0, x1, y1], ...]}                  # boxes in pixels of the original frame

``status`` is ``"ok"`` or ``"failed"`` (then ``reason`` says why and ``entries`` is empty). Records are
appended one line at a time (flushed and fsynced), so a killed run loses at most the line being written; a
torn last line (no newline) is not a record: readers skip it and :class:`ShardWriter` cuts it off on resume.
The header is written atomically. Within a file a later line for the same key replaces an earlier one
(``--retry-failed``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typing_extensions import Self

from sparrow.atomic import atomic_file
from sparrow.errors import SparrowError

FORMAT = "sparrow-tsf"
VERSION = 1
Key = tuple[str, str]


@dataclass(frozen=True)
class TSFEntry:
    """One TSF crop: a frame index of the video and the target's box ``[x0, y0, x1, y1]`` there (pixels)."""

    frame: int
    box: tuple[float, float, float, float]


@dataclass
class TSFRecord:
    """The cached TSF of one (video, expression)."""

    video_id: str
    exp_id: str
    status: str  # "ok" | "failed"
    entries: list[TSFEntry] = field(default_factory=list)
    reason: str | None = None
    source: str | None = None  # "annotation" | "tracked"
    num_frames: int | None = None

    @property
    def key(self) -> Key:
        return (self.video_id, self.exp_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "video": self.video_id,
            "exp": self.exp_id,
            "status": self.status,
            "reason": self.reason,
            "source": self.source,
            "num_frames": self.num_frames,
            "entries": [[e.frame, *(round(float(v), 2) for v in e.box)] for e in self.entries],
        }

    @classmethod
    def from_json(cls, obj: Any, where: str) -> TSFRecord:
        if not isinstance(obj, dict) or not {"video", "exp", "status", "entries"} <= set(obj):
            raise SparrowError(f"{where}: a TSF record needs 'video', 'exp', 'status' and 'entries'")
        if obj["status"] not in ("ok", "failed"):
            raise SparrowError(f"{where}: status must be 'ok' or 'failed', got {obj['status']!r}")
        entries = []
        for e in obj["entries"]:
            if not isinstance(e, list) or len(e) != 5:
                raise SparrowError(f"{where}: an entry must be [frame, x0, y0, x1, y1], got {e!r}")
            entries.append(TSFEntry(int(e[0]), (float(e[1]), float(e[2]), float(e[3]), float(e[4]))))
        return cls(
            video_id=str(obj["video"]),
            exp_id=str(obj["exp"]),
            status=obj["status"],
            entries=entries,
            reason=obj.get("reason"),
            source=obj.get("source"),
            num_frames=obj.get("num_frames"),
        )


def shard_file_name(index: int, count: int) -> str:
    return f"tsf-{index:05d}-of-{count:05d}.jsonl"


def _dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def read_shard(path: str | Path) -> tuple[dict[str, Any], dict[Key, TSFRecord], int]:
    """Read one shard file: ``(header, records by key, number of valid bytes)``.

    A torn last line (no final newline) is left out; the byte count says where the complete lines end.
    Raises :class:`SparrowError` naming the file and line for anything else that is not a valid record.
    """
    path = Path(path)
    if not path.exists():
        raise SparrowError("no such TSF cache file", path)
    data = path.read_bytes()
    valid = data.rfind(b"\n") + 1
    lines = data[:valid].decode("utf-8").splitlines()
    if not lines:
        raise SparrowError("TSF cache file has no header line", path)
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError as exc:
        raise SparrowError(f"line 1: header is not valid JSON ({exc.msg})", path) from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SparrowError(f"not a SPARROW TSF cache (line 1 must have format {FORMAT!r})", path)
    if header.get("version") != VERSION:
        raise SparrowError(f"TSF cache version {header.get('version')} is not supported (expected {VERSION})", path)
    records: dict[Key, TSFRecord] = {}
    for n, line in enumerate(lines[1:], start=2):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SparrowError(f"line {n}: not valid JSON ({exc.msg})", path) from exc
        rec = TSFRecord.from_json(obj, f"{path}:{n}")
        records[rec.key] = rec
    return header, records, valid


def shard_files(path: str | Path) -> list[Path]:
    """The shard files of a cache: ``path`` itself if it is a file, else the ``tsf-*.jsonl`` in the folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SparrowError("no such TSF cache file or folder", path)
    files = sorted(path.glob("tsf-*-of-*.jsonl"))
    if not files:
        raise SparrowError("folder holds no TSF shard files (tsf-*-of-*.jsonl)", path)
    return files


def read_tsf_cache(path: str | Path) -> dict[Key, TSFRecord]:
    """Read and merge every shard of a cache (a shard file or the folder of shards).

    Where two shards hold the same key, an ``ok`` record wins over a ``failed`` one; two different ``ok``
    records, or shards built with different K, raise :class:`SparrowError`.
    """
    merged: dict[Key, TSFRecord] = {}
    origin: dict[Key, Path] = {}
    k_seen: tuple[int, Path] | None = None
    for f in shard_files(path):
        header, records, _ = read_shard(f)
        if k_seen is not None and header.get("k") != k_seen[0]:
            raise SparrowError(f"shard was built with k={header.get('k')} but {k_seen[1].name} with k={k_seen[0]}", f)
        k_seen = (header.get("k"), f)
        for key, rec in records.items():
            old = merged.get(key)
            if old is None or (old.status == "failed" and rec.status == "ok"):
                merged[key], origin[key] = rec, f
            elif old.status == "ok" and rec.status == "ok" and old.entries != rec.entries:
                raise SparrowError(f"record {key} differs from the one in {origin[key].name}", f)
    return merged


def cache_summary(records: dict[Key, TSFRecord]) -> dict[str, Any]:
    """Counts by status and by source, and the most common failure reasons (up to 10)."""
    status = Counter(r.status for r in records.values())
    source = Counter(r.source for r in records.values() if r.status == "ok")
    reasons = Counter(r.reason for r in records.values() if r.status == "failed")
    return {"total": len(records), "status": dict(status), "source": dict(source), "reasons": reasons.most_common(10)}


class ShardWriter:
    """Append records to one shard file; knows which keys are already done (for resuming).

    On open, an existing file must have the same header (K, detector, tracker, shard and every other
    option stored there) or :class:`SparrowError` is raised; a torn last line is cut off.
    ``done`` holds the keys already recorded
    (``ok`` ones only when ``retry_failed``). Use as a context manager.
    """

    def __init__(self, path: str | Path, header: dict[str, Any], retry_failed: bool = False) -> None:
        self.path = Path(path)
        header = {"format": FORMAT, "version": VERSION, **header}
        if self.path.exists():
            old, records, valid = read_shard(self.path)
            for key in sorted(set(old) | set(header)):
                if _dump(old.get(key)) != _dump(header.get(key)):
                    raise SparrowError(
                        f"cache was built with {key}={old.get(key)!r}, this run asks for {header.get(key)!r}; "
                        "use another --out or the same options",
                        self.path,
                    )
            if valid < self.path.stat().st_size:
                os.truncate(self.path, valid)
        else:
            records = {}
            with atomic_file(self.path) as handle:
                handle.write(_dump(header) + "\n")
        self.records = records
        self.done = {k for k, r in records.items() if r.status == "ok" or not retry_failed}
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: TSFRecord) -> None:
        """Append one record durably (flush + fsync)."""
        self._handle.write(_dump(record.to_json()) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records[record.key] = record
        self.done.add(record.key)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
