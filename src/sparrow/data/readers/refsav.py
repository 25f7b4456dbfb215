"""Ref-SAV (Sa2VA's referring expressions on SA-V) in the layout of its release (``Ref-SAV.json`` beside SA-V's
``sav_train`` folders, as Sa2VA's training config reads it)::

    <root>/Ref-SAV.json          {<key>: {"video_path": "sav_000/sav_000001.mp4",
                                          "anno_path": "sav_000/sav_000001_manual.json",
                                          "objects": {"<masklet index>": {"formated": str, ...}}}}
    <root>/<video_path>          SA-V video (24 fps)
    <root>/<anno_path>           SA-V manual annotation: {"video_height", "video_width", "video_frame_count",
                                 "masklet": [[COCO RLE per masklet] per annotated frame], ...}; masklets are
                                 annotated on every fourth frame (6 fps)

Paths are taken relative to ``root`` (``--split`` is not used: the file is one training set, split ``train``).
One record per key: its frames are the annotated frames (``frame_indices`` = 0, 4, 8, ... in the video), one
object per masklet index named in ``objects``, one expression per object (``formated``, else ``exp``). Height,
width and frame count come from the annotation file's small fields (:class:`JsonMapIndex`, the masklets are not
parsed); masks are parsed when an object is first accessed.
"""

from __future__ import annotations

from pathlib import Path

from sparrow.data.json_index import JsonMapIndex
from sparrow.data.readers.common import load_json
from sparrow.data.rle import rle_area
from sparrow.data.schema import Expression, LazyObjectTrack, VideoRecord, boxes_from_rles
from sparrow.errors import SparrowError

SPLITS = ("train",)
EVAL_SPLITS: tuple[str, ...] = ()
STRIDE = 4


def splits(root: str | Path) -> list[str]:
    return ["train"] if (Path(root) / "Ref-SAV.json").is_file() else []


def _masklet_loader(index: JsonMapIndex, column: int, num_frames: int, size: tuple[int, int]):
    def load():
        masklet = index.get("masklet")
        if not isinstance(masklet, list) or len(masklet) != num_frames:
            raise SparrowError(f"'masklet' must list {num_frames} annotated frames", index.path)
        rles = []
        for t, row in enumerate(masklet):
            if not isinstance(row, list) or column >= len(row):
                raise SparrowError(f"frame {t}: no masklet {column}", index.path)
            rle = row[column]
            where = f"{index.path} (masklet {column}, frame {t})"
            rles.append(None if rle is None or rle_area(rle, size, where) == 0 else rle)
        return rles, boxes_from_rles(rles), None

    return load


def read(root: str | Path, split: str = "train") -> list[VideoRecord]:
    root = Path(root)
    path = root / "Ref-SAV.json"
    data = load_json(path)
    if not isinstance(data, dict):
        raise SparrowError("expected an object {key: video entry}", path)
    records = []
    for key in sorted(data):
        entry = data[key]
        if not isinstance(entry, dict) or not {"video_path", "anno_path", "objects"} <= set(entry):
            raise SparrowError(f"entry {key!r}: need 'video_path', 'anno_path' and 'objects'", path)
        index = JsonMapIndex(root / entry["anno_path"])
        try:
            size = (int(index.get("video_height")), int(index.get("video_width")))
            count = int(index.get("video_frame_count"))
        except (TypeError, ValueError) as exc:
            raise SparrowError("need video_height, video_width and video_frame_count", index.path) from exc
        indices = list(range(0, count, STRIDE))
        objects, expressions = {}, []
        for obj_key in sorted(entry["objects"], key=lambda k: int(k)):
            info = entry["objects"][obj_key]
            text = info.get("formated", info.get("exp")) if isinstance(info, dict) else None
            if not isinstance(text, str):
                raise SparrowError(f"entry {key!r}, object {obj_key}: need 'formated' (the expression)", path)
            obj = int(obj_key)
            objects[obj] = LazyObjectTrack(obj, len(indices), _masklet_loader(index, obj, len(indices), size))
            expressions.append(Expression(str(obj), " ".join(text.split()), [obj]))
        record = VideoRecord(
            video_id=str(key),
            frames=[f"{i:05d}" for i in indices],
            height=size[0],
            width=size[1],
            objects=objects,
            expressions=expressions,
            video_path=root / entry["video_path"],
            frame_indices=indices,
            fps=24.0 / STRIDE,
        )
        record.validate(source=path)
        records.append(record)
    return records
