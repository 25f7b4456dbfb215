"""The curated sequence layout of the SPARROW authors' release (``RISys-Lab/SPARROW`` ``util/got10k_dataset.py``
and siblings; the layout of the curated TSF dataset of the authors' release)::

    <root>/<split>/<sequence>/<clip>/img/<frame>.jpg
    <root>/<split>/<sequence>/<clip>/mask/<obj:03d>/<frame>.png   per-object binary PNG (value > 127), or
                                    mask/<frame>_<obj>.png, or mask/<frame>.png (single object), tried in order
    <root>/<split>/<sequence>/<clip>/groundtruth.txt              one "x,y,w,h" per frame
    <root>/<split>/<sequence>/<clip>/nlp.txt                      caption with grounding "[phrase](1, 2)"

One record per clip (``video_id`` = ``<sequence>/<clip>``), one expression per ``[phrase](ids)`` (its ``extra``
keeps the whole caption); a caption without markup is one expression referring to object 1. Objects are the ids
named; masks come from the PNGs (read on first access, a frame without a PNG is "absent") and boxes from the masks.
"""

from __future__ import annotations

import re
from pathlib import Path

from sparrow.data.readers.common import binary_png_track, frame_names, image_size, read_text
from sparrow.data.schema import Expression, LazyObjectTrack, VideoRecord
from sparrow.errors import SparrowError

SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")
GROUNDED = re.compile(r"\[([^\]]+)\]\(([^)]+)\)")


def splits(root: str | Path) -> list[str]:
    return [s for s in SPLITS if (Path(root) / s).is_dir()]


def parse_caption(caption: str, where: Path) -> list[tuple[str, list[int]]]:
    """``[(phrase, [ids])]`` of a grounded caption; ``[(caption, [1])]`` when it has no markup."""
    found = GROUNDED.findall(caption)
    if not found:
        return [(" ".join(caption.split()), [1])]
    out = []
    for phrase, ids in found:
        try:
            out.append((" ".join(phrase.split()), [int(v) for v in ids.split(",")]))
        except ValueError as exc:
            raise SparrowError(f"bad object ids {ids!r} in [{phrase}]({ids})", where) from exc
    return out


def mask_paths(mask_dir: Path, frames: list[str], obj: int) -> list[Path | None]:
    """Per frame, the first existing candidate of the release's three naming schemes (None if none exists)."""
    out: list[Path | None] = []
    for stem in frames:
        candidates = (mask_dir / f"{obj:03d}" / f"{stem}.png", mask_dir / f"{stem}_{obj}.png", mask_dir / f"{stem}.png")
        out.append(next((p for p in candidates if p.is_file()), None))
    return out


def read(root: str | Path, split: str = "train") -> list[VideoRecord]:
    root = Path(root)
    base = root / split
    if not base.is_dir():
        raise SparrowError(f"no split folder {split!r}", base)
    records = []
    for clip in sorted(p.parent for p in base.glob("*/*/nlp.txt")):
        nlp = clip / "nlp.txt"
        caption = " ".join(read_text(nlp).split())
        if not caption:
            raise SparrowError("empty caption", nlp)
        frames, ext = frame_names(clip / "img")
        size = image_size(clip / "img" / f"{frames[0]}{ext}")
        grounded = parse_caption(caption, nlp)
        objects = {}
        for _, ids in grounded:
            for obj in ids:
                if obj not in objects:
                    objects[obj] = LazyObjectTrack(
                        obj,
                        len(frames),
                        lambda o=obj, c=clip, f=frames, s=size: binary_png_track(mask_paths(c / "mask", f, o), s),
                    )
        expressions = [
            Expression(str(i), phrase, ids, extra={"caption": caption}) for i, (phrase, ids) in enumerate(grounded)
        ]
        record = VideoRecord(
            video_id=f"{clip.parent.name}/{clip.name}",
            frames=frames,
            height=size[0],
            width=size[1],
            objects=objects,
            expressions=expressions,
            frame_dir=clip / "img",
            frame_ext=ext,
        )
        record.validate(source=nlp)
        records.append(record)
    return records
