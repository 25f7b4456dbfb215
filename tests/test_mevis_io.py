"""MeViS-layout reader/writer: round trip of schema records, real-MeViS files, and strict errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sparrow.data.mevis import read_mevis, write_frames, write_mevis_annotations
from sparrow.data.rle import encode_mask
from sparrow.data.schema import Expression, ObjectTrack, VideoRecord
from sparrow.data.synthref import SynthConfig, make_video
from sparrow.errors import SparrowError


def _handmade(video_id: str = "vid_a", base_id: int = 0) -> tuple[VideoRecord, np.ndarray]:
    """A 4-frame 24x32 video: object A present on frames 0-2, object B on frames 1-3."""
    T, H, W = 4, 24, 32
    frames = np.zeros((T, H, W, 3), dtype=np.uint8)
    a = np.zeros((T, H, W), dtype=bool)
    b = np.zeros((T, H, W), dtype=bool)
    for t in range(3):
        a[t, 2:8, 3 + t : 10 + t] = True
    for t in range(1, 4):
        b[t, 12:20, 20:26] = True
    frames[a] = (200, 30, 30)
    frames[b] = (30, 200, 30)
    rec = VideoRecord(
        video_id=video_id,
        frames=[f"{t:05d}" for t in range(T)],
        height=H,
        width=W,
        objects={
            base_id: ObjectTrack.from_masks(base_id, a, category="car", attributes={"colour": "red"}),
            base_id + 1: ObjectTrack.from_masks(base_id + 1, list(b), category="dog"),
        },
        expressions=[
            Expression("0", "the red car", [base_id], tags=["late"], kind="appearance"),
            Expression(
                "1", "both animals", [base_id, base_id + 1], tags=["multi"], kind="motion", extra={"source": "x"}
            ),
        ],
        tags=["late", "multi"],
        extra={"note": "hand-made"},
    )
    rec.objects[base_id].full_boxes = [[0.0, 0.0, 12.0, 12.0]] * T
    return rec, frames


def _write(split: Path, pairs) -> None:
    for rec, frames in pairs:
        write_frames(split / "JPEGImages" / rec.video_id, rec.frames, frames)
    write_mevis_annotations([rec for rec, _ in pairs], split)


def _assert_same(a: VideoRecord, b: VideoRecord) -> None:
    assert (a.video_id, a.frames, a.height, a.width, a.tags, a.extra) == (
        b.video_id,
        b.frames,
        b.height,
        b.width,
        b.tags,
        b.extra,
    )
    assert a.objects.keys() == b.objects.keys()
    for k in a.objects:
        oa, ob = a.objects[k], b.objects[k]
        assert (oa.masks, oa.boxes, oa.full_boxes, oa.category, oa.attributes) == (
            ob.masks,
            ob.boxes,
            ob.full_boxes,
            ob.category,
            ob.attributes,
        )
    assert len(a.expressions) == len(b.expressions)
    for ea, eb in zip(a.expressions, b.expressions):
        extra_b = {k: v for k, v in eb.extra.items() if k != "obj_id"}  # MeViS's per-video obj_id list is added
        assert (ea.exp_id, ea.text, ea.obj_ids, ea.tags, ea.kind, ea.extra) == (
            eb.exp_id,
            eb.text,
            eb.obj_ids,
            eb.tags,
            eb.kind,
            extra_b,
        )


def test_round_trip_handmade_and_synthref(tmp_path):
    cfg = SynthConfig(size=64, num_frames=8)
    pairs = [_handmade("vid_a", 1000), make_video("train", 5, 0, cfg), make_video("train", 5, 1, cfg)]
    _write(tmp_path, pairs)
    back = read_mevis(tmp_path)
    assert [r.video_id for r in back] == sorted(r.video_id for r, _ in pairs)
    by_id = {r.video_id: r for r in back}
    for rec, frames in pairs:
        _assert_same(rec, by_id[rec.video_id])
        loaded = by_id[rec.video_id].load_frames([0, rec.num_frames - 1])
        assert loaded.shape == (2, rec.height, rec.width, 3)
        assert np.abs(loaded.astype(int) - frames[[0, -1]].astype(int)).mean() < 8  # JPEG, close to the original
    # writing what was read gives the same bytes
    write_mevis_annotations(back, tmp_path / "again")
    for name in ("meta_expressions.json", "mask_dict.json", "boxes.json"):
        assert (tmp_path / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_reads_plain_mevis_without_sparrow_keys(tmp_path):
    rec, frames = _handmade()
    write_frames(tmp_path / "JPEGImages" / rec.video_id, rec.frames, frames)
    meta = {
        "videos": {
            rec.video_id: {
                "frames": rec.frames,
                "expressions": {
                    "0": {"exp": "the red car", "obj_id": [0], "anno_id": [0]},
                    "1": {"exp": "both", "obj_id": [0, 1], "anno_id": ["0", "1"]},
                },
            }
        }
    }
    (tmp_path / "meta_expressions.json").write_text(json.dumps(meta))
    masks = {str(k): obj.masks for k, obj in rec.objects.items()}
    (tmp_path / "mask_dict.json").write_text(json.dumps(masks))
    (back,) = read_mevis(tmp_path)
    assert back.size == (24, 32) and back.tags == [] and back.expressions[1].obj_ids == [0, 1]
    assert back.expressions[0].kind is None and back.expressions[0].extra == {"obj_id": [0]}
    for k in (0, 1):
        assert back.objects[k].boxes == rec.objects[k].boxes  # computed from the masks
        assert back.objects[k].full_boxes is None
    union = back.target_masks(back.expressions[1], [1])
    assert union.sum() == rec.objects[0].mask(1, (24, 32)).sum() + rec.objects[1].mask(1, (24, 32)).sum()


@pytest.fixture()
def split(tmp_path) -> Path:
    _write(tmp_path, [_handmade()])
    return tmp_path


def _read_all(split: Path, lazy: bool) -> list[VideoRecord]:
    """Read a split; when streaming, touch every object so its masks and boxes are read (where errors surface)."""
    records = read_mevis(split, lazy=lazy)
    for rec in records:
        for obj in rec.objects.values():
            obj.masks, obj.boxes  # noqa: B018
    return records


def test_streaming_reads_masks_only_on_access(split):
    (rec,) = read_mevis(split)
    assert all(not obj.loaded for obj in rec.objects.values())
    union = rec.target_masks(rec.expressions[0], [1])
    assert union.shape == (1, 24, 32) and union.sum() > 0
    assert rec.objects[0].loaded and not rec.objects[1].loaded
    (eager,) = read_mevis(split, lazy=False)
    for k in (0, 1):
        assert rec.objects[k].masks == eager.objects[k].masks and rec.objects[k].boxes == eager.objects[k].boxes


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_broken_meta_expressions(split):
    path = split / "meta_expressions.json"
    path.write_text(path.read_text()[:-7])
    with pytest.raises(SparrowError) as exc:
        read_mevis(split)
    assert str(path) in str(exc.value) and "not valid JSON" in str(exc.value)
    path.write_text(json.dumps({"clips": {}}))
    with pytest.raises(SparrowError, match="expected an object with a 'videos' mapping"):
        read_mevis(split)


def test_missing_meta_expressions(tmp_path):
    with pytest.raises(SparrowError) as exc:
        read_mevis(tmp_path)
    assert "meta_expressions.json" in str(exc.value) and "missing annotation file" in str(exc.value)


def test_missing_frame(split):
    frame = split / "JPEGImages" / "vid_a" / "00002.jpg"
    frame.unlink()
    with pytest.raises(SparrowError) as exc:
        read_mevis(split)
    assert str(frame) in str(exc.value) and "missing frame" in str(exc.value)
    (record,) = read_mevis(split, check_frames=False)
    with pytest.raises(SparrowError, match="missing frame"):
        record.load_frames([2])


@pytest.mark.parametrize("lazy", [False, True])
def test_rle_of_the_wrong_size(split, lazy):
    path = split / "mask_dict.json"
    _edit(path, lambda d: d["1"].__setitem__(2, encode_mask(np.ones((10, 10), dtype=bool))))
    with pytest.raises(SparrowError) as exc:
        _read_all(split, lazy)
    msg = str(exc.value)
    assert (
        str(path) in msg and "anno_id 1, frame 2" in msg and "RLE of size [10, 10] where the frames are [24, 32]" in msg
    )


@pytest.mark.parametrize("lazy", [False, True])
def test_corrupt_rle_counts(split, lazy):
    path = split / "mask_dict.json"
    _edit(path, lambda d: d["0"][0].__setitem__("counts", d["0"][0]["counts"][:3]))
    with pytest.raises(SparrowError) as exc:
        _read_all(split, lazy)
    assert str(path) in str(exc.value) and "do not cover its size" in str(exc.value)


@pytest.mark.parametrize("lazy", [False, True])
def test_mask_list_of_the_wrong_length(split, lazy):
    path = split / "mask_dict.json"
    _edit(path, lambda d: d["0"].pop())
    with pytest.raises(SparrowError) as exc:
        _read_all(split, lazy)
    assert str(path) in str(exc.value) and "anno_id 0 has 3 masks for 4 frames" in str(exc.value)


@pytest.mark.parametrize("lazy", [False, True])
def test_expression_naming_an_object_without_masks(split, lazy):
    path = split / "mask_dict.json"
    _edit(path, lambda d: d.pop("1"))
    with pytest.raises(SparrowError) as exc:
        _read_all(split, lazy)
    assert str(path) in str(exc.value) and "no masks for anno_id 1" in str(exc.value)


@pytest.mark.parametrize("lazy", [False, True])
def test_boxes_of_the_wrong_length(split, lazy):
    path = split / "boxes.json"
    _edit(path, lambda d: d["0"]["boxes"].append(None))
    with pytest.raises(SparrowError) as exc:
        _read_all(split, lazy)
    assert str(path) in str(exc.value) and "5 boxes for 4 frames" in str(exc.value)


def test_expression_without_text(split):
    path = split / "meta_expressions.json"
    _edit(path, lambda d: d["videos"]["vid_a"]["expressions"]["0"].pop("exp"))
    with pytest.raises(SparrowError) as exc:
        read_mevis(split)
    assert str(path) in str(exc.value) and "need 'exp'" in str(exc.value)


def test_writer_refuses_duplicate_anno_ids(tmp_path):
    a, _ = _handmade("vid_a", 0)
    b, _ = _handmade("vid_b", 0)
    with pytest.raises(SparrowError, match="anno_id 0 is used by two videos"):
        write_mevis_annotations([a, b], tmp_path)
    assert not (tmp_path / "meta_expressions.json").exists()
