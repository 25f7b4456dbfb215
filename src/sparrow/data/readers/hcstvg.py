"""HC-STVG (v1 and v2) in the layout of its release (Tang et al. 2021; the files TubeDETR's
``preproc/preproc_hcstvg{,v2}.py`` read)::

    <root>/video/<...>/<vid>.mp4                         videos (any sub-folder depth)
    <root>/anno/<split>.json  or  <root>/anno_v2/<split>_v2.json  or  <root>/anno/<split>v2.json
        {"<vid>.mp4": {"img_num": int, "img_size": [H, W] (v2) | "height", "width" (v1),
                       "st_frame": int (1-based), "st_time": s, "ed_time": s,
                       "bbox": [[x, y, w, h], ...] one per frame from st_frame,
                       "English" (v2) | "caption" (v1): str}}

One record per video (all ``img_num`` frames, decoded from the mp4), one object (id 1, the tube's person) with
boxes on the tube's frames, one expression (the caption) whose ``extra["span"]`` is the tube's ``[start, end)`` in
0-based frames. ``fps = img_num / 20`` (HC-STVG clips are 20 s). Splits: v1 ``train``/``test``, v2 ``train``/``val``.
"""

from __future__ import annotations

from pathlib import Path

from sparrow.data.readers.common import box_track, load_json
from sparrow.data.schema import Expression, VideoRecord
from sparrow.errors import SparrowError

SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")
SECONDS = 20.0


def _anno_file(root: Path, split: str) -> Path | None:
    for rel in (
        f"anno_v2/{split}_v2.json",
        f"anno_v2/{split}v2.json",
        f"anno/{split}v2.json",
        f"anno/{split}_v2.json",
        f"anno/{split}.json",
    ):
        if (root / rel).is_file():
            return root / rel
    return None


def splits(root: str | Path) -> list[str]:
    return [s for s in SPLITS if _anno_file(Path(root), s) is not None]


def video_index(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of every ``.mp4`` under ``folder``."""
    return {p.stem: p for p in sorted(folder.rglob("*.mp4"))}


def read(root: str | Path, split: str = "val") -> list[VideoRecord]:
    root = Path(root)
    path = _anno_file(root, split)
    if path is None:
        raise SparrowError(
            f"no HC-STVG annotation file for split {split!r} (anno/{split}.json, anno_v2/{split}_v2.json)", root
        )
    data = load_json(path)
    if not isinstance(data, dict):
        raise SparrowError("expected an object {<vid>.mp4: annotation}", path)
    videos = video_index(root / "video")
    records = []
    for key in sorted(data):
        a = data[key]
        vid = Path(key).stem
        try:
            T = int(a["img_num"])
            H, W = (
                (int(a["img_size"][0]), int(a["img_size"][1]))
                if "img_size" in a
                else (int(a["height"]), int(a["width"]))
            )
            start = int(a["st_frame"]) - 1
            tube = [list(map(float, b)) for b in a["bbox"]]
            text = a.get("English", a.get("caption"))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise SparrowError(f"video {key!r}: malformed annotation ({type(exc).__name__}: {exc})", path) from exc
        if not isinstance(text, str) or start < 0 or start + len(tube) > T:
            raise SparrowError(f"video {key!r}: need a caption and a tube inside its {T} frames", path)

        def load(tube=tube, start=start, T=T):
            boxes = [None] * T
            for i, (x, y, w, h) in enumerate(tube):
                boxes[start + i] = [x, y, x + w, y + h] if w > 0 and h > 0 else None
            return boxes

        span = [start, start + len(tube)]
        record = VideoRecord(
            video_id=vid,
            frames=[f"{t:06d}" for t in range(T)],
            height=H,
            width=W,
            objects={1: box_track(1, T, load, category="person")},
            expressions=[Expression("0", " ".join(text.split()), [1], kind="declarative", extra={"span": span})],
            video_path=videos.get(vid, root / "video" / f"{vid}.mp4"),
            fps=T / SECONDS,
        )
        record.validate(source=path)
        records.append(record)
    return records
