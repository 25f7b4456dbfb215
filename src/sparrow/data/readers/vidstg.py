"""VidSTG in the layout of its release (Zhang et al. 2020, on VidOR; the files TubeDETR's
``preproc/preproc_vidstg.py`` reads)::

    <root>/<split>_annotations.json        [{"vid", "frame_count", "fps", "width", "height",
                                             "used_segment": {"begin_fid", "end_fid"},
                                             "temporal_gt": {"begin_fid", "end_fid"},
                                             "captions": [{"target_id", "description"}],      declarative
                                             "questions": [{"target_id", "description", "type"}]}]  interrogative
    <root>/vidor/annotation/{training,validation}/<folder>/<vid>.json
                                           VidOR: {"video_path": "<folder>/<vid>.mp4", "subject/objects":
                                           [{"tid", "category"}], "trajectories": [[{"tid", "bbox": {"xmin", "ymin",
                                           "xmax", "ymax"}}, ...] per frame]}
    <root>/vidor/video/<folder>/<vid>.mp4

``train``/``val`` use VidOR ``training``, ``test`` uses ``validation``. One record per video (entries of one video
are merged), one object per VidOR trajectory (boxes read from the VidOR file on first access), one expression per
sentence: tag/kind ``declarative`` or ``interrogative``, ``extra`` = ``span`` (temporal GT, ``[begin, end)``),
``segment`` (the used segment) and, for questions, ``type``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from sparrow.data.json_index import JsonMapIndex
from sparrow.data.readers.common import box_track, load_json
from sparrow.data.schema import Expression, VideoRecord
from sparrow.errors import SparrowError

SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")


def splits(root: str | Path) -> list[str]:
    return [s for s in SPLITS if (Path(root) / f"{s}_annotations.json").is_file()]


def _trajectories(index: JsonMapIndex, num_frames: int):
    cache: dict[int, list] = {}
    path = index.path

    def load_for(tid: int) -> list:
        if not cache:
            traj = index.get("trajectories")
            if not isinstance(traj, list) or len(traj) != num_frames:
                raise SparrowError(f"expected 'trajectories' with {num_frames} frames", path)
            for t, boxes in enumerate(traj):
                for b in boxes:
                    bb = b["bbox"]
                    cache.setdefault(int(b["tid"]), [None] * num_frames)[t] = [
                        float(bb["xmin"]),
                        float(bb["ymin"]),
                        float(bb["xmax"]),
                        float(bb["ymax"]),
                    ]
        return cache.get(tid, [None] * num_frames)

    return load_for


def read(root: str | Path, split: str = "test") -> list[VideoRecord]:
    root = Path(root)
    path = root / f"{split}_annotations.json"
    entries = load_json(path)
    if not isinstance(entries, list):
        raise SparrowError("expected a list of annotations", path)
    vidor_set = "validation" if split == "test" else "training"
    vidor_files = {p.stem: p for p in sorted((root / "vidor" / "annotation" / vidor_set).glob("*/*.json"))}
    by_video: dict[str, list[dict]] = {}
    for n, e in enumerate(entries):
        if not isinstance(e, dict) or "vid" not in e:
            raise SparrowError(f"entry {n}: need 'vid'", path)
        by_video.setdefault(str(e["vid"]), []).append(e)
    records = []
    for vid in sorted(by_video):
        first = by_video[vid][0]
        vidor_path = vidor_files.get(vid)
        if vidor_path is None:
            raise SparrowError(f"video {vid}: no VidOR annotation under vidor/annotation/{vidor_set}", path)
        vidor = JsonMapIndex(vidor_path)  # the trajectories are parsed only when an object is accessed
        T = int(first["frame_count"])
        load_for = _trajectories(vidor, T)
        objects = {
            int(o["tid"]): box_track(int(o["tid"]), T, partial(load_for, int(o["tid"])), category=o.get("category"))
            for o in vidor.get("subject/objects") or []
        }
        expressions = []
        for e in by_video[vid]:
            seg = [int(e["used_segment"]["begin_fid"]), int(e["used_segment"]["end_fid"])]
            span = [int(e["temporal_gt"]["begin_fid"]), int(e["temporal_gt"]["end_fid"])]
            for qtype, key in (("declarative", "captions"), ("interrogative", "questions")):
                for i, q in enumerate(e.get(key, [])):
                    extra = {"span": span, "segment": seg, **({"type": q["type"]} if "type" in q else {})}
                    exp_id = f"{seg[0]}-{seg[1]}-{qtype[0]}{i}"
                    expressions.append(
                        Expression(
                            exp_id,
                            " ".join(q["description"].split()),
                            [int(q["target_id"])],
                            tags=[qtype],
                            kind=qtype,
                            extra=extra,
                        )
                    )
        record = VideoRecord(
            video_id=vid,
            frames=[f"{t:06d}" for t in range(T)],
            height=int(first["height"]),
            width=int(first["width"]),
            objects=objects,
            expressions=expressions,
            video_path=root / "vidor" / "video" / (vidor.get("video_path") or f"{vid}.mp4"),
            fps=float(first.get("fps", 0)) or None,
        )
        record.validate(source=path)
        records.append(record)
    return records
