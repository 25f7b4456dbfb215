"""A2D-Sentences in the layout of its release (Gavrilyuk et al. 2018; the files MTTR's
``datasets/a2d_sentences`` reads)::

    <root>/Release/videoset.csv            no header: vid, label, start, end, height, width, total_frames,
                                           annotated_frames, subset (0 train, 1 test)
    <root>/Release/clips320H/<vid>.mp4
    <root>/text_annotations/a2d_annotation.txt           CSV with header video_id,instance_id,query
    <root>/text_annotations/a2d_missed_videos.txt        videos left out (optional)
    <root>/text_annotations/a2d_annotation_with_instances/<vid>/<frame>.h5
                                           HDF5 per annotated frame (1-based frame number, 5 digits):
                                           ``instance`` [N] ids, ``reMask`` [N, W, H] (or [W, H] when N = 1)

One record per video whose frames are its **annotated** frames (``frame_indices`` = frame number - 1 in the clip),
one object per instance id, one expression per sentence. Frame size comes from the first HDF5 file's mask shape;
masks are read when an object is first accessed. Rows whose instance id is not an integer (one known typo,
``1 (copy)``) are left out, as in MTTR.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from sparrow.data.readers.common import read_lines, read_text
from sparrow.data.rle import encode_mask, mask_to_box
from sparrow.data.schema import Expression, LazyObjectTrack, TrackData, VideoRecord
from sparrow.errors import SparrowError

SPLITS = ("train", "test")
EVAL_SPLITS = ("test",)
H5_HINT = "reading A2D-Sentences needs h5py: pip install h5py"


def _h5py():
    try:
        import h5py
    except ImportError as exc:
        raise SparrowError(H5_HINT) from exc
    return h5py


def splits(root: str | Path) -> list[str]:
    return list(SPLITS) if (Path(root) / "Release" / "videoset.csv").is_file() else []


def _h5_frame(path: Path) -> tuple[list[int], np.ndarray]:
    """``(instance ids, masks [N, H, W] bool)`` of one annotation file."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            ids = [int(v) for v in np.asarray(f["instance"]).reshape(-1)]
            masks = np.asarray(f["reMask"])
    except (OSError, KeyError) as exc:
        raise SparrowError(f"not a readable A2D annotation ({exc})", path) from exc
    if masks.ndim == 2:
        masks = masks[None]
    if masks.shape[0] != len(ids):
        raise SparrowError(f"{masks.shape[0]} masks for {len(ids)} instances", path)
    return ids, masks.transpose(0, 2, 1).astype(bool)


def _h5_size(path: Path) -> tuple[int, int]:
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            shape = f["reMask"].shape
    except (OSError, KeyError) as exc:
        raise SparrowError(f"not a readable A2D annotation ({exc})", path) from exc
    return int(shape[-1]), int(shape[-2])


def _loader(paths: list[Path], instance: int, size: tuple[int, int]):
    def load() -> TrackData:
        rles, boxes = [], []
        for path in paths:
            ids, masks = _h5_frame(path)
            if masks.shape[1:] != size:
                raise SparrowError(f"mask is {masks.shape[2]}x{masks.shape[1]}, not {size[1]}x{size[0]}", path)
            mask = masks[ids.index(instance)] if instance in ids else None
            box = None if mask is None else mask_to_box(mask)
            rles.append(None if box is None else encode_mask(mask))
            boxes.append(box)
        return rles, boxes, None

    return load


def read(root: str | Path, split: str = "test") -> list[VideoRecord]:
    """Records of one split (see the module doc), sorted by video id."""
    root = Path(root)
    if split not in SPLITS:
        raise SparrowError(f"unknown A2D-Sentences split {split!r}; choose from {', '.join(SPLITS)}")
    videoset = root / "Release" / "videoset.csv"
    subset = {}
    for n, row in enumerate(csv.reader(io.StringIO(read_text(videoset))), start=1):
        if len(row) < 9:
            raise SparrowError(f"line {n}: expected 9 columns, got {len(row)}", videoset)
        subset[row[0]] = row[8].strip()
    missed_path = root / "text_annotations" / "a2d_missed_videos.txt"
    missed = set(read_lines(missed_path)) if missed_path.is_file() else set()
    ann_path = root / "text_annotations" / "a2d_annotation.txt"
    rows: dict[str, list[tuple[int, str]]] = {}
    reader = csv.DictReader(io.StringIO(read_text(ann_path)))
    if not {"video_id", "instance_id", "query"} <= set(reader.fieldnames or []):
        raise SparrowError("expected the header video_id,instance_id,query", ann_path)
    for row in reader:
        try:
            instance = int(row["instance_id"])
        except ValueError:
            continue  # the release's one malformed id ("1 (copy)"), dropped as in MTTR
        rows.setdefault(row["video_id"], []).append((instance, " ".join(row["query"].split())))
    want = "0" if split == "train" else "1"
    inst_root = root / "text_annotations" / "a2d_annotation_with_instances"
    records = []
    for vid in sorted(rows):
        if vid in missed or subset.get(vid) != want:
            continue
        h5_files = sorted((inst_root / vid).glob("*.h5"))
        if not h5_files:
            raise SparrowError(f"video {vid}: no annotated frames", inst_root / vid)
        size = _h5_size(h5_files[0])
        frames = [p.stem for p in h5_files]
        objects, expressions = {}, []
        for i, (instance, text) in enumerate(rows[vid]):
            if instance not in objects:
                objects[instance] = LazyObjectTrack(instance, len(frames), _loader(h5_files, instance, size))
            expressions.append(Expression(str(i), text, [instance]))
        record = VideoRecord(
            video_id=vid,
            frames=frames,
            height=size[0],
            width=size[1],
            objects=objects,
            expressions=expressions,
            video_path=root / "Release" / "clips320H" / f"{vid}.mp4",
            frame_indices=[int(f) - 1 for f in frames],
        )
        record.validate(source=ann_path)
        records.append(record)
    return records
