"""LaSOT in the layout of its release (Fan et al., "LaSOT", CVPR 2019 / IJCV 2021; the toolkit's folder layout)::

    <root>/<class>/<class>-<n>/img/00000001.jpg ...
    <root>/<class>/<class>-<n>/groundtruth.txt       one "x,y,w,h" per frame (pixels)
    <root>/<class>/<class>-<n>/full_occlusion.txt    comma-separated 0/1 per frame
    <root>/<class>/<class>-<n>/out_of_view.txt       comma-separated 0/1 per frame
    <root>/<class>/<class>-<n>/nlp.txt               one sentence describing the target
    <root>/testing_set.txt                           the 280 test sequences, one name a line (optional)

Splits: ``test`` (the sequences in ``testing_set.txt``), ``train`` (the others) and ``all``. One record per
sequence with one object (id 1, category = class) and one expression (``nlp.txt``, kind ``nlp``). Boxes are
``[x0, y0, x1, y1]`` (``x + w``); a frame that is fully occluded or out of view has no box. Frame names come from
the number of groundtruth lines (``%08d`` from 1); boxes are read when the object is first accessed.
"""

from __future__ import annotations

from pathlib import Path

from sparrow.data.readers.common import box_track, image_size, parse_flags, parse_xywh_lines, read_lines, read_text
from sparrow.data.schema import Expression, VideoRecord
from sparrow.errors import SparrowError

SPLITS = ("train", "test", "all")
EVAL_SPLITS = ("test",)


def splits(root: str | Path) -> list[str]:
    root = Path(root)
    return list(SPLITS) if (root / "testing_set.txt").is_file() else (["all"] if _sequences(root) else [])


def _sequences(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/*/groundtruth.txt"))


def _boxes(seq: Path, num_frames: int):
    def load():
        boxes = parse_xywh_lines(seq / "groundtruth.txt", num_frames)
        hidden = [
            a or b
            for a, b in zip(
                parse_flags(seq / "full_occlusion.txt", num_frames),
                parse_flags(seq / "out_of_view.txt", num_frames),
                strict=True,
            )
        ]
        return [None if h else b for b, h in zip(boxes, hidden, strict=True)]

    return load


def read(root: str | Path, split: str = "test") -> list[VideoRecord]:
    root = Path(root)
    if split not in SPLITS:
        raise SparrowError(f"unknown LaSOT split {split!r}; choose from {', '.join(SPLITS)}")
    test = set(read_lines(root / "testing_set.txt")) if split != "all" else set()
    records = []
    for seq in _sequences(root):
        if split != "all" and (seq.name in test) != (split == "test"):
            continue
        num_frames = len(read_lines(seq / "groundtruth.txt"))
        frames = [f"{t:08d}" for t in range(1, num_frames + 1)]
        frame_dir = seq / "img"
        height, width = image_size(frame_dir / f"{frames[0]}.jpg")
        text = " ".join(read_text(seq / "nlp.txt").split()) if (seq / "nlp.txt").is_file() else ""
        obj = box_track(1, num_frames, _boxes(seq, num_frames), category=seq.parent.name)
        expressions = [Expression("0", text, [1], kind="nlp")] if text else []
        record = VideoRecord(
            video_id=seq.name,
            frames=frames,
            height=height,
            width=width,
            objects={1: obj},
            expressions=expressions,
            frame_dir=frame_dir,
            frame_ext=".jpg",
        )
        record.validate(source=seq)
        records.append(record)
    return records
