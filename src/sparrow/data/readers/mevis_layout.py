"""MeViS (and SynthRef, and anything ``sparrow data convert`` wrote) in the MeViS layout (``henghuiding/MeViS``):
``<root>/<split>/{JPEGImages/, meta_expressions.json, mask_dict.json}``, read by
:func:`sparrow.data.mevis.read_mevis` (streaming). ``root`` may also be one split folder (split ``.``).
"""

from __future__ import annotations

from pathlib import Path

from sparrow.data.mevis import read_mevis
from sparrow.data.schema import VideoRecord

SPLITS = ("train", "valid_u", "valid", "test")
EVAL_SPLITS = ("valid_u", "valid", "test")


def splits(root: str | Path) -> list[str]:
    root = Path(root)
    if (root / "meta_expressions.json").is_file():
        return ["."]
    return sorted(p.parent.name for p in root.glob("*/meta_expressions.json"))


def read(root: str | Path, split: str = ".") -> list[VideoRecord]:
    return read_mevis(Path(root) / split, check_frames=False)
