"""Ref-YouTube-VOS and Ref-DAVIS17 in the layout of their standard release (ReferFormer ``docs/data.md``; Ref-DAVIS17
converted by ReferFormer's ``convert_davis_to_ytvos.py``)::

    <root>/meta_expressions/<split>/meta_expressions.json
        {"videos": {<video>: {"frames": ["00000", ...],
                              "expressions": {"0": {"exp": str, "obj_id": "1"}, ...}}}}
    <root>/<split>/JPEGImages/<video>/<frame>.jpg
    <root>/<split>/Annotations/<video>/<frame>.png     index PNG: pixel value k = object k (absent for valid/test
                                                       of Ref-YouTube-VOS, whose GT is held by the server)
    <root>/train/meta.json                             Ref-YouTube-VOS only: {"videos": {<video>: {"objects":
                                                       {"1": {"category": str, "frames": [...]}}}}}

One record per video; object ids are the PNG values (``obj_id``); each expression refers to one object. Ref-DAVIS17
lists, per object, the four annotation runs in order (two annotators x first-frame / full-video expressions):
expression ``i`` belongs to run ``i % 4`` (``Expression.extra["anno_run"]``, as ReferFormer's ``inference_davis``).
A frame without an annotation PNG counts as "object absent". Masks are read when an object is first accessed.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from sparrow.data.readers.common import IndexPngMasks, image_size, load_json
from sparrow.data.schema import Expression, LazyObjectTrack, VideoRecord
from sparrow.errors import SparrowError

SPLITS = ("train", "valid", "test")
EVAL_SPLITS = ("valid", "test")


def splits(root: str | Path) -> list[str]:
    """The splits present under ``root`` (those with a meta_expressions file)."""
    root = Path(root)
    return [s for s in SPLITS if (root / "meta_expressions" / s / "meta_expressions.json").is_file()]


def read(root: str | Path, split: str = "valid", davis_runs: bool = False) -> list[VideoRecord]:
    """Records of one split, sorted by video id (see the module doc). ``davis_runs`` tags Ref-DAVIS17 runs."""
    root = Path(root)
    meta_path = root / "meta_expressions" / split / "meta_expressions.json"
    meta = load_json(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise SparrowError("expected an object with a 'videos' mapping", meta_path)
    categories: dict[str, dict] = {}
    ytvos_meta = root / split / "meta.json"
    if ytvos_meta.is_file():
        categories = {v: e.get("objects", {}) for v, e in load_json(ytvos_meta).get("videos", {}).items()}
    image_root, anno_root = root / split / "JPEGImages", root / split / "Annotations"
    records = []
    for video_id in sorted(meta["videos"]):
        entry = meta["videos"][video_id]
        frames = entry.get("frames") if isinstance(entry, dict) else None
        if not isinstance(frames, list) or not frames:
            raise SparrowError(f"video {video_id!r}: 'frames' must be a non-empty list", meta_path)
        raw = entry.get("expressions", {})
        if not isinstance(raw, dict):
            raise SparrowError(f"video {video_id!r}: 'expressions' must be a mapping", meta_path)
        frame_dir = image_root / video_id
        size = image_size(frame_dir / f"{frames[0]}.jpg")
        pngs = None
        if (anno_root / video_id).is_dir():
            paths = [anno_root / video_id / f"{f}.png" for f in frames]
            pngs = IndexPngMasks([p if p.is_file() else None for p in paths], size)
        expressions, obj_ids = [], []
        for i, exp_id in enumerate(sorted(raw, key=lambda k: (len(k), k))):
            exp = raw[exp_id]
            if not isinstance(exp, dict) or not isinstance(exp.get("exp"), str) or "obj_id" not in exp:
                raise SparrowError(f"video {video_id!r}, expression {exp_id!r}: need 'exp' and 'obj_id'", meta_path)
            try:
                obj = int(exp["obj_id"])
            except (TypeError, ValueError) as exc:
                raise SparrowError(
                    f"video {video_id!r}, expression {exp_id!r}: bad obj_id {exp['obj_id']!r}", meta_path
                ) from exc
            extra = {"anno_run": i % 4} if davis_runs else {}
            expressions.append(Expression(str(exp_id), " ".join(exp["exp"].split()), [obj], extra=extra))
            if obj not in obj_ids:
                obj_ids.append(obj)
        objects = {}
        if pngs is not None:
            for obj in obj_ids:
                cat = categories.get(video_id, {}).get(str(obj), {}).get("category")
                objects[obj] = LazyObjectTrack(obj, len(frames), partial(pngs.track, obj), category=cat)
        else:  # no GT here (server-scored split): expressions without objects
            for exp in expressions:
                exp.extra["obj_id"], exp.obj_ids = exp.obj_ids, []
        record = VideoRecord(
            video_id=video_id,
            frames=list(frames),
            height=size[0],
            width=size[1],
            objects=objects,
            expressions=expressions,
            frame_dir=frame_dir,
            frame_ext=".jpg",
        )
        record.validate(source=meta_path)
        records.append(record)
    return records


def read_refdavis(root: str | Path, split: str = "valid") -> list[VideoRecord]:
    """Ref-DAVIS17 records (``read`` with the annotation runs tagged)."""
    return read(root, split, davis_runs=True)
