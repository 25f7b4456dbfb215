"""The offline TSF builder: (video, expression) -> target track -> crops -> features -> K-means -> K medoids -> cache.

For each expression of each video of this shard:

1. **Track.** The annotated target boxes when the data has them (``source = "annotation"``); otherwise, or
   with ``always_track``, a detector on reference frame(s) and a tracker through the whole video
   (``source = "tracked"``). ``tracker = "gt"`` means annotation only.
2. **Crops** of the target from the original frames at up to ``max_candidates`` evenly spaced track frames.
3. **Features**: appearance (a frozen encoder) joined with box geometry, each standardised.
4. **K-means** (deterministic) and the K medoids (actual track frames), stored as (frame index, box).

Resumable: keys already in the shard's file are skipped. Sharded: ``shard = (i, n)`` takes every n-th video
of the sorted video ids, starting at i, so the shards are disjoint, balanced, and their union is the whole
set; all expressions of a video stay in one shard (one decode per video). A :class:`SparrowError` while
processing one record (corrupt video, missing frame, empty track, detector miss) is recorded as ``failed``
with its reason and the run goes on; any other exception is a bug and stops the run (finished records stay).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sparrow.data.schema import Expression, VideoRecord
from sparrow.data.video_io import sample_indices
from sparrow.errors import SparrowError
from sparrow.tsf.cache import ShardWriter, TSFEntry, TSFRecord, shard_file_name
from sparrow.tsf.cluster import select_medoids
from sparrow.tsf.crops import crop_box
from sparrow.tsf.detect import Detection, GtDetector
from sparrow.tsf.features import AppearanceEncoder, HandcraftedEncoder, geometry_features, joint_features
from sparrow.tsf.track import GtTracker

Box = list[float]


@dataclass
class BuildConfig:
    """Options of one TSF build (those that change the output are stored in the shard header)."""

    k: int = 4
    detector: str = "gt"  # "gt" | "gdino"
    tracker: str = "gt"  # "gt" | "csrt" | "sam2"
    always_track: bool = False  # run detector + tracker even where annotated boxes exist
    crop_size: int = 64  # crop side (pixels) for the appearance features
    margin: float = 0.1  # context margin around the box, as a fraction of its size
    max_candidates: int = 64  # at most this many track frames (evenly spaced) enter K-means
    reference_frames: int = 3  # evenly spaced frames the detector looks at; the best score is the reference
    min_box_side: float = 2.0  # boxes thinner than this (pixels) count as "target absent"
    geometry_weight: float = 1.0
    kmeans_init: str = "kmeans++"
    seed: int = 0

    def header(self, shard: tuple[int, int]) -> dict:
        return {**asdict(self), "shard": list(shard)}


@dataclass
class BuildStats:
    """What one run did: records written (ok / failed), keys skipped as already done, seconds."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0

    @property
    def written(self) -> int:
        return self.ok + self.failed


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as exc:
        raise SparrowError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from exc
    if not (n >= 1 and 0 <= i < n):
        raise SparrowError(f"--shard {text}: need 0 <= i < n")
    return i, n


def shard_records(records: Iterable[VideoRecord], shard: tuple[int, int]) -> list[VideoRecord]:
    """The videos of shard ``(i, n)``: every n-th of the records sorted by video id, starting at i."""
    i, n = shard
    ordered = sorted(records, key=lambda r: r.video_id)
    ids = [r.video_id for r in ordered]
    if len(set(ids)) != len(ids):
        raise SparrowError("two videos share one video id; keys (video, expression) must be unique")
    return ordered[i::n]


class FrameStore:
    """Decoded frames of one video, decoded on first use and kept until the video is done.

    A video that fails to decode fails once: later requests raise the same :class:`SparrowError` without
    decoding again (so a corrupt video costs one attempt, not one per expression).
    """

    def __init__(self, record: VideoRecord) -> None:
        self.record = record
        self.frames: dict[int, np.ndarray] = {}
        self.error: str | None = None

    def get(self, indices: Sequence[int]) -> dict[int, np.ndarray]:
        """``{index: frame [H, W, 3] uint8}`` for ``indices``."""
        if self.error is not None:
            raise SparrowError(self.error)
        missing = sorted({int(t) for t in indices} - set(self.frames))
        if missing:
            try:
                decoded = self.record.load_frames(missing)
            except SparrowError as exc:
                self.error = str(exc)
                raise
            self.frames.update(zip(missing, decoded, strict=True))
        return {int(t): self.frames[int(t)] for t in indices}

    def all(self) -> np.ndarray:
        """``[T, H, W, 3]`` uint8."""
        got = self.get(range(self.record.num_frames))
        return np.stack([got[t] for t in range(self.record.num_frames)])


def medoid_entries(
    get_frames: Callable[[list[int]], Mapping[int, np.ndarray]],
    boxes: Sequence[Box | None],
    frame_size: tuple[int, int],
    config: BuildConfig,
    encoder: AppearanceEncoder | None = None,
) -> list[TSFEntry]:
    """The K medoid ``(frame, box)`` entries of a track: crops of at most ``config.max_candidates`` evenly spaced
    track frames -> appearance ``encoder`` joined with box geometry -> K-means -> the frame nearest each centre.

    ``get_frames(indices)`` returns ``{index: frame [H, W, 3] uint8}``; ``boxes`` has one box or None per frame.
    All valid frames are returned when there are at most K.
    """
    present = [t for t, b in enumerate(boxes) if _valid(b, config.min_box_side)]
    if not present:
        raise SparrowError("empty track: the target is in no frame")
    frames_idx = [present[i] for i in sample_indices(len(present), config.max_candidates)]
    if len(frames_idx) > config.k:
        frames = get_frames(frames_idx)
        crops = np.stack([crop_box(frames[t], boxes[t], config.crop_size, config.margin) for t in frames_idx])
        geometry = geometry_features(np.asarray([boxes[t] for t in frames_idx]), frames_idx, frame_size, len(boxes))
        x = joint_features((encoder or HandcraftedEncoder())(crops), geometry, config.geometry_weight)
        chosen = select_medoids(x, config.k, seed=config.seed, init=config.kmeans_init)
        frames_idx = [frames_idx[i] for i in chosen]
    return [TSFEntry(t, tuple(float(v) for v in boxes[t])) for t in frames_idx]


def _valid(box: Sequence[float] | None, min_side: float) -> bool:
    return box is not None and box[2] - box[0] >= min_side and box[3] - box[1] >= min_side


class TSFBuilder:
    """Turns (video, expression) pairs into :class:`TSFRecord` s; the driver :func:`build_tsf` writes them.

    ``detector`` / ``tracker`` objects follow :mod:`sparrow.tsf.detect` / :mod:`sparrow.tsf.track`; they are
    only called for expressions that need tracking. ``encoder`` maps crops ``[N, S, S, 3]`` to ``[N, D]``.
    """

    def __init__(
        self, config: BuildConfig, detector=None, tracker=None, encoder: AppearanceEncoder | None = None
    ) -> None:
        self.config = config
        self.detector = detector if detector is not None else GtDetector()
        self.tracker = tracker if tracker is not None else GtTracker()
        self.encoder = encoder if encoder is not None else HandcraftedEncoder()

    def target_track(
        self, record: VideoRecord, expression: Expression, store: FrameStore
    ) -> tuple[list[Box | None], str]:
        """Boxes per frame of the expression's target and their source ("annotation" | "tracked")."""
        cfg = self.config
        gt_boxes = record.target_boxes(expression)
        has_gt = any(_valid(b, cfg.min_box_side) for b in gt_boxes)
        if self.tracker.name == "gt" or (has_gt and not cfg.always_track):
            if not has_gt:
                raise SparrowError("empty track: the target has no annotated box in any frame")
            return gt_boxes, "annotation"
        if self.detector.name == "gt" and not has_gt:
            raise SparrowError(
                "the 'gt' detector needs annotated boxes and this target has none (use --detector gdino)"
            )
        frames = store.all()
        if self.detector.name == "gt":  # the annotated box where the target first appears
            present = [t for t, b in enumerate(gt_boxes) if _valid(b, cfg.min_box_side)]
            candidates = present[:1]
        else:
            candidates = sample_indices(record.num_frames, cfg.reference_frames)
        best: tuple[int, Detection] | None = None
        for t in candidates:
            det = self.detector.detect(frames[t], expression.text, t, gt_boxes if has_gt else None)
            if det is not None and (best is None or det.score > best[1].score):
                best = (t, det)
        if best is None:
            raise SparrowError(f"detector {self.detector.name!r} found no target in reference frames {candidates}")
        boxes = self.tracker.track(frames, best[0], best[1].box, gt_boxes if has_gt else None)
        if len(boxes) != record.num_frames:
            raise ValueError(f"tracker {self.tracker.name} returned {len(boxes)} boxes for {record.num_frames} frames")
        return boxes, "tracked"

    def select(self, record: VideoRecord, boxes: list[Box | None], store: FrameStore) -> list[TSFEntry]:
        """The K medoid (frame, box) entries of a track (all valid frames when there are at most K)."""
        return medoid_entries(store.get, boxes, record.size, self.config, self.encoder)

    def build_one(self, record: VideoRecord, expression: Expression, store: FrameStore) -> TSFRecord:
        """One record: ``ok`` with K entries, or ``failed`` with the reason of the :class:`SparrowError` raised."""
        try:
            boxes, source = self.target_track(record, expression, store)
            entries = self.select(record, boxes, store)
        except SparrowError as exc:
            return TSFRecord(
                record.video_id, expression.exp_id, "failed", reason=str(exc), num_frames=record.num_frames
            )
        return TSFRecord(
            record.video_id, expression.exp_id, "ok", entries=entries, source=source, num_frames=record.num_frames
        )


def build_tsf(
    records: Iterable[VideoRecord],
    out_dir: str | Path,
    config: BuildConfig | None = None,
    detector=None,
    tracker=None,
    encoder: AppearanceEncoder | None = None,
    shard: tuple[int, int] = (0, 1),
    limit: int | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    on_record: Callable[[TSFRecord], None] | None = None,
) -> BuildStats:
    """Build (or resume) shard ``shard`` of the TSF cache in ``out_dir``; returns what this run did.

    ``limit`` stops after that many new records (a partial run); ``on_record`` is called after each record is
    written. The shard file is ``out_dir/tsf-<i>-of-<n>.jsonl`` (see :mod:`sparrow.tsf.cache`).
    """
    config = config or BuildConfig()
    builder = TSFBuilder(config, detector, tracker, encoder)
    videos = shard_records(records, shard)
    stats = BuildStats()
    start = time.perf_counter()
    path = Path(out_dir) / shard_file_name(*shard)
    with ShardWriter(path, config.header(shard), retry_failed=retry_failed) as writer:
        total = sum(len(r.expressions) for r in videos)
        bar = tqdm(total=total, desc=f"tsf {shard[0]}/{shard[1]}", unit="rec", disable=not progress)
        try:
            for record in videos:
                store = FrameStore(record)
                for expression in record.expressions:
                    if limit is not None and stats.written >= limit:
                        return stats
                    bar.update(1)
                    if (record.video_id, expression.exp_id) in writer.done:
                        stats.skipped += 1
                        continue
                    result = builder.build_one(record, expression, store)
                    writer.write(result)
                    stats.ok += result.status == "ok"
                    stats.failed += result.status == "failed"
                    bar.set_postfix(ok=stats.ok, failed=stats.failed, skipped=stats.skipped)
                    if on_record is not None:
                        on_record(result)
        finally:
            bar.close()
            stats.seconds = time.perf_counter() - start
    return stats
