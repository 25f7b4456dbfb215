"""Generate a SynthRef split: sample scenes, render them, write expressions, save in the MeViS layout.

Seeding: video ``i`` of split ``s`` with seed ``S`` draws everything from
``numpy.random.default_rng(SeedSequence([S, code(s), i]))``, so a video depends on nothing else (not on the
number of workers, not on the other videos), and the three splits are different streams (disjoint scenes by
construction). Video ids carry the split (``train_00042``); object ``k`` of video ``i`` has anno_id ``10*i + k``.
The split folder is written under a temporary name and renamed into place at the end.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from sparrow.atomic import atomic_dir
from sparrow.data.mevis import write_frames, write_mevis_annotations
from sparrow.data.rle import RLE
from sparrow.data.schema import Expression, ObjectTrack, VideoRecord
from sparrow.data.synthref.expressions import (
    check_query,
    choose_queries,
    facts_from_record,
    motion_truth,
    realise,
)
from sparrow.data.synthref.render import RenderedClip, boxes_of, render
from sparrow.data.synthref.scene import SceneSpec, sample_scene
from sparrow.errors import SparrowError
from sparrow.output import write_marker

SPLITS = ("train", "valid", "test")
_SPLIT_CODE = {"train": 1, "valid": 2, "test": 3}
MAX_OBJECTS = 10  # anno_id = 10 * video index + object index


@dataclass(frozen=True)
class SynthConfig:
    """Clip geometry and how many expressions each video gets."""

    size: int = 128
    num_frames: int = 24
    expressions_per_video: int = 4
    jpeg_quality: int = 95

    def validate(self) -> None:
        if not 32 <= self.size <= 1024:
            raise SparrowError(f"--size must be in [32, 1024], got {self.size}")
        if not 4 <= self.num_frames <= 1000:
            raise SparrowError(f"--frames must be in [4, 1000], got {self.num_frames}")
        if self.expressions_per_video < 1:
            raise SparrowError(f"--expressions must be at least 1, got {self.expressions_per_video}")


def video_id(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def video_rng(split: str, seed: int, index: int) -> np.random.Generator:
    """The generator of one video: a function of (split, seed, index) only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index)]))


def _object_tags(clip: RenderedClip, facts: dict, ids: list[int], scale: float) -> dict[int, set[str]]:
    """Measured per-object difficulties: occlusion (>= 30% of the in-frame shape hidden on at least two frames),
    reentry (leaves the frame for >= 2 frames and comes back), fast (>= 3.5 px/frame at 128 px)."""
    full_area = clip.full.sum(axis=(2, 3))
    hidden = full_area - clip.visible.sum(axis=(2, 3))
    tags: dict[int, set[str]] = {}
    for k, obj_id in enumerate(ids):
        t = set()
        occluded = (hidden[k] >= np.maximum(0.3 * full_area[k], 8 * scale * scale)) & (full_area[k] > 0)
        if np.count_nonzero(occluded) >= 2:
            t.add("occlusion")
        if motion_truth("returns", facts[obj_id]):
            t.add("reentry")
        if motion_truth("fast", facts[obj_id]):
            t.add("fast")
        tags[obj_id] = t
    return tags


def _encode(masks: np.ndarray) -> list[RLE | None]:
    """COCO RLEs (JSON form, as :func:`sparrow.data.rle.encode_mask`) of masks ``[T, H, W]``; None where empty."""
    present = masks.any(axis=(1, 2))
    out: list[RLE | None] = [None] * len(masks)
    if present.any():
        coded = mask_utils.encode(np.asfortranarray(masks[present].transpose(1, 2, 0).astype(np.uint8)))
        for t, rle in zip(np.flatnonzero(present), coded):
            out[int(t)] = {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}
    return out


def _record(vid: str, index: int, scene: SceneSpec, clip: RenderedClip) -> VideoRecord:
    T = scene.num_frames
    visible_boxes = boxes_of(clip.visible)
    full_boxes = boxes_of(clip.full)
    objects: dict[int, ObjectTrack] = {}
    for k, obj in enumerate(scene.objects):
        obj_id = MAX_OBJECTS * index + k
        frame_centres = obj.centres - scene.camera
        objects[obj_id] = ObjectTrack(
            obj_id=obj_id,
            masks=_encode(clip.visible[k]),
            boxes=[None if np.isnan(b[0]) else [float(v) for v in b] for b in visible_boxes[k]],
            full_boxes=[None if np.isnan(b[0]) else [float(v) for v in b] for b in full_boxes[k]],
            category=obj.shape,
            attributes={
                "shape": obj.shape,
                "colour": obj.colour,
                "size": obj.size,
                "motion": obj.motion,
                "direction": obj.direction,
                "appear": obj.appear,
                "z": obj.z,
                "radius": round(obj.radius, 2),
                "centres": np.round(frame_centres, 2).tolist(),
            },
        )
    planted = {d: [MAX_OBJECTS * index + k for k in ks] for d, ks in sorted(scene.planted.items())}
    return VideoRecord(
        video_id=vid,
        frames=[f"{t:05d}" for t in range(T)],
        height=scene.size,
        width=scene.size,
        objects=objects,
        extra={"camera": scene.camera.tolist(), "background": scene.background, "planted": planted},
    )


def make_video(
    split: str, seed: int, index: int, config: SynthConfig = SynthConfig()
) -> tuple[VideoRecord, np.ndarray]:
    """Generate video ``index`` of a split: its record (no frame folder yet) and frames ``[T, H, W, 3]`` uint8.

    Scenes for which no unambiguous expression exists are resampled from the same generator.
    """
    return build_video(video_rng(split, seed, index), video_id(split, index), index, config)


def build_video(
    rng: np.random.Generator, vid: str, index: int, config: SynthConfig = SynthConfig(), force: tuple[str, ...] = ()
) -> tuple[VideoRecord, np.ndarray]:
    """One clip from generator ``rng``: record ``vid`` (object ``k`` has anno_id ``10*index + k``) and frames
    ``[T, H, W, 3]`` uint8; ``force`` plants those difficulties (``sample_scene``). :func:`make_video` and the
    on-the-fly training source (``sparrow.data.synthref.stream``) both build clips here."""
    for _ in range(50):
        scene = sample_scene(rng, config.size, config.num_frames, force)
        clip = render(scene)
        record = _record(vid, index, scene, clip)
        facts = facts_from_record(record)
        object_tags = _object_tags(clip, facts, list(record.objects), config.size / 128.0)
        chosen = choose_queries(rng, facts, object_tags, config.expressions_per_video)
        if chosen:
            break
    else:  # pragma: no cover - would be a generator bug
        raise RuntimeError(f"no unambiguous expression found for {vid} after 50 scenes")
    for i, (query, targets, tags) in enumerate(chosen):
        problem = check_query(query, facts, targets)
        if problem is not None:  # construction and checker disagree: a bug, never written out
            raise RuntimeError(f"{vid}: expression {query} is ambiguous: {problem}")
        record.expressions.append(
            Expression(
                exp_id=str(i),
                text=realise(query, len(targets)),
                obj_ids=list(targets),
                tags=tags,
                kind=query.kind,
                extra={"query": query.to_json()},
            )
        )
    record.tags = sorted({t for e in record.expressions for t in e.tags})
    return record, clip.frames


def _make_and_write(job: tuple[str, int, int, SynthConfig, str]) -> VideoRecord:
    split, seed, index, config, tmp_dir = job
    record, frames = make_video(split, seed, index, config)
    write_frames(
        Path(tmp_dir) / "JPEGImages" / record.video_id, record.frames, frames, quality=config.jpeg_quality, atomic=False
    )
    return record


def generate_split(
    out: str | Path,
    videos: int,
    seed: int = 0,
    split: str = "train",
    config: SynthConfig = SynthConfig(),
    workers: int = 1,
    progress: bool = True,
) -> list[VideoRecord]:
    """Write ``out/<split>/`` (MeViS layout + boxes.json) with ``videos`` clips; return their records.

    The bytes written depend only on (videos, seed, split, config), not on ``workers``. An existing split folder
    is replaced only once the new one is complete (whether it may be replaced is the caller's decision:
    :func:`sparrow.output.check_output`); the split folder holds the marker :data:`sparrow.output.MARKER`.
    """
    if split not in SPLITS:
        raise SparrowError(f"--split must be one of {list(SPLITS)}, got {split!r}")
    if videos < 1:
        raise SparrowError(f"--videos must be at least 1, got {videos}")
    if seed < 0:
        raise SparrowError(f"--seed must be >= 0, got {seed}")
    if workers < 1:
        raise SparrowError(f"--workers must be at least 1, got {workers}")
    config.validate()
    if Path(out).exists() and not Path(out).is_dir():
        raise SparrowError("--out must be a folder, not a file", out)
    split_dir = Path(out) / split
    with atomic_dir(split_dir) as tmp:
        jobs = [(split, seed, i, config, str(tmp)) for i in range(videos)]
        bar = tqdm(total=videos, desc=f"synth {split}", unit="video", disable=not progress)
        records: list[VideoRecord] = []
        if workers == 1:
            for job in jobs:
                records.append(_make_and_write(job))
                bar.update()
        else:
            # forkserver: workers fork from a fresh single-threaded server, never from a caller that may run threads
            with multiprocessing.get_context("forkserver").Pool(workers) as pool:
                for record in pool.imap(_make_and_write, jobs, chunksize=max(1, min(16, videos // (4 * workers)))):
                    records.append(record)
                    bar.update()
        bar.close()
        write_mevis_annotations(records, tmp)
        write_marker(tmp, "synth")  # lists every file: a later run may replace this split, not a user's folder
    for record in records:
        record.frame_dir = split_dir / "JPEGImages" / record.video_id
    return records
