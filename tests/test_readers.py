"""Every reader on a tiny fixture written in its official layout (tests/reader_fixtures.py): records, exact boxes
and masks, expressions, splits, streaming (nothing read before access) and errors naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import reader_fixtures as fx

from sparrow.data.readers import available_splits, read_dataset
from sparrow.data.schema import LazyObjectTrack
from sparrow.errors import SparrowError


def _unloaded(records) -> bool:
    return all(isinstance(o, LazyObjectTrack) and not o.loaded for r in records for o in r.objects.values())


def _check_obj(rec, obj_id: int, geometry: int, frames: list[int], with_masks: bool = True) -> None:
    """Object ``obj_id`` of ``rec`` follows fixture object ``geometry`` on fixture frames ``frames``."""
    track = rec.objects[obj_id]
    assert [b for b in track.boxes] == [fx.box(geometry, t) for t in frames]
    if with_masks:
        for i, t in enumerate(frames):
            assert np.array_equal(track.mask(i, rec.size), fx.mask(geometry, t))
    else:
        assert all(m is None for m in track.masks)


def test_refytvos(tmp_path):
    root = fx.refvos(tmp_path)
    assert available_splits(root, "refytvos") == ["train", "valid"]
    train = read_dataset(root, "refytvos", "train")
    assert [r.video_id for r in train] == ["vid_a", "vid_b"] and _unloaded(train)
    rec = train[0]
    assert rec.size == (24, 32) and rec.frames == ["00000", "00005", "00010", "00015"]
    assert [(e.text, e.obj_ids) for e in rec.expressions] == [("the red box", [1]), ("the green box", [2])]
    assert rec.objects[1].category == "car" and rec.objects[2].category == "dog"
    _check_obj(rec, 1, 1, [0, 1, 2, 3])
    _check_obj(rec, 2, 2, [0, 1, 2, 3])
    assert rec.load_frames([1]).shape == (1, 24, 32, 3)
    (valid,) = read_dataset(root, "refytvos", "valid")  # server split: no GT masks
    assert valid.objects == {} and valid.expressions[0].extra["obj_id"] == [1]


def test_refdavis_runs(tmp_path):
    root = fx.refvos(tmp_path, davis=True)
    (rec,) = read_dataset(root, "refdavis", "valid")
    assert [e.extra["anno_run"] for e in rec.expressions] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert [e.obj_ids for e in rec.expressions] == [[1]] * 4 + [[2]] * 4
    _check_obj(rec, 2, 2, [0, 1, 2, 3])


def test_refvos_damaged_png_named(tmp_path):
    root = fx.refvos(tmp_path)
    bad = root / "train" / "Annotations" / "vid_a" / "00010.png"
    bad.write_bytes(b"not a png")
    rec = read_dataset(root, "refytvos", "train")[0]  # opening does not read masks
    with pytest.raises(SparrowError) as exc:
        rec.objects[1].masks  # noqa: B018
    assert str(bad) in str(exc.value)


def test_revos_splits_and_foreground(tmp_path):
    root = fx.revos(tmp_path)
    assert available_splits(root, "revos") == ["train", "valid", "valid-referring", "valid-reasoning"]
    valid = read_dataset(root, "revos", "valid")
    assert [r.video_id for r in valid] == ["LVVIS/vid_b", "LVVIS/vid_c"] and _unloaded(valid)
    assert [e.tags for e in valid[0].expressions] == [["referring"], ["reasoning"], ["referring"]]
    reasoning = read_dataset(root, "revos", "valid-reasoning")
    assert [len(r.expressions) for r in reasoning] == [1, 1] and reasoning[0].expressions[0].kind == "reasoning"
    rec = valid[0]
    union = rec.target_masks(rec.expressions[2], [2])
    assert np.array_equal(union[0], fx.mask(1, 2) | fx.mask(2, 2))
    assert len(rec.foreground) == 4 and rec.foreground[1]["size"] == [24, 32]


def test_a2d(tmp_path):
    pytest.importorskip("h5py")
    root = fx.a2d(tmp_path)
    test = read_dataset(root, "a2d", "test")
    assert [r.video_id for r in test] == ["vid_b"]  # vid_missed is left out
    (rec,) = read_dataset(root, "a2d", "train")
    assert rec.frames == ["00003", "00006"] and rec.frame_indices == [2, 5] and rec.size == (24, 32)
    assert [(e.text, e.obj_ids) for e in rec.expressions] == [("red box moving right", [1]), ("green box", [2])]
    _check_obj(rec, 1, 1, [2, 5])
    _check_obj(rec, 2, 2, [2, 5])
    frames = rec.load_frames([1])  # frame 5 of the clip
    assert frames.shape == (1, 24, 32, 3) and frames[0, 8, 12, 0] > 150  # red object at x 9..17 on frame 5


def test_lasot(tmp_path):
    root = fx.lasot(tmp_path)
    assert [r.video_id for r in read_dataset(root, "lasot", "test")] == ["car-2"]
    train = read_dataset(root, "lasot", "train")
    assert [r.video_id for r in train] == ["car-1", "dog-1"] and _unloaded(train)
    rec = train[1]
    assert rec.frames[0] == "00000001" and rec.objects[1].category == "dog"
    assert rec.expressions[0].text == "the red dog moving right"
    expected = [fx.box(1, t) for t in range(5)]
    expected[2] = None  # full occlusion
    assert rec.objects[1].boxes == expected and all(m is None for m in rec.objects[1].masks)


def test_got10k(tmp_path):
    root = fx.got10k(tmp_path)
    assert available_splits(root, "got10k") == ["train", "val", "test"]
    (rec,) = read_dataset(root, "got10k", "val")
    assert rec.expressions[0].text == "the red car" and "no_language" in rec.expressions[0].tags
    expected = [fx.box(1, t) for t in range(5)]
    expected[3] = None  # absence.label
    assert rec.objects[1].boxes == expected and rec.objects[1].attributes["motion_class"] == "running"
    (test,) = read_dataset(root, "got10k", "test")
    assert test.objects[1].boxes == [fx.box(1, 0)] + [None] * 4 and test.expressions == []


def test_hcstvg_v1_and_v2(tmp_path):
    root = fx.hcstvg(tmp_path)
    assert available_splits(root, "hcstvg") == ["val", "test"]
    (rec,) = read_dataset(root, "hcstvg", "val")
    assert rec.video_id == "clip_a" and rec.video_path.name == "clip_a.mp4" and rec.fps == 8 / 20
    assert rec.expressions[0].extra["span"] == [2, 6] and rec.expressions[0].text == "The man in red walks right."
    assert rec.objects[1].boxes == [None, None] + [fx.box(1, t) for t in range(2, 6)] + [None, None]
    assert rec.load_frames([0, 7]).shape == (2, 24, 32, 3)
    (v1,) = read_dataset(root, "hcstvg", "test")
    assert v1.expressions[0].text == "The man in red walks."


def test_vidstg(tmp_path):
    root = fx.vidstg(tmp_path)
    (rec,) = read_dataset(root, "vidstg", "test")
    assert _unloaded([rec]) and rec.objects[0].category == "car"
    assert [(e.kind, e.obj_ids, e.extra["span"]) for e in rec.expressions] == [
        ("declarative", [0], [1, 6]),
        ("interrogative", [1], [1, 6]),
    ]
    assert rec.expressions[1].extra["type"] == "what"
    assert rec.objects[0].boxes == [fx.box(1, t) for t in range(8)]
    assert rec.objects[1].boxes == [fx.box(2, t) for t in range(8)]


def test_vidsentence(tmp_path):
    root = fx.vidsentence(tmp_path)
    (rec,) = read_dataset(root, "vidsentence", "val")
    assert rec.frame_ext == ".JPEG" and len(rec.frames) == 5
    assert [(e.exp_id, e.text) for e in rec.expressions] == [
        ("0", "A red car drives to the right."),
        ("0-1", "The red car."),
    ]
    assert rec.objects[0].boxes == [None] + [fx.box(1, t) for t in range(1, 5)]  # inclusive corners made exclusive


def test_refsav(tmp_path):
    root = fx.refsav(tmp_path)
    (rec,) = read_dataset(root, "refsav")
    assert rec.frame_indices == [0, 4, 8] and rec.frames == ["00000", "00004", "00008"] and _unloaded([rec])
    assert [(e.text, e.obj_ids) for e in rec.expressions] == [
        ("The red box sliding right.", [0]),
        ("The green box.", [1]),
    ]
    _check_obj(rec, 0, 1, [0, 4, 8])
    _check_obj(rec, 1, 2, [0, 4, 8])
    assert rec.load_frames([2]).shape == (1, 24, 32, 3)


def test_curated_three_mask_schemes(tmp_path):
    root = fx.curated(tmp_path)
    records = read_dataset(root, "curated", "train")
    assert [r.video_id for r in records] == ["seq_a/00", "seq_a/01", "seq_b/00"]
    for rec in records[:2]:
        assert [(e.text, e.obj_ids) for e in rec.expressions] == [("A red car", [1]), ("a green dog", [2])]
        assert rec.expressions[0].extra["caption"] == "[A red car](1) passes [a green dog](2)."
        _check_obj(rec, 1, 1, [0, 1, 2, 3])
        _check_obj(rec, 2, 2, [0, 1, 2, 3])
    single = records[2]
    assert [(e.text, e.obj_ids) for e in single.expressions] == [("A red car.", [1])]
    _check_obj(single, 1, 1, [0, 1, 2, 3])


def test_unknown_format_and_missing_files(tmp_path):
    with pytest.raises(SparrowError, match="unknown dataset format 'nope'"):
        read_dataset(tmp_path, "nope", "train")
    root = fx.hcstvg(tmp_path / "h")
    (root / "anno_v2" / "val_v2.json").write_text("{broken")
    with pytest.raises(SparrowError) as exc:
        read_dataset(root, "hcstvg", "val")
    assert "val_v2.json" in str(exc.value) and "not valid JSON" in str(exc.value)
    root = fx.vidstg(tmp_path / "v")
    path = next((root / "vidor" / "annotation").rglob("*.json"))
    data = json.loads(path.read_text())
    data["trajectories"] = data["trajectories"][:3]
    path.write_text(json.dumps(data))
    (rec,) = read_dataset(root, "vidstg", "test")
    with pytest.raises(SparrowError, match="'trajectories' with 8 frames"):
        rec.objects[0].boxes  # noqa: B018
