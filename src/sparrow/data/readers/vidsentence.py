"""VID-Sentence in the layout of its release (Chen et al., ACL 2019, ``JeffCHEN2017/VID-Sentence``; on ImageNet VID)::

    <root>/ILSVRC/Data/VID/<split>/<video>/000000.JPEG ...
    <root>/ILSVRC/Annotations/VID/tubeGt/<split>/<video>.js
        {"annotations": [{"id": "<instance>", "track": [{"frame": n (1-based), "bbox": [x0, y0, x1, y1]}, ...]}]}
    <root>/ILSVRC/Data/VID/annSamples/<split>_valid_list.txt   line i: "<video>,<instance>" (tube index i)
    <root>/ILSVRC/Data/VID/annSamples/<split>_ann_list_v2.txt  "<tube index>,<sentence>" (one or more per tube)

Splits ``train``, ``val``, ``test``. One record per video (its JPEG frames), one object per annotated instance
(boxes from the tube, converted from inclusive ``x1, y1`` to exclusive ``x1 + 1, y1 + 1``, read on first access),
one expression per sentence (``exp_id`` = ``<tube index>`` or ``<tube index>-<k>`` for the k-th extra sentence).
"""

from __future__ import annotations

from pathlib import Path

from sparrow.data.readers.common import box_track, frame_names, image_size, load_json, read_lines
from sparrow.data.schema import Expression, VideoRecord
from sparrow.errors import SparrowError

SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")


def _lists(root: Path, split: str) -> tuple[Path, Path]:
    base = root / "ILSVRC" / "Data" / "VID" / "annSamples"
    return base / f"{split}_valid_list.txt", base / f"{split}_ann_list_v2.txt"


def splits(root: str | Path) -> list[str]:
    return [s for s in SPLITS if all(p.is_file() for p in _lists(Path(root), s))]


def _tube_loader(js: Path, instance: str, frames: list[str]):
    def load():
        data = load_json(js)
        ann = next((a for a in data.get("annotations", []) if str(a.get("id")) == instance), None)
        if ann is None:
            raise SparrowError(f"no tube for instance {instance}", js)
        position = {name: t for t, name in enumerate(frames)}
        boxes: list = [None] * len(frames)
        for step in ann.get("track", []):
            name = f"{int(step['frame']) - 1:06d}"
            if name not in position:
                raise SparrowError(f"instance {instance}: frame {step['frame']} is not in the video", js)
            x0, y0, x1, y1 = (float(v) for v in step["bbox"])
            boxes[position[name]] = [x0, y0, x1 + 1.0, y1 + 1.0]
        return boxes

    return load


def read(root: str | Path, split: str = "test") -> list[VideoRecord]:
    root = Path(root)
    valid_list, ann_list = _lists(root, split)
    tubes = []
    for n, line in enumerate(read_lines(valid_list)):
        video, sep, instance = line.partition(",")
        if not sep:
            raise SparrowError(f"line {n + 1}: expected '<video>,<instance>'", valid_list)
        tubes.append((video.strip(), instance.strip()))
    sentences: dict[int, list[str]] = {}
    for n, line in enumerate(read_lines(ann_list)):
        index, sep, text = line.partition(",")
        if not sep or not index.strip().isdigit() or int(index) >= len(tubes):
            raise SparrowError(f"line {n + 1}: expected '<tube index>,<sentence>' with a known index", ann_list)
        sentences.setdefault(int(index), []).append(" ".join(text.split()))
    by_video: dict[str, list[int]] = {}
    for index in sorted(sentences):
        by_video.setdefault(tubes[index][0], []).append(index)
    records = []
    for video in sorted(by_video):
        frame_dir = root / "ILSVRC" / "Data" / "VID" / split / video
        frames, ext = frame_names(frame_dir)
        height, width = image_size(frame_dir / f"{frames[0]}{ext}")
        js = root / "ILSVRC" / "Annotations" / "VID" / "tubeGt" / split / f"{video}.js"
        objects, expressions = {}, []
        for index in by_video[video]:
            instance = tubes[index][1]
            obj = int(instance)
            if obj not in objects:
                objects[obj] = box_track(obj, len(frames), _tube_loader(js, instance, frames))
            for k, text in enumerate(sentences[index]):
                expressions.append(Expression(str(index) if k == 0 else f"{index}-{k}", text, [obj]))
        record = VideoRecord(
            video_id=video,
            frames=frames,
            height=height,
            width=width,
            objects=objects,
            expressions=expressions,
            frame_dir=frame_dir,
            frame_ext=ext,
        )
        record.validate(source=ann_list)
        records.append(record)
    return records
