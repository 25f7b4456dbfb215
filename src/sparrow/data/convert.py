"""``sparrow data convert``: write any reader's records as one split in the MeViS layout (``sparrow.data.mevis``).

The output folder is written under a temporary name and renamed when complete (``atomic_dir``). Frames that are
already JPEG files are copied byte for byte; others (PNG frames, video files) are decoded in chunks and written as
JPEG. Object ids are renumbered to split-unique ``anno_id`` s (the source id stays in ``attributes["source_obj_id"]``
and the source video's frame positions in ``frame_indices`` of the video entry). ``mask_dict.json`` and
``boxes.json`` are streamed one object at a time, so memory stays that of one video; ``boxes.json`` keeps the boxes
of box-only sources (tracking, grounding), whose masks are null. ReVOS foreground masks go to
``mask_dict_foreground.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sparrow.atomic import atomic_dir
from sparrow.data.mevis import write_frames
from sparrow.data.schema import VideoRecord
from sparrow.errors import SparrowError
from sparrow.output import write_marker

CHUNK = 32  # frames decoded at a time from a video file


@dataclass
class ConvertStats:
    videos: int = 0
    expressions: int = 0
    objects: int = 0
    frames: int = 0


def _dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


class _MapWriter:
    """Writes ``{key: value, ...}`` to a file one entry at a time."""

    def __init__(self, handle: TextIO) -> None:
        self.handle, self.first = handle, True
        handle.write("{")

    def add(self, key: str, value: Any) -> None:
        self.handle.write(("" if self.first else ",") + json.dumps(key) + ":" + _dump(value))
        self.first = False

    def close(self) -> None:
        self.handle.write("}")


def write_record_frames(rec: VideoRecord, folder: Path, link: bool = False) -> None:
    """The record's frames as ``folder/<name>.jpg``: JPEG files copied (hard-linked with ``link`` where the file
    system allows), anything else decoded in chunks of ``CHUNK`` frames and encoded."""
    if rec.frame_dir is not None and rec.frame_ext.lower() == ".jpg":
        folder.mkdir(parents=True, exist_ok=True)
        for t, name in enumerate(rec.frames):
            src = rec.frame_path(t)
            if not src.is_file():
                raise SparrowError(f"missing frame of video {rec.video_id}", src)
            if link:
                try:
                    os.link(src, folder / f"{name}.jpg")
                    continue
                except OSError:
                    pass  # another file system: copy instead
            shutil.copyfile(src, folder / f"{name}.jpg")
        return
    for start in range(0, rec.num_frames, CHUNK):
        idx = list(range(start, min(start + CHUNK, rec.num_frames)))
        write_frames(folder, [rec.frames[t] for t in idx], rec.load_frames(idx), atomic=False)


def convert_to_mevis(
    records: Iterable[VideoRecord], out: str | Path, frames: bool = True, link: bool = False
) -> ConvertStats:
    """Write ``records`` as the MeViS-layout split folder ``out`` (replaced atomically); see the module doc.
    ``link`` hard-links JPEG frames instead of copying them."""
    stats = ConvertStats()
    meta: dict[str, Any] = {}
    foreground: dict[str, Any] = {}
    next_id = 0
    with atomic_dir(out) as tmp:
        with open(tmp / "mask_dict.json", "w") as mf, open(tmp / "boxes.json", "w") as bf:
            masks_out, boxes_out = _MapWriter(mf), _MapWriter(bf)
            for rec in records:
                if rec.video_id in meta:
                    raise SparrowError(f"video id {rec.video_id!r} appears twice")
                if frames:
                    write_record_frames(rec, tmp / "JPEGImages" / rec.video_id, link)
                ids: dict[int, int] = {}
                objects_meta = {}
                for obj in rec.objects.values():
                    ids[obj.obj_id] = next_id
                    masks_out.add(str(next_id), list(obj.masks))
                    boxes_out.add(str(next_id), {"boxes": list(obj.boxes), "full_boxes": obj.full_boxes})
                    objects_meta[str(next_id)] = {
                        "category": obj.category,
                        "attributes": {**obj.attributes, "source_obj_id": obj.obj_id},
                    }
                    next_id += 1
                expressions = {}
                for e in rec.expressions:
                    expressions[e.exp_id] = {
                        "exp": e.text,
                        "anno_id": [str(ids[o]) for o in e.obj_ids],
                        "obj_id": e.extra.get("obj_id", list(range(len(e.obj_ids)))),
                        "tags": e.tags,
                        "kind": e.kind,
                        **{k: v for k, v in e.extra.items() if k != "obj_id"},
                    }
                meta[rec.video_id] = {
                    "frames": rec.frames,
                    "height": rec.height,
                    "width": rec.width,
                    "tags": rec.tags,
                    "objects": objects_meta,
                    "expressions": expressions,
                    **rec.extra,
                    **({"frame_indices": rec.frame_indices} if rec.frame_indices is not None else {}),
                    **({"fps": rec.fps} if rec.fps else {}),
                }
                if rec.foreground is not None:
                    foreground[rec.video_id] = {"masks_rle": list(rec.foreground)}
                stats.videos += 1
                stats.expressions += len(rec.expressions)
                stats.objects += len(rec.objects)
                stats.frames += rec.num_frames
            masks_out.close()
            boxes_out.close()
        (tmp / "meta_expressions.json").write_text(_dump({"videos": meta}))
        if foreground:
            (tmp / "mask_dict_foreground.json").write_text(_dump(foreground))
        write_marker(tmp, "data convert")  # a later run may replace this folder, not a user's (sparrow.output)
    return stats
