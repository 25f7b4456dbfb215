"""GOT-10k in the layout of its release (Huang et al., TPAMI 2019; the ``got10k`` toolkit's layout)::

    <root>/<split>/list.txt                              sequence names, one a line (split: train, val, test)
    <root>/<split>/<seq>/00000001.jpg ...
    <root>/<split>/<seq>/groundtruth.txt                 one "x,y,w,h" per frame (test: first frame only)
    <root>/<split>/<seq>/absence.label                   0/1 per frame, one a line (train/val)
    <root>/<split>/<seq>/meta_info.ini                   "key: value" lines: object_class, motion_class, ...

GOT-10k has no language: each record gets one expression made from ``meta_info.ini`` (``the <object_class>``,
kind ``class_name``, tag ``no_language``). One object (id 1); a frame marked absent has no box; on ``test`` only
the first frame has one (the others are not annotated, also None). Boxes are read on first access.
"""

from __future__ import annotations

from pathlib import Path

from sparrow.data.readers.common import box_track, frame_names, image_size, parse_flags, parse_xywh_lines, read_lines
from sparrow.data.schema import Expression, VideoRecord
from sparrow.errors import SparrowError

SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")


def splits(root: str | Path) -> list[str]:
    return [s for s in SPLITS if (Path(root) / s / "list.txt").is_file()]


def meta_info(path: Path) -> dict[str, str]:
    """``key: value`` pairs of a ``meta_info.ini`` (empty when the file is absent)."""
    if not path.is_file():
        return {}
    out = {}
    for line in read_lines(path):
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _boxes(seq: Path, num_frames: int):
    def load():
        boxes = parse_xywh_lines(seq / "groundtruth.txt")
        if len(boxes) == 1 and num_frames > 1:  # test split: first frame only
            return boxes + [None] * (num_frames - 1)
        if len(boxes) != num_frames:
            raise SparrowError(f"{len(boxes)} boxes for {num_frames} frames", seq / "groundtruth.txt")
        absent = parse_flags(seq / "absence.label", num_frames)
        return [None if a else b for b, a in zip(boxes, absent, strict=True)]

    return load


def read(root: str | Path, split: str = "val") -> list[VideoRecord]:
    root = Path(root)
    if split not in SPLITS:
        raise SparrowError(f"unknown GOT-10k split {split!r}; choose from {', '.join(SPLITS)}")
    records = []
    for name in sorted(read_lines(root / split / "list.txt")):
        seq = root / split / name
        frames, ext = frame_names(seq)
        height, width = image_size(seq / f"{frames[0]}{ext}")
        info = meta_info(seq / "meta_info.ini")
        category = info.get("object_class")
        obj = box_track(1, len(frames), _boxes(seq, len(frames)), category=category, attributes=info)
        text = f"the {category}" if category else ""
        expressions = [Expression("0", text, [1], tags=["no_language"], kind="class_name")] if text else []
        record = VideoRecord(
            video_id=name,
            frames=frames,
            height=height,
            width=width,
            objects={1: obj},
            expressions=expressions,
            frame_dir=seq,
            frame_ext=ext,
        )
        record.validate(source=seq)
        records.append(record)
    return records
