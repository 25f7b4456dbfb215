"""Opening a 5,000-video MeViS-layout split: streaming ``read_mevis`` vs the full decode it replaced, in one run.

Run: ``PYTHONPATH=src python benchmarks/bench_readers.py [--videos 5000] [--frames 20] [--out /tmp/bench_readers]``

Two splits that differ only in mask count (1 and 2 objects per video, every object annotated in every frame, RLEs of
72x128 moving boxes; ``meta_expressions.json`` with ``height``/``width`` as SPARROW writes it, no JPEG frames:
``check_frames=False``) are each opened three ways: streaming (the default: only ``meta_expressions.json`` is
parsed), streaming + touching one object (the first mask access builds the ``mask_dict.json`` index), and
``lazy=False`` (parse everything and decode every RLE up front, the behaviour before streaming). Prints seconds
(best of 3 for the streaming passes, one pass for the full decode) and peak Python heap (tracemalloc, measured
in a separate untimed pass) for each, and their ratios.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np

from sparrow.data.mevis import read_mevis
from sparrow.data.rle import encode_mask


def make_split(folder: Path, videos: int, frames: int, objects: int, size: tuple[int, int] = (72, 128)) -> None:
    """Write meta_expressions.json and mask_dict.json (no frames) for ``videos`` videos."""
    folder.mkdir(parents=True, exist_ok=True)
    H, W = size
    rles = []
    for t in range(frames):  # one RLE per frame position, shared by all videos (generation speed only)
        m = np.zeros(size, dtype=bool)
        m[10 + t % 20 : 40 + t % 20, 5 + 2 * t : 45 + 2 * t] = True
        rles.append(encode_mask(m))
    names = [f"{t:05d}" for t in range(frames)]
    meta, anno = {}, 0
    with open(folder / "mask_dict.json", "w") as f:
        f.write("{")
        for v in range(videos):
            ids = list(range(anno, anno + objects))
            f.writelines(("," if a else "") + json.dumps(str(a)) + ":" + json.dumps(rles) for a in ids)
            anno += objects
            meta[f"video_{v:05d}"] = {
                "frames": names,
                "height": H,
                "width": W,
                "expressions": {
                    "0": {"exp": "the object moving right", "anno_id": [str(ids[0])], "obj_id": [0]},
                    "1": {"exp": "all of them", "anno_id": [str(a) for a in ids], "obj_id": list(range(objects))},
                },
            }
        f.write("}")
    (folder / "meta_expressions.json").write_text(json.dumps({"videos": meta}))


def measure(fn, repeat: int = 1) -> tuple[float, float]:
    """(seconds, peak traced MiB) of ``fn()``: the best of ``repeat`` timed passes, then one traced pass."""
    seconds = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        seconds = min(seconds, time.perf_counter() - start)
        del result
    gc.collect()
    tracemalloc.start()
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    del result
    return seconds, peak


def touch_one(split: Path):
    records = read_mevis(split, check_frames=False)
    records[0].objects[next(iter(records[0].objects))].masks  # noqa: B018
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=5000)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_readers"))
    args = parser.parse_args()
    rows = {}
    for objects in (1, 2):
        split = args.out / f"objects{objects}"
        if not (split / "meta_expressions.json").is_file():
            make_split(split, args.videos, args.frames, objects)
        masks = args.videos * args.frames * objects
        mb = (split / "mask_dict.json").stat().st_size / 2**20
        print(f"split with {objects} object(s)/video: {args.videos} videos, {masks} masks, mask_dict.json {mb:.1f} MiB")
        rows[objects] = {
            "stream": measure(lambda s=split: read_mevis(s, check_frames=False), repeat=3),
            "stream+1": measure(lambda s=split: touch_one(s), repeat=3),
            "full": measure(lambda s=split: read_mevis(s, check_frames=False, lazy=False)),
        }
        for name, (sec, peak) in rows[objects].items():
            print(f"  {name:9s} {sec:7.2f} s   peak heap {peak:8.1f} MiB")
    for objects in (1, 2):
        r = rows[objects]
        print(
            f"{objects} object(s): full / streaming open = {r['full'][0] / r['stream'][0]:.1f}x time, "
            f"{r['full'][1] / r['stream'][1]:.1f}x memory"
        )
    print(
        f"streaming open, 2 vs 1 objects per video (2x masks): {rows[2]['stream'][0] / rows[1]['stream'][0]:.2f}x time, "
        f"{rows[2]['stream'][1] / rows[1]['stream'][1]:.2f}x memory; full decode: "
        f"{rows[2]['full'][0] / rows[1]['full'][0]:.2f}x time, {rows[2]['full'][1] / rows[1]['full'][1]:.2f}x memory"
    )


if __name__ == "__main__":
    main()
