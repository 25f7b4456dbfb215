"""Reader and writer for the MeViS layout, the on-disk format of MeViS, ReVOS-style sets and SynthRef.

Layout of one split folder::

    <split>/JPEGImages/<video>/<frame>.jpg
    <split>/meta_expressions.json   {"videos": {<video>: {"frames": [...],
                                      "expressions": {<exp_id>: {"exp": str, "anno_id": [...], "obj_id": [...]}}}}}
    <split>/mask_dict.json          {str(anno_id): [COCO RLE or null, one per frame]}
    <split>/boxes.json              optional (SparrowRef extension): {str(anno_id): {"boxes": [...], "full_boxes": [...]}}

Extra keys SPARROW writes (ignored by the official tools): per video ``tags``, ``height``, ``width``, ``objects``
(anno_id -> category/attributes); per expression ``tags`` and ``kind``. ``anno_id`` is the object key of the
schema (``ObjectTrack.obj_id``); MeViS's per-video ``obj_id`` list is kept in ``Expression.extra``.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sparrow.atomic import atomic_file, atomic_path
from sparrow.data.json_index import JsonMapIndex
from sparrow.data.rle import RLE, decode_rle, rle_area
from sparrow.data.schema import Expression, LazyObjectTrack, ObjectTrack, TrackData, VideoRecord, boxes_from_rles
from sparrow.errors import SparrowError


def _load_json(path: Path) -> Any:
    if not path.exists():
        raise SparrowError("missing annotation file", path)
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise SparrowError(f"not valid JSON ({exc.msg} at line {exc.lineno})", path) from exc


def _first_frame_size(frame_dir: Path, name: str, ext: str) -> tuple[int, int] | None:
    first = frame_dir / f"{name}{ext}"
    if not first.exists():
        return None
    try:
        with Image.open(first) as img:  # reads the header only
            return img.height, img.width
    except OSError as exc:
        raise SparrowError(f"cannot read frame ({exc})", first) from exc


class MaskSource:
    """Where the masks of a MeViS-layout split come from: ``mask_dict.json`` (and the optional ``boxes.json``),
    read eagerly (``lazy=False``, the whole file parsed at once) or through a :class:`JsonMapIndex` (one object's
    entry parsed when first needed)."""

    def __init__(self, split_dir: Path, lazy: bool) -> None:
        self.mask_path = split_dir / "mask_dict.json"
        self.boxes_path = split_dir / "boxes.json"
        self.has_masks = self.mask_path.exists()
        self.has_boxes = self.boxes_path.exists()
        if lazy:
            self.masks: Any = JsonMapIndex(self.mask_path) if self.has_masks else None
            self.boxes: Any = JsonMapIndex(self.boxes_path) if self.has_boxes else None
        else:
            self.masks = _load_json(self.mask_path) if self.has_masks else None
            self.boxes = _load_json(self.boxes_path) if self.has_boxes else None

    def rles(self, anno: int, video_id: str, num_frames: int) -> list[RLE | None]:
        if self.masks is None:
            return [None] * num_frames
        rles = self.masks.get(str(anno))
        if not isinstance(rles, list):
            raise SparrowError(f"no masks for anno_id {anno} (video {video_id!r})", self.mask_path)
        if len(rles) != num_frames:
            raise SparrowError(
                f"anno_id {anno} has {len(rles)} masks for {num_frames} frames of video {video_id!r}", self.mask_path
            )
        return list(rles)

    def size(self, anno_ids: list[int], video_id: str, num_frames: int) -> tuple[int, int] | None:
        """``(H, W)`` from the first RLE of the video's objects (None when there is none)."""
        for anno in anno_ids:
            for rle in self.rles(anno, video_id, num_frames):
                if isinstance(rle, dict) and isinstance(rle.get("size"), list) and len(rle["size"]) == 2:
                    return int(rle["size"][0]), int(rle["size"][1])
        return None

    def track(
        self, anno: int, video_id: str, size: tuple[int, int], num_frames: int, decode: bool = False
    ) -> TrackData:
        """``(masks, boxes, full_boxes)`` of one object, every RLE validated (and decoded when ``decode``); an
        empty mask becomes None where boxes are computed from the masks."""
        rles = self.rles(anno, video_id, num_frames)
        entry = self.boxes.get(str(anno)) if self.boxes is not None else None
        entry = entry if isinstance(entry, dict) else {}
        boxes = entry.get("boxes")
        for t, rle in enumerate(rles):
            if rle is None:
                continue
            where = f"{self.mask_path} (anno_id {anno}, frame {t})"
            if decode:  # the full decode of the eager path
                empty = not decode_rle(rle, expected_size=size, source=where).any()
            else:
                empty = rle_area(rle, expected_size=size, source=where) == 0
            if boxes is None and empty:
                rles[t] = None
        if boxes is None:
            boxes = boxes_from_rles(rles)
        elif len(boxes) != num_frames:
            raise SparrowError(f"anno_id {anno} has {len(boxes)} boxes for {num_frames} frames", self.boxes_path)
        return rles, boxes, entry.get("full_boxes")


def read_mevis(
    split_dir: str | Path,
    check_frames: bool = True,
    videos: list[str] | None = None,
    lazy: bool = True,
    meta_file: str = "meta_expressions.json",
) -> list[VideoRecord]:
    """Read one split folder of the MeViS layout into schema records (sorted by video id).

    Streaming (``lazy=True``, the default): only ``meta_expressions.json`` is parsed; each object's masks and boxes
    are read from ``mask_dict.json`` / ``boxes.json`` when first accessed (:class:`LazyObjectTrack`), and problems
    there raise then. ``lazy=False`` parses and decodes everything up front (the behaviour before streaming).
    ``check_frames`` verifies that every listed frame file exists; ``videos`` restricts the read to some ids;
    ``meta_file`` names the expressions file (ReVOS: ``meta_expressions_valid_.json``).
    Raises :class:`SparrowError` naming the file for a missing or malformed file, a missing frame, an RLE of the
    wrong size, or an expression that names an object without masks.
    """
    split_dir = Path(split_dir)
    meta_path = split_dir / meta_file
    meta = _load_json(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise SparrowError("expected an object with a 'videos' mapping", meta_path)
    source = MaskSource(split_dir, lazy)
    image_root = split_dir / "JPEGImages"
    wanted = None if videos is None else set(videos)

    records = []
    for video_id in sorted(meta["videos"]):
        if wanted is not None and video_id not in wanted:
            continue
        entry = meta["videos"][video_id]
        frames = entry.get("frames") if isinstance(entry, dict) else None
        if not isinstance(frames, list) or not frames or not all(isinstance(f, str) for f in frames):
            raise SparrowError(f"video {video_id!r}: 'frames' must be a non-empty list of names", meta_path)
        expressions_raw = entry.get("expressions", {})
        if not isinstance(expressions_raw, dict):
            raise SparrowError(f"video {video_id!r}: 'expressions' must be a mapping", meta_path)
        frame_dir = image_root / video_id
        if check_frames:
            for name in frames:
                if not (frame_dir / f"{name}.jpg").exists():
                    raise SparrowError(
                        f"missing frame of video {video_id!r} listed in {meta_path.name}", frame_dir / f"{name}.jpg"
                    )

        expressions: list[Expression] = []
        anno_ids: list[int] = []
        for exp_id in sorted(expressions_raw, key=lambda k: (len(k), k)):
            exp = expressions_raw[exp_id]
            if not isinstance(exp, dict) or not isinstance(exp.get("exp"), str) or "anno_id" not in exp:
                raise SparrowError(
                    f"video {video_id!r}, expression {exp_id!r}: need 'exp' (text) and 'anno_id'", meta_path
                )
            try:
                ids = [int(a) for a in exp["anno_id"]]
            except (TypeError, ValueError) as exc:
                raise SparrowError(
                    f"video {video_id!r}, expression {exp_id!r}: bad anno_id {exp['anno_id']!r}", meta_path
                ) from exc
            extra = {k: v for k, v in exp.items() if k not in ("exp", "anno_id", "tags", "kind")}
            expressions.append(
                Expression(
                    exp_id=str(exp_id),
                    text=exp["exp"],
                    obj_ids=ids,
                    tags=list(exp.get("tags", [])),
                    kind=exp.get("kind"),
                    extra=extra,
                )
            )
            anno_ids.extend(a for a in ids if a not in anno_ids)
        objects_meta = entry.get("objects", {})
        anno_ids.extend(int(a) for a in objects_meta if int(a) not in anno_ids)

        T = len(frames)
        if "height" in entry and "width" in entry:
            size = (int(entry["height"]), int(entry["width"]))
        else:
            size = _first_frame_size(frame_dir, frames[0], ".jpg") or source.size(anno_ids, video_id, T)
            if size is None:
                raise SparrowError(
                    f"video {video_id!r}: no frame and no mask to tell its size", frame_dir / f"{frames[0]}.jpg"
                )

        objects: dict[int, ObjectTrack] = {}
        for anno in anno_ids:
            meta_obj = objects_meta.get(str(anno), {})
            if lazy:
                objects[anno] = LazyObjectTrack(
                    anno,
                    T,
                    partial(source.track, anno, video_id, size, T),
                    category=meta_obj.get("category"),
                    attributes=meta_obj.get("attributes", {}),
                )
            else:
                masks, boxes, full = source.track(anno, video_id, size, T, decode=True)
                objects[anno] = ObjectTrack(
                    obj_id=anno,
                    masks=masks,
                    boxes=boxes,
                    category=meta_obj.get("category"),
                    attributes=dict(meta_obj.get("attributes", {})),
                    full_boxes=full,
                )
        extra = {
            k: v for k, v in entry.items() if k not in ("frames", "expressions", "tags", "height", "width", "objects")
        }
        record = VideoRecord(
            video_id=video_id,
            frames=list(frames),
            height=size[0],
            width=size[1],
            objects=objects,
            expressions=expressions,
            frame_dir=frame_dir,
            frame_ext=".jpg",
            tags=list(entry.get("tags", [])),
            extra=extra,
        )
        record.validate(source=meta_path)
        records.append(record)
    if videos is not None:
        missing = sorted(set(videos) - {r.video_id for r in records})
        if missing:
            raise SparrowError(f"videos not in the split: {missing[:5]}", meta_path)
    return records


def _dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def write_mevis_annotations(records: list[VideoRecord], split_dir: str | Path, with_boxes: bool = True) -> None:
    """Write ``meta_expressions.json``, ``mask_dict.json`` (and ``boxes.json``) for records, atomically.

    Frames are not written here (see :func:`write_frames`). Output bytes depend only on the records.
    """
    split_dir = Path(split_dir)
    videos: dict[str, Any] = {}
    masks: dict[str, Any] = {}
    boxes: dict[str, Any] = {}
    for rec in records:
        rec.validate()
        videos[rec.video_id] = {
            "frames": rec.frames,
            "height": rec.height,
            "width": rec.width,
            "tags": rec.tags,
            "objects": {
                str(o.obj_id): {"category": o.category, "attributes": o.attributes} for o in rec.objects.values()
            },
            "expressions": {
                e.exp_id: {
                    "exp": e.text,
                    "anno_id": [str(a) for a in e.obj_ids],
                    "obj_id": e.extra.get("obj_id", list(range(len(e.obj_ids)))),
                    "tags": e.tags,
                    "kind": e.kind,
                    **{k: v for k, v in e.extra.items() if k != "obj_id"},
                }
                for e in rec.expressions
            },
            **rec.extra,
        }
        for obj in rec.objects.values():
            key = str(obj.obj_id)
            if key in masks:
                raise SparrowError(f"anno_id {key} is used by two videos (anno ids must be unique in a split)")
            masks[key] = list(obj.masks)
            boxes[key] = {"boxes": list(obj.boxes), "full_boxes": obj.full_boxes}
    with atomic_file(split_dir / "meta_expressions.json") as f:
        f.write(_dump({"videos": videos}))
    with atomic_file(split_dir / "mask_dict.json") as f:
        f.write(_dump(masks))
    if with_boxes:
        with atomic_file(split_dir / "boxes.json") as f:
            f.write(_dump(boxes))


def write_frames(
    frame_dir: str | Path, names: list[str], frames: np.ndarray, quality: int = 95, atomic: bool = True
) -> None:
    """Write RGB frames ``[T, H, W, 3]`` uint8 as ``<name>.jpg`` (each atomically unless ``atomic=False``, for a
    caller that already writes into a temporary folder renamed at the end)."""
    frame_dir = Path(frame_dir)
    frame_dir.mkdir(parents=True, exist_ok=True)
    if len(names) != len(frames):
        raise ValueError(f"{len(names)} names for {len(frames)} frames")
    for name, frame in zip(names, frames):
        if not atomic:
            Image.fromarray(frame).save(frame_dir / f"{name}.jpg", format="JPEG", quality=quality)
            continue
        with atomic_path(frame_dir / f"{name}.jpg") as tmp:
            Image.fromarray(frame).save(tmp, format="JPEG", quality=quality)
