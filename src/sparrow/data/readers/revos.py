"""ReVOS in the layout of its release (``cilinyan/VISA``, README "ReVOS"; the files its ``tools/eval_revos.py``
reads)::

    <root>/JPEGImages/<video>/<frame>.jpg
    <root>/meta_expressions_train_.json    {"videos": {<video>: {"vid_id": ..., "frames": [...], "expressions":
    <root>/meta_expressions_valid_.json        {<exp_id>: {"exp": str, "obj_id": [...], "anno_id": [...],
                                               "type_id": 0 (referring) | 1 (reasoning)}}}}}
    <root>/mask_dict.json                  {str(anno_id): [COCO RLE or null per frame]}
    <root>/mask_dict_foreground.json       {<video>: {"masks_rle": [COCO RLE per frame]}} (all foreground)

The expressions and masks are the MeViS layout (read by :func:`sparrow.data.mevis.read_mevis`, streaming). Split
names: ``train``, ``valid``, and the two halves of the evaluation split, ``valid-referring`` (``type_id`` 0) and
``valid-reasoning`` (``type_id`` 1); each expression carries the tag ``referring`` or ``reasoning``. The per-video
foreground masks (the robustness metric's denominator) become ``VideoRecord.foreground``, read on first access.
"""

from __future__ import annotations

from pathlib import Path

from sparrow.data.json_index import JsonMapIndex
from sparrow.data.mevis import read_mevis
from sparrow.data.readers.common import LazyList
from sparrow.data.schema import VideoRecord
from sparrow.errors import SparrowError

SPLITS = ("train", "valid", "valid-referring", "valid-reasoning")
EVAL_SPLITS = ("valid", "valid-referring", "valid-reasoning")
TYPES = {0: "referring", 1: "reasoning"}


def _meta_file(root: Path, base: str) -> str:
    for name in (f"meta_expressions_{base}_.json", f"meta_expressions_{base}.json"):
        if (root / name).is_file():
            return name
    raise SparrowError(f"missing annotation file meta_expressions_{base}_.json", root)


def splits(root: str | Path) -> list[str]:
    root = Path(root)
    found = []
    for base in ("train", "valid"):
        if any((root / f"meta_expressions_{base}{u}.json").is_file() for u in ("_", "")):
            found += [base] if base == "train" else list(EVAL_SPLITS)
    return found


def read(root: str | Path, split: str = "valid") -> list[VideoRecord]:
    """Records of one split (see the module doc), sorted by video id; masks are read on first access."""
    root = Path(root)
    if split not in SPLITS:
        raise SparrowError(f"unknown ReVOS split {split!r}; choose from {', '.join(SPLITS)}")
    base, _, subset = split.partition("-")
    meta_file = _meta_file(root, base)
    records = read_mevis(root, check_frames=False, meta_file=meta_file)
    fg_path = root / "mask_dict_foreground.json"
    fg_index = JsonMapIndex(fg_path) if fg_path.is_file() else None
    out = []
    for rec in records:
        for exp in rec.expressions:
            type_id = exp.extra.get("type_id")
            if type_id is not None and int(type_id) in TYPES:
                exp.tags.append(TYPES[int(type_id)])
                exp.kind = exp.kind or TYPES[int(type_id)]
        if subset:
            rec.expressions = [e for e in rec.expressions if subset in e.tags]
            if not rec.expressions:
                continue
        if fg_index is not None:
            rec.foreground = LazyList(rec.num_frames, _foreground_loader(fg_index, rec.video_id, rec.num_frames))
        out.append(rec)
    return out


def _foreground_loader(index: JsonMapIndex, video_id: str, num_frames: int):
    def load() -> list:
        entry = index.get(video_id)
        rles = entry.get("masks_rle") if isinstance(entry, dict) else None
        if not isinstance(rles, list) or len(rles) != num_frames:
            raise SparrowError(f"no foreground masks for {num_frames} frames of video {video_id!r}", index.path)
        return rles

    return load
