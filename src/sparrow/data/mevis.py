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
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sparrow.atomic import atomic_file, atomic_path
from sparrow.data.rle import RLE, decode_rle
from sparrow.data.schema import Expression, ObjectTrack, VideoRecord
from sparrow.errors import SparrowError


def _load_json(path: Path) -> Any:
    if not path.exists():
        raise SparrowError("missing annotation file", path)
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise SparrowError(f"not valid JSON ({exc.msg} at line {exc.lineno})", path) from exc


def _frame_size(record_frames: list[str], frame_dir: Path, ext: str, rles: list[RLE | None]) -> tuple[int, int]:
    for rle in rles:
        if rle is not None and isinstance(rle, dict) and "size" in rle:
            return int(rle["size"][0]), int(rle["size"][1])
    first = frame_dir / f"{record_frames[0]}{ext}"
    if not first.exists():
        raise SparrowError("missing frame", first)
    with Image.open(first) as img:
        return img.height, img.width


def read_mevis(split_dir: str | Path, check_frames: bool = True, videos: list[str] | None = None) -> list[VideoRecord]:
    """Read one split folder of the MeViS layout into schema records (sorted by video id).

    ``check_frames`` verifies that every listed frame file exists; ``videos`` restricts the read to some ids.
    Raises :class:`SparrowError` naming the file for a missing or malformed file, a missing frame, an RLE of the
    wrong size, or an expression that names an object without masks.
    """
    split_dir = Path(split_dir)
    meta_path = split_dir / "meta_expressions.json"
    meta = _load_json(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise SparrowError("expected an object with a 'videos' mapping", meta_path)
    mask_path = split_dir / "mask_dict.json"
    mask_dict = _load_json(mask_path) if mask_path.exists() else None
    boxes_path = split_dir / "boxes.json"
    boxes_dict = _load_json(boxes_path) if boxes_path.exists() else {}
    image_root = split_dir / "JPEGImages"

    records = []
    for video_id in sorted(meta["videos"]):
        if videos is not None and video_id not in videos:
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
                    raise SparrowError(f"missing frame of video {video_id!r} listed in {meta_path.name}", frame_dir / f"{name}.jpg")

        expressions: list[Expression] = []
        anno_ids: list[int] = []
        for exp_id in sorted(expressions_raw, key=lambda k: (len(k), k)):
            exp = expressions_raw[exp_id]
            if not isinstance(exp, dict) or not isinstance(exp.get("exp"), str) or "anno_id" not in exp:
                raise SparrowError(f"video {video_id!r}, expression {exp_id!r}: need 'exp' (text) and 'anno_id'", meta_path)
            try:
                ids = [int(a) for a in exp["anno_id"]]
            except (TypeError, ValueError) as exc:
                raise SparrowError(f"video {video_id!r}, expression {exp_id!r}: bad anno_id {exp['anno_id']!r}", meta_path) from exc
            extra = {k: v for k, v in exp.items() if k not in ("exp", "anno_id", "tags", "kind")}
            expressions.append(
                Expression(exp_id=str(exp_id), text=exp["exp"], obj_ids=ids, tags=list(exp.get("tags", [])), kind=exp.get("kind"), extra=extra)
            )
            anno_ids.extend(a for a in ids if a not in anno_ids)
        objects_meta = entry.get("objects", {})
        anno_ids.extend(int(a) for a in objects_meta if int(a) not in anno_ids)

        rles_by_obj: dict[int, list[RLE | None]] = {}
        for anno in anno_ids:
            if mask_dict is None:
                rles_by_obj[anno] = [None] * len(frames)
                continue
            rles = mask_dict.get(str(anno))
            if not isinstance(rles, list):
                raise SparrowError(f"no masks for anno_id {anno} (video {video_id!r})", mask_path)
            if len(rles) != len(frames):
                raise SparrowError(f"anno_id {anno} has {len(rles)} masks for {len(frames)} frames of video {video_id!r}", mask_path)
            rles_by_obj[anno] = rles
        all_rles = [r for rles in rles_by_obj.values() for r in rles]
        height = int(entry["height"]) if "height" in entry else None
        width = int(entry["width"]) if "width" in entry else None
        if height is None or width is None:
            height, width = _frame_size(frames, frame_dir, ".jpg", all_rles)

        objects: dict[int, ObjectTrack] = {}
        for anno, rles in rles_by_obj.items():
            boxes_entry = boxes_dict.get(str(anno), {})
            boxes = boxes_entry.get("boxes")
            for t, rle in enumerate(rles):
                if rle is not None:  # validates size and counts; names the file
                    mask = decode_rle(rle, expected_size=(height, width), source=f"{mask_path} (anno_id {anno}, frame {t})")
                    if boxes is None and not mask.any():
                        rles[t] = None
            if boxes is None:
                boxes = [_box_of(rle, (height, width)) for rle in rles]
            elif len(boxes) != len(frames):
                raise SparrowError(f"anno_id {anno} has {len(boxes)} boxes for {len(frames)} frames", boxes_path)
            meta_obj = objects_meta.get(str(anno), {})
            objects[anno] = ObjectTrack(
                obj_id=anno,
                masks=rles,
                boxes=boxes,
                category=meta_obj.get("category"),
                attributes=dict(meta_obj.get("attributes", {})),
                full_boxes=boxes_entry.get("full_boxes"),
            )
        extra = {k: v for k, v in entry.items() if k not in ("frames", "expressions", "tags", "height", "width", "objects")}
        record = VideoRecord(
            video_id=video_id, frames=list(frames), height=height, width=width, objects=objects,
            expressions=expressions, frame_dir=frame_dir, frame_ext=".jpg", tags=list(entry.get("tags", [])), extra=extra,
        )
        record.validate(source=meta_path)
        records.append(record)
    if videos is not None:
        missing = sorted(set(videos) - {r.video_id for r in records})
        if missing:
            raise SparrowError(f"videos not in the split: {missing[:5]}", meta_path)
    return records


def _box_of(rle: RLE | None, size: tuple[int, int]) -> list[float] | None:
    from sparrow.data.rle import mask_to_box

    if rle is None:
        return None
    return mask_to_box(decode_rle(rle, expected_size=size))


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
            masks[key] = obj.masks
            boxes[key] = {"boxes": obj.boxes, "full_boxes": obj.full_boxes}
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
