"""``sparrow curate``: the referential data pipeline over a mixture of sources, on one machine or on Ray.

A mixture config (YAML) names the sources (any reader of ``sparrow.data.readers``) and the TSF options::

    sources:
      - {name: lasot, format: lasot, root: /data/LaSOT, split: train, max_videos: 500}
      - {name: refytvos, format: refytvos, root: /data/ref-youtube-vos, split: train}
    tsf: {k: 4, detector: gt, tracker: gt}       # BuildConfig fields (sparrow.tsf.build)
    detector_model: null                         # local GroundingDINO folder (detector: gdino)
    sam2_model: null                             # local SAM2 video folder: tracker sam2, and masks from boxes
    masks: sam2                                  # sam2: SAM2 from boxes where a source has only boxes; none: keep boxes
    device: cpu

One item = one video of one source. Per item (any worker): read the record, then per expression the TSF builder's
detector -> tracker -> K-means medoids (:class:`sparrow.tsf.build.TSFBuilder`, the same code as ``sparrow tsf
build``), masks from boxes with SAM2 for box-only objects, and the frames as JPEG; the item's result is written
atomically to ``OUT/work/items/<source>/<video>.json`` (frames to ``OUT/work/frames/<source>/<video>/``). A run
skips items whose result exists (resumable; ``retry_failed`` redoes failed ones). When all items are done the
driver merges them, in config order then video order, into one curated dataset: ``OUT/dataset/`` (MeViS layout,
video ids ``<source>/<video>``), ``OUT/tsf/tsf-00000-of-00001.jsonl`` (TSF cache) and ``OUT/manifest.json``
(config, per-source statistics, failed items). The merged output depends only on the items, not on the engine.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from sparrow.atomic import atomic_dir, atomic_file
from sparrow.data.convert import convert_to_mevis, write_record_frames
from sparrow.data.readers import FORMATS, read_dataset
from sparrow.data.rle import encode_mask, mask_to_box
from sparrow.data.schema import Expression, ObjectTrack, VideoRecord
from sparrow.engine import EngineOptions, ItemResult, run_items
from sparrow.errors import SparrowError
from sparrow.tsf.build import BuildConfig, FrameStore, TSFBuilder
from sparrow.tsf.cache import FORMAT, VERSION, TSFRecord, shard_file_name

MANIFEST_FORMAT = "sparrow-curated"


@dataclass(frozen=True)
class Source:
    name: str
    format: str
    root: str
    split: str | None = None
    max_videos: int | None = None


@dataclass(frozen=True)
class MixtureConfig:
    """A parsed mixture config (see the module doc); frozen and hashable so workers can cache models by it."""

    sources: tuple[Source, ...]
    tsf: tuple[tuple[str, Any], ...] = ()
    detector_model: str | None = None
    sam2_model: str | None = None
    masks: str = "sam2"
    device: str = "cpu"

    def build_config(self) -> BuildConfig:
        return BuildConfig(**dict(self.tsf))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "sources": [asdict(s) for s in self.sources], "tsf": asdict(self.build_config())}


def load_mixture(path: str | Path) -> MixtureConfig:
    """Parse and check a mixture YAML; relative roots are taken from the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise SparrowError("no such mixture config", path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SparrowError(f"not valid YAML ({exc})", path) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list) or not raw["sources"]:
        raise SparrowError("a mixture config needs a non-empty 'sources' list", path)
    unknown = set(raw) - {"sources", "tsf", "detector_model", "sam2_model", "masks", "device"}
    if unknown:
        raise SparrowError(f"unknown keys {sorted(unknown)}", path)
    sources = []
    for n, s in enumerate(raw["sources"]):
        if not isinstance(s, dict) or not {"name", "format", "root"} <= set(s) or set(s) - set(Source.__annotations__):
            raise SparrowError(f"source {n}: needs name, format, root (optional split, max_videos)", path)
        if s["format"] not in FORMATS:
            raise SparrowError(
                f"source {s['name']!r}: unknown format {s['format']!r}; supported: {', '.join(FORMATS)}", path
            )
        root = Path(s["root"]) if Path(s["root"]).is_absolute() else (path.parent / s["root"]).resolve()
        sources.append(Source(str(s["name"]), s["format"], str(root), s.get("split"), s.get("max_videos")))
    if len({s.name for s in sources}) != len(sources):
        raise SparrowError("two sources share a name", path)
    tsf = raw.get("tsf") or {}
    try:
        BuildConfig(**tsf)
    except TypeError as exc:
        raise SparrowError(f"tsf: {exc}", path) from exc
    masks = raw.get("masks", "sam2")
    if masks not in ("sam2", "none"):
        raise SparrowError(f"masks must be sam2 or none, got {masks!r}", path)
    for key in ("detector_model", "sam2_model"):
        if raw.get(key) and not Path(raw[key]).is_absolute():
            raw[key] = str((path.parent / raw[key]).resolve())
    return MixtureConfig(
        tuple(sources),
        tuple(sorted(tsf.items())),
        raw.get("detector_model"),
        raw.get("sam2_model"),
        masks,
        raw.get("device", "cpu"),
    )


@dataclass(frozen=True)
class Item:
    """One video of one source, and where its result goes."""

    config: MixtureConfig
    source: Source
    video_id: str
    out: str

    @property
    def key(self) -> str:
        return f"{self.source.name}/{self.video_id}"

    def result_path(self) -> Path:
        return Path(self.out) / "work" / "items" / self.source.name / f"{self.video_id}.json"

    def frames_dir(self) -> Path:
        return Path(self.out) / "work" / "frames" / self.source.name / self.video_id


@lru_cache(maxsize=8)
def _records(source: Source) -> dict[str, VideoRecord]:
    """The source's records by video id (opened once per process; readers stream, so this is cheap)."""
    records = read_dataset(source.root, source.format, source.split)
    if source.max_videos is not None:
        records = records[: source.max_videos]
    return {r.video_id: r for r in records}


@lru_cache(maxsize=2)
def _models(config: MixtureConfig) -> tuple[TSFBuilder, Any]:
    """The TSF builder (detector, tracker, encoder) and the SAM2 box masker, loaded once per worker process."""
    from sparrow.tsf.detect import GDINO_HINT, GroundingDinoDetector, GtDetector
    from sparrow.tsf.track import SAM2_HINT, CsrtTracker, GtTracker, Sam2Tracker

    build = config.build_config()
    if build.detector == "gdino":
        if not config.detector_model:
            raise SparrowError(f"tsf.detector gdino needs detector_model: {GDINO_HINT}")
        detector = GroundingDinoDetector(config.detector_model, device=config.device)
    else:
        detector = GtDetector()
    if build.tracker == "sam2" and not config.sam2_model:
        raise SparrowError(f"tsf.tracker sam2 needs sam2_model: {SAM2_HINT}")
    tracker = {"gt": GtTracker, "csrt": CsrtTracker}.get(build.tracker)
    tracker = tracker() if tracker else Sam2Tracker(config.sam2_model, device=config.device)
    masker = None
    if config.masks == "sam2" and config.sam2_model:
        from sparrow.tsf.box_masks import Sam2BoxMasker

        masker = Sam2BoxMasker(config.sam2_model, device=config.device)
    return TSFBuilder(build, detector, tracker), masker


def curate_item(item: Item) -> dict[str, Any]:
    """Process one item and write its result (see the module doc); returns the result's summary."""
    records = _records(item.source)
    if item.video_id not in records:
        raise SparrowError(f"video {item.video_id!r} is not in source {item.source.name!r}")
    rec = records[item.video_id]
    builder, masker = _models(item.config)
    store = FrameStore(rec)
    tsf = [builder.build_one(rec, e, store) for e in rec.expressions]
    objects = {}
    for obj in rec.objects.values():
        masks, boxes, source = list(obj.masks), list(obj.boxes), "annotation"
        if all(m is None for m in masks) and any(b is not None for b in boxes):
            source = "none"
            if masker is not None:
                predicted = masker.masks(store.all(), boxes)
                masks = [None if m is None or not m.any() else encode_mask(m) for m in predicted]
                boxes = [b if m is None or not m.any() else mask_to_box(m) for b, m in zip(boxes, predicted)]
                source = "sam2"
        objects[str(obj.obj_id)] = {
            "masks": masks,
            "boxes": boxes,
            "category": obj.category,
            "attributes": obj.attributes,
            "mask_source": source,
        }
    frames_dir = item.frames_dir()
    with atomic_dir(frames_dir) as tmp:
        write_record_frames(rec, tmp)
    result = {
        "status": "ok",
        "source": item.source.name,
        "video": rec.video_id,
        "frames": rec.frames,
        "height": rec.height,
        "width": rec.width,
        "objects": objects,
        "expressions": [
            {"exp_id": e.exp_id, "text": e.text, "obj_ids": e.obj_ids, "tags": e.tags, "kind": e.kind, "extra": e.extra}
            for e in rec.expressions
        ],
        "tsf": [r.to_json() for r in tsf],
    }
    with atomic_file(item.result_path()) as f:
        f.write(json.dumps(result, sort_keys=True))
    return {"tsf_ok": sum(r.status == "ok" for r in tsf), "expressions": len(tsf)}


@dataclass
class CurateStats:
    """What one run did: items processed now (ok / failed), items skipped as already done, seconds."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)


def plan_items(config: MixtureConfig, out: str | Path) -> list[Item]:
    """Every item of the mixture, in merge order (config order, then video id)."""
    items = []
    for source in config.sources:
        items += [Item(config, source, vid, str(out)) for vid in sorted(_records(source))]
    return items


def _done(item: Item, retry_failed: bool) -> bool:
    path = item.result_path()
    if not path.is_file():
        return False
    return not retry_failed or json.loads(path.read_text()).get("status") == "ok"


def curate(
    config: MixtureConfig,
    out: str | Path,
    options: EngineOptions | None = None,
    retry_failed: bool = False,
    limit: int | None = None,
) -> CurateStats:
    """Run (or resume) the pipeline over every item, then merge; ``limit`` stops after that many new items
    (a partial run: no merge)."""
    out = Path(out)
    stats = CurateStats()
    start = time.perf_counter()
    items = plan_items(config, out)
    todo = [i for i in items if not _done(i, retry_failed)]
    stats.skipped = len(items) - len(todo)
    if limit is not None:
        todo = todo[:limit]

    def record(result: ItemResult) -> None:
        if result.status == "ok":
            stats.ok += 1
            return
        stats.failed += 1
        stats.failures.append((result.item.key, result.reason or ""))
        with atomic_file(result.item.result_path()) as f:
            f.write(
                json.dumps(
                    {
                        "status": "failed",
                        "reason": result.reason,
                        "source": result.item.source.name,
                        "video": result.item.video_id,
                        "attempts": result.attempts,
                    },
                    sort_keys=True,
                )
            )

    run_items(curate_item, todo, options, on_result=record)
    if limit is None or stats.skipped + len(todo) == len(items):
        merge(config, items, out)
    stats.seconds = time.perf_counter() - start
    with open(out / "runs.jsonl", "a") as f:
        f.write(
            json.dumps(
                {
                    "engine": (options or EngineOptions()).engine,
                    "ok": stats.ok,
                    "failed": stats.failed,
                    "skipped": stats.skipped,
                    "seconds": round(stats.seconds, 2),
                    "host": platform.node(),
                }
            )
            + "\n"
        )
    return stats


def merge(config: MixtureConfig, items: list[Item], out: Path) -> dict[str, Any]:
    """Merge the items' results into ``out/dataset``, ``out/tsf`` and ``out/manifest.json``; returns the manifest."""
    records, tsf_lines, failed = [], [], []
    per_source: dict[str, dict[str, Any]] = {
        s.name: {
            "format": s.format,
            "split": s.split,
            "videos": 0,
            "failed_videos": 0,
            "expressions": 0,
            "objects": 0,
            "frames": 0,
            "tsf": {"ok": 0, "failed": 0, "annotation": 0, "tracked": 0},
            "masks": {"annotation": 0, "sam2": 0, "none": 0},
        }
        for s in config.sources
    }
    for item in items:
        data = json.loads(item.result_path().read_text())
        stats = per_source[item.source.name]
        if data["status"] != "ok":
            stats["failed_videos"] += 1
            failed.append({"item": item.key, "reason": data.get("reason")})
            continue
        vid = item.key
        objects = {
            int(k): ObjectTrack(
                int(k),
                o["masks"],
                o["boxes"],
                category=o["category"],
                attributes={**o["attributes"], "mask_source": o["mask_source"]},
            )
            for k, o in data["objects"].items()
        }
        expressions = [
            Expression(e["exp_id"], e["text"], e["obj_ids"], e["tags"], e["kind"], e["extra"])
            for e in data["expressions"]
        ]
        records.append(
            VideoRecord(
                vid,
                data["frames"],
                data["height"],
                data["width"],
                objects,
                expressions,
                frame_dir=item.frames_dir(),
                frame_ext=".jpg",
                tags=[item.source.name],
            )
        )
        for line in data["tsf"]:
            rec = TSFRecord.from_json(line, str(item.result_path()))
            rec.video_id = vid
            tsf_lines.append(rec.to_json())
            stats["tsf"][rec.status] += 1
            if rec.status == "ok":
                stats["tsf"][rec.source] += 1
        stats["videos"] += 1
        stats["expressions"] += len(expressions)
        stats["objects"] += len(objects)
        stats["frames"] += len(data["frames"])
        for o in data["objects"].values():
            stats["masks"][o["mask_source"]] += 1
    convert_to_mevis(records, out / "dataset", link=True)
    header = {"format": FORMAT, "version": VERSION, **config.build_config().header((0, 1))}
    with atomic_file(out / "tsf" / shard_file_name(0, 1)) as f:
        f.write(json.dumps(header, sort_keys=True, separators=(",", ":")) + "\n")
        for line in tsf_lines:
            f.write(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")
    totals = {
        k: sum(s[k] for s in per_source.values())
        for k in ("videos", "failed_videos", "expressions", "objects", "frames")
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "config": config.to_json(),
        "sources": per_source,
        "totals": totals,
        "failed": failed,
        "dataset": "dataset",
        "tsf": f"tsf/{shard_file_name(0, 1)}",
    }
    with atomic_file(out / "manifest.json") as f:
        f.write(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest
