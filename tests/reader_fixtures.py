"""Tiny datasets written in each official layout (see the docstrings of ``sparrow.data.readers.*``).

Geometry shared by all: frames ``H x W = 24 x 32``; object 1 is the rectangle ``x 4+t .. 12+t, y 4 .. 12`` on
frame ``t``; object 2 is ``x 18 .. 26, y 14 .. 20`` on frames ``t >= 1``. Frames are grey with the objects drawn
in red / green, so boxes and masks can be checked exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from sparrow.data.rle import encode_mask
from sparrow.data.video_io import write_video

H, W = 24, 32


def box(obj: int, t: int) -> list[float] | None:
    """The exact ``[x0, y0, x1, y1]`` of object ``obj`` on frame ``t`` (None when absent)."""
    if obj == 1:
        return [4.0 + t, 4.0, 12.0 + t, 12.0]
    return None if t < 1 else [18.0, 14.0, 26.0, 20.0]


def mask(obj: int, t: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    b = box(obj, t)
    if b is not None:
        m[int(b[1]) : int(b[3]), int(b[0]) : int(b[2])] = True
    return m


def frame(t: int) -> np.ndarray:
    img = np.full((H, W, 3), 90, dtype=np.uint8)
    img[mask(1, t)] = (220, 30, 30)
    img[mask(2, t)] = (30, 220, 30)
    return img


def index_png(t: int, values: tuple[int, int] = (1, 2)) -> Image.Image:
    arr = np.zeros((H, W), dtype=np.uint8)
    arr[mask(1, t)] = values[0]
    arr[mask(2, t)] = values[1]
    img = Image.fromarray(arr, mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
    return img


def _jpegs(folder: Path, names: list[str], ext: str = ".jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, name in enumerate(names):
        Image.fromarray(frame(t)).save(folder / f"{name}{ext}", quality=95)


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def refvos(root: Path, davis: bool = False, T: int = 4) -> Path:
    """Ref-YouTube-VOS (``davis=False``: valid without Annotations) or Ref-DAVIS17 (4 runs per object)."""
    names = [f"{5 * t:05d}" for t in range(T)]
    layout = {"train": ["vid_a", "vid_b"], "valid": ["vid_c"]}
    for split, videos in layout.items():
        meta = {}
        for vid in videos:
            _jpegs(root / split / "JPEGImages" / vid, names)
            if split == "train" or davis:
                (root / split / "Annotations" / vid).mkdir(parents=True, exist_ok=True)
                for t, name in enumerate(names):
                    index_png(t).save(root / split / "Annotations" / vid / f"{name}.png")
            if davis:
                texts = [f"red box {k}" for k in range(4)] + [f"green box {k}" for k in range(4)]
                exps = {str(i): {"exp": s, "obj_id": str(1 + i // 4)} for i, s in enumerate(texts)}
            else:
                exps = {"0": {"exp": "the red  box", "obj_id": "1"}, "1": {"exp": "the green box", "obj_id": "2"}}
            meta[vid] = {"frames": names, "expressions": exps}
        _json(root / "meta_expressions" / split / "meta_expressions.json", {"videos": meta})
    if not davis:
        objects = {"1": {"category": "car", "frames": names}, "2": {"category": "dog", "frames": names[1:]}}
        _json(root / "train" / "meta.json", {"videos": {v: {"objects": objects} for v in layout["train"]}})
    return root


def revos(root: Path, T: int = 4) -> Path:
    names = [f"{t:05d}" for t in range(T)]
    masks, fg = {}, {}
    for split, videos in {"train": ["MOSE/vid_a"], "valid": ["LVVIS/vid_b", "LVVIS/vid_c"]}.items():
        meta = {}
        for n, vid in enumerate(videos):
            _jpegs(root / "JPEGImages" / vid, names)
            base = 10 * (len(masks) + 1)
            for k in (1, 2):
                masks[str(base + k)] = [encode_mask(mask(k, t)) if mask(k, t).any() else None for t in range(T)]
            fg[vid] = {"masks_rle": [encode_mask(mask(1, t) | mask(2, t)) for t in range(T)]}
            meta[vid] = {
                "vid_id": n,
                "frames": names,
                "expressions": {
                    "0": {"exp": "the red box", "obj_id": [0], "anno_id": [base + 1], "type_id": 0},
                    "1": {"exp": "what moves to the right?", "obj_id": [0], "anno_id": [base + 1], "type_id": 1},
                    "2": {"exp": "both boxes", "obj_id": [0, 1], "anno_id": [base + 1, base + 2], "type_id": 0},
                },
            }
        _json(root / f"meta_expressions_{split}_.json", {"videos": meta})
    _json(root / "mask_dict.json", masks)
    _json(root / "mask_dict_foreground.json", fg)
    return root


def a2d(root: Path, T: int = 8) -> Path:
    import h5py

    rows = ["vid_a,1,0,1,240,320,8,2,0", "vid_b,2,0,1,240,320,8,2,1", "vid_missed,2,0,1,240,320,8,2,1"]
    (root / "Release").mkdir(parents=True)
    (root / "Release" / "videoset.csv").write_text("\n".join(rows) + "\n")
    (root / "text_annotations").mkdir()
    (root / "text_annotations" / "a2d_missed_videos.txt").write_text("vid_missed\n")
    (root / "text_annotations" / "a2d_annotation.txt").write_text(
        "video_id,instance_id,query\nvid_a,1,red box moving right\nvid_a,2,green box\nvid_a,1 (copy),typo\n"
        "vid_b,1,the red box\nvid_missed,1,gone\n"
    )
    for vid in ("vid_a", "vid_b", "vid_missed"):
        write_video(root / "Release" / "clips320H" / f"{vid}.mp4", [frame(t) for t in range(T)], fps=8)
        folder = root / "text_annotations" / "a2d_annotation_with_instances" / vid
        folder.mkdir(parents=True)
        for t in (2, 5):  # annotated frames (0-based); files are 1-based
            ids = [1, 2] if vid == "vid_a" else [1]
            with h5py.File(folder / f"{t + 1:05d}.h5", "w") as f:
                f["instance"] = np.asarray(ids, dtype=np.float64)
                m = np.stack([mask(i, t).T for i in ids]).astype(np.uint8)  # [N, W, H] as MATLAB writes
                f["reMask"] = m if len(ids) > 1 else m[0]
    return root


def lasot(root: Path, T: int = 5) -> Path:
    for cls, n in (("car", 1), ("car", 2), ("dog", 1)):
        seq = root / cls / f"{cls}-{n}"
        _jpegs(seq / "img", [f"{t:08d}" for t in range(1, T + 1)])
        lines = [
            ",".join(str(int(v)) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])) for b in (box(1, t) for t in range(T))
        ]
        (seq / "groundtruth.txt").write_text("\n".join(lines) + "\n")
        (seq / "full_occlusion.txt").write_text(",".join("1" if t == 2 else "0" for t in range(T)))
        (seq / "out_of_view.txt").write_text(",".join("0" for _ in range(T)))
        (seq / "nlp.txt").write_text(f"the red {cls} moving right\n")
    (root / "testing_set.txt").write_text("car-2\n")
    return root


def got10k(root: Path, T: int = 5) -> Path:
    for split, names in (
        ("train", ["GOT-10k_Train_000001", "GOT-10k_Train_000002"]),
        ("val", ["GOT-10k_Val_000001"]),
        ("test", ["GOT-10k_Test_000001"]),
    ):
        (root / split).mkdir(parents=True)
        (root / split / "list.txt").write_text("\n".join(names) + "\n")
        for name in names:
            seq = root / split / name
            _jpegs(seq, [f"{t:08d}" for t in range(1, T + 1)])
            lines = [f"{b[0]},{b[1]},{b[2] - b[0]},{b[3] - b[1]}" for b in (box(1, t) for t in range(T))]
            (seq / "groundtruth.txt").write_text("\n".join(lines[:1] if split == "test" else lines) + "\n")
            if split != "test":
                (seq / "absence.label").write_text("\n".join("1" if t == 3 else "0" for t in range(T)) + "\n")
                (seq / "meta_info.ini").write_text(
                    "[METAINFO]\nurl: https://example.org/x\nobject_class: red car\nmotion_class: running\n"
                )
    return root


def hcstvg(root: Path, T: int = 8) -> Path:
    for vid in ("clip_a", "clip_b"):
        write_video(root / "video" / "part1" / f"{vid}.mp4", [frame(t) for t in range(T)], fps=8)
    tube = [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in (box(1, t) for t in range(2, 6))]
    _json(
        root / "anno_v2" / "val_v2.json",
        {
            "clip_a.mp4": {
                "img_num": T,
                "img_size": [H, W],
                "st_frame": 3,
                "st_time": 1.0,
                "ed_time": 3.0,
                "bbox": tube,
                "English": "The man in red walks right.",
            }
        },
    )
    _json(
        root / "anno" / "test.json",
        {
            "clip_b.mp4": {
                "img_num": T,
                "height": H,
                "width": W,
                "st_frame": 3,
                "st_time": 1.0,
                "ed_time": 3.0,
                "bbox": tube,
                "caption": "The man in red walks.",
            }
        },
    )
    return root


def vidstg(root: Path, T: int = 8) -> Path:
    vid = "2401075277"
    write_video(root / "vidor" / "video" / "0001" / f"{vid}.mp4", [frame(t) for t in range(T)], fps=8)
    keys = ("xmin", "ymin", "xmax", "ymax")  # VidOR tids 0 / 1 are the shared geometry's objects 1 / 2
    traj = [
        [
            {"tid": k - 1, "bbox": dict(zip(keys, box(k, t))), "generated": 0, "tracker": "none"}
            for k in (1, 2)
            if box(k, t) is not None
        ]
        for t in range(T)
    ]
    _json(
        root / "vidor" / "annotation" / "validation" / "0001" / f"{vid}.json",
        {
            "video_id": vid,
            "video_path": f"0001/{vid}.mp4",
            "frame_count": T,
            "fps": 8,
            "width": W,
            "height": H,
            "subject/objects": [{"tid": 0, "category": "car"}, {"tid": 1, "category": "dog"}],
            "trajectories": traj,
        },
    )
    _json(
        root / "test_annotations.json",
        [
            {
                "vid": vid,
                "frame_count": T,
                "fps": 8,
                "width": W,
                "height": H,
                "used_segment": {"begin_fid": 0, "end_fid": T},
                "temporal_gt": {"begin_fid": 1, "end_fid": 6},
                "captions": [{"target_id": 0, "description": "a red car moves right."}],
                "questions": [{"target_id": 1, "description": "what is green?", "type": "what"}],
            }
        ],
    )
    return root


def vidsentence(root: Path, T: int = 5) -> Path:
    video = "ILSVRC2015_val_00000001"
    _jpegs(root / "ILSVRC" / "Data" / "VID" / "val" / video, [f"{t:06d}" for t in range(T)], ext=".JPEG")
    track = [
        {"frame": t + 1, "bbox": [b[0], b[1], b[2] - 1, b[3] - 1]} for t, b in ((t, box(1, t)) for t in range(1, T))
    ]
    _json(
        root / "ILSVRC" / "Annotations" / "VID" / "tubeGt" / "val" / f"{video}.js",
        {"annotations": [{"id": "0", "track": track}]},
    )
    lists = root / "ILSVRC" / "Data" / "VID" / "annSamples"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "val_valid_list.txt").write_text(f"{video},0\n")
    (lists / "val_ann_list_v2.txt").write_text("0,A red car drives to the right.\n0,The red car.\n")
    return root


def refsav(root: Path, T: int = 9) -> Path:
    write_video(root / "sav_000" / "sav_000001.mp4", [frame(t) for t in range(T)], fps=24)
    annotated = list(range(0, T, 4))
    masklet = [[encode_mask(mask(1, t)), encode_mask(mask(2, t)) if mask(2, t).any() else None] for t in annotated]
    _json(
        root / "sav_000" / "sav_000001_manual.json",
        {
            "video_id": "sav_000001",
            "video_height": H,
            "video_width": W,
            "video_frame_count": T,
            "masklet": masklet,
            "masklet_id": [0, 1],
            "masklet_num": 2,
        },
    )
    _json(
        root / "Ref-SAV.json",
        {
            "sav_000001": {
                "video_path": "sav_000/sav_000001.mp4",
                "anno_path": "sav_000/sav_000001_manual.json",
                "objects": {"0": {"formated": "The red box sliding right."}, "1": {"formated": "The green box."}},
            }
        },
    )
    return root


def curated(root: Path, T: int = 4) -> Path:
    names = [f"{t + 1:08d}" for t in range(T)]
    for clip, scheme in (("seq_a/00", "folder"), ("seq_a/01", "suffix"), ("seq_b/00", "single")):
        base = root / "train" / clip
        _jpegs(base / "img", names)
        for t, name in enumerate(names):
            for obj in (1, 2) if scheme != "single" else (1,):
                png = Image.fromarray(mask(obj, t).astype(np.uint8) * 255)
                path = {
                    "folder": base / "mask" / f"{obj:03d}" / f"{name}.png",
                    "suffix": base / "mask" / f"{name}_{obj}.png",
                    "single": base / "mask" / f"{name}.png",
                }[scheme]
                path.parent.mkdir(parents=True, exist_ok=True)
                png.save(path)
        lines = [f"{b[0]},{b[1]},{b[2] - b[0]},{b[3] - b[1]}" for b in (box(1, t) for t in range(T))]
        (base / "groundtruth.txt").write_text("\n".join(lines) + "\n")
        caption = "A red car." if scheme == "single" else "[A red car](1) passes [a green dog](2)."
        (base / "nlp.txt").write_text(caption + "\n")
    return root
