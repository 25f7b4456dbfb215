"""``sparrow segment --batch manifest.jsonl``: many (video, query) pairs with one model load.

The manifest has one JSON object a line: ``{"video": "clips/a.mp4", "query": "the red car", "out": "runs/a"}``
(relative paths are relative to the manifest's folder; blank lines and lines starting with ``#`` are skipped).
Videos are checked first (a line whose video is missing or unreadable fails without loading the model), then
every pair runs through :func:`~sparrow.pipeline.stream.segment_to_folder` with ``resume=True``: a finished
``out`` is skipped, an interrupted one continues. A line that fails (malformed, a missing or unreadable video, an
empty query) is recorded with its message and the rest go on. The per-line outcome goes to
``<manifest>.report.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sparrow.atomic import atomic_file
from sparrow.data.video_io import Video
from sparrow.errors import SparrowError
from sparrow.output import check_output
from sparrow.pipeline.stream import is_finished, segment_to_folder


@dataclass(frozen=True)
class BatchItem:
    """One manifest line."""

    line: int
    video: Path
    query: str
    out: Path


@dataclass
class BatchReport:
    """Per-line outcome: ``written`` and ``finished`` (already done) line numbers, ``failed`` ``{line: message}``."""

    written: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"{len(self.written)} written, {len(self.finished)} already finished, {len(self.failed)} failed"
        if self.failed:
            text += " (lines " + ", ".join(str(n) for n in sorted(self.failed)) + ")"
        return text


def read_manifest(path: str | Path) -> tuple[list[BatchItem], dict[int, str]]:
    """The manifest's items and its malformed lines ``{line number: problem}`` (numbers start at 1)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SparrowError(f"cannot read the manifest: {exc}", path) from exc
    base = path.parent
    items: list[BatchItem] = []
    bad: dict[int, str] = {}
    outs: dict[Path, int] = {}
    for n, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as exc:
            bad[n] = f"not JSON ({exc.msg} at column {exc.colno})"
            continue
        if not isinstance(entry, dict):
            bad[n] = "not a JSON object"
            continue
        problems = [
            key for key in ("video", "query", "out") if not isinstance(entry.get(key), str) or not entry[key].strip()
        ]
        if problems:
            bad[n] = "needs non-empty strings for " + ", ".join(problems)
            continue
        out = (base / entry["out"]).resolve()
        if out in outs:
            bad[n] = f"out {entry['out']!r} is also the output of line {outs[out]}"
            continue
        outs[out] = n
        items.append(BatchItem(n, (base / entry["video"]), entry["query"], out))
    if not items and not bad:
        raise SparrowError("the manifest has no lines", path)
    return items, bad


def run_batch(
    manifest: str | Path,
    load_pipeline: Callable[[], Any],
    model_id: str,
    options: dict[str, Any] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
    recognise: Callable[[Path], bool] | None = None,
) -> BatchReport:
    """Run every line of ``manifest``; ``load_pipeline()`` is called once, and only if some line has work to do.

    ``options`` go to :func:`segment_to_folder` (mode, key_frame, self_tsf, checkpoint_every). Each ``out`` must
    pass :func:`sparrow.output.check_output` (``recognise``: an older result layout); a line whose ``out`` is a
    user's folder fails. Returns the report, also written to ``<manifest>.report.json``."""
    manifest = Path(manifest)
    items, bad = read_manifest(manifest)
    report = BatchReport(failed=dict(bad))
    for n, message in bad.items():
        log(f"line {n}: {message}")
    todo = []
    for item in items:
        if is_finished(item.out):
            report.finished.append(item.line)
            continue
        try:  # unreadable videos and forbidden outputs fail here, before (and without) a model load
            Video.open(item.video).close()
            check_output(item.out, "segment", mode="replace", inputs=[item.video], recognise=recognise)
        except SparrowError as exc:
            report.failed[item.line] = str(exc)
            log(f"line {item.line}: {exc}")
            continue
        todo.append(item)
    pipeline = load_pipeline() if todo else None
    for i, item in enumerate(todo, start=1):
        try:
            segment_to_folder(
                pipeline,
                item.video,
                item.query,
                item.out,
                model_id=model_id,
                resume=True,
                progress=progress,
                **(options or {}),
            )
        except SparrowError as exc:
            report.failed[item.line] = str(exc)
            log(f"line {item.line}: {exc}")
            continue
        report.written.append(item.line)
        log(f"[{i}/{len(todo)}] line {item.line}: wrote {item.out}")
    with atomic_file(manifest.with_suffix(".report.json")) as handle:
        json.dump({**asdict(report), "failed": {str(k): v for k, v in sorted(report.failed.items())}}, handle, indent=1)
    return report
