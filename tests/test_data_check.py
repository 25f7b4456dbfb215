"""``sparrow data check`` names every broken file of a damaged fixture and split leaks; ``sparrow data convert``
output round-trips through ``read_mevis`` for readers of every kind (PNG masks, RLE, HDF5, boxes, video files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import reader_fixtures as fx

from sparrow.cli import main
from sparrow.data.mevis import read_mevis
from sparrow.data.readers import read_dataset


def test_check_clean_fixture_with_sheet(tmp_path, capsys):
    root = fx.refvos(tmp_path / "ytvos")
    sheet = tmp_path / "sheet.png"
    assert main(["data", "check", str(root), "--format", "refytvos", "--sheet", str(sheet)]) == 0
    out = capsys.readouterr().out
    assert "train: 2 videos, 4 expressions, 4 objects, 8 frames" in out and "valid: 1 videos" in out
    assert "no problems" in out and sheet.stat().st_size > 1000


def test_check_names_each_broken_file(tmp_path, capsys):
    root = fx.refvos(tmp_path / "ytvos")
    missing = root / "train" / "JPEGImages" / "vid_a" / "00005.jpg"
    missing.unlink()
    corrupt = root / "train" / "JPEGImages" / "vid_b" / "00010.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:60])
    bad_png = root / "train" / "Annotations" / "vid_b" / "00015.png"
    bad_png.write_bytes(b"\x89PNG garbage")
    meta = root / "meta_expressions" / "valid" / "meta_expressions.json"  # leak: a training video in valid
    data = json.loads(meta.read_text())
    data["videos"]["vid_a"] = data["videos"]["vid_c"]
    meta.write_text(json.dumps(data))
    (root / "valid" / "JPEGImages" / "vid_a").symlink_to(root / "valid" / "JPEGImages" / "vid_c")
    assert main(["data", "check", str(root), "--format", "refytvos"]) == 1
    lines = capsys.readouterr().out.splitlines()
    problems = [ln for ln in lines if ": " in ln and not ln.startswith(("train:", "valid:"))]
    assert sum(str(missing) in ln and "missing frame" in ln for ln in problems) == 1
    assert sum(str(corrupt) in ln and "corrupt frame" in ln for ln in problems) == 1
    assert sum(str(bad_png) in ln for ln in problems) == 1
    assert any("evaluation split 'valid' shares 1 videos with training split 'train': vid_a" in ln for ln in problems)
    assert lines[-1] == "4 problem(s)"


def test_check_damaged_mevis_and_missing_annotation(tmp_path, capsys):
    root = fx.revos(tmp_path / "revos")
    path = root / "mask_dict.json"
    masks = json.loads(path.read_text())
    masks["31"][1]["counts"] = masks["31"][1]["counts"][:2]
    path.write_text(json.dumps(masks))
    assert main(["data", "check", str(root), "--format", "revos", "--split", "valid"]) == 1
    out = capsys.readouterr().out
    assert f"{path} (anno_id 31, frame 1): RLE counts do not cover its size" in out
    (root / "meta_expressions_train_.json").write_text("{")
    assert main(["data", "check", str(root), "--format", "revos", "--split", "train"]) == 1
    assert "meta_expressions_train_.json: not valid JSON" in capsys.readouterr().out


@pytest.mark.parametrize(
    "fmt, build, split",
    [
        ("refytvos", fx.refvos, "train"),
        ("revos", fx.revos, "valid"),
        ("a2d", fx.a2d, "train"),
        ("lasot", fx.lasot, "train"),
        ("refsav", fx.refsav, None),
        ("curated", fx.curated, "train"),
        ("vidstg", fx.vidstg, "test"),
    ],
)
def test_convert_round_trips_through_read_mevis(tmp_path, fmt, build, split):
    if fmt == "a2d":
        pytest.importorskip("h5py")
    root = build(tmp_path / "src")
    out = tmp_path / "mevis"
    args = ["data", "convert", str(root), "--format", fmt, "--out", str(out)] + (["--split", split] if split else [])
    assert main(args) == 0
    source = read_dataset(root, fmt, split)
    back = read_mevis(out)
    assert [r.video_id for r in back] == [r.video_id for r in source]
    for a, b in zip(source, back):
        assert (a.frames, a.size) == (b.frames, b.size)
        assert [(e.exp_id, e.text, e.tags) for e in a.expressions] == [
            (e.exp_id, e.text, e.tags) for e in b.expressions
        ]
        by_source = {o.attributes["source_obj_id"]: o for o in b.objects.values()}
        assert sorted(by_source) == sorted(a.objects)
        for k, obj in a.objects.items():
            assert (by_source[k].masks, by_source[k].boxes) == (list(obj.masks), list(obj.boxes))
        for e, f in zip(a.expressions, b.expressions):
            assert [by_source.get(o) is not None for o in e.obj_ids] and len(e.obj_ids) == len(f.obj_ids)
            assert all(b.objects[n].attributes["source_obj_id"] == o for o, n in zip(e.obj_ids, f.obj_ids))
        if a.foreground is not None:
            assert list(b.extra) == ["vid_id"] and (out / "mask_dict_foreground.json").is_file()
        got = b.load_frames([b.num_frames - 1]).astype(int)
        want = a.load_frames([a.num_frames - 1]).astype(int)
        assert np.abs(got - want).mean() < 12  # JPEG (re-encoded for video and PNG sources)


def test_convert_is_atomic(tmp_path, capsys):
    root = fx.lasot(tmp_path / "src")
    (root / "dog" / "dog-1" / "img" / "00000003.jpg").unlink()
    out = tmp_path / "mevis"
    assert main(["data", "convert", str(root), "--format", "lasot", "--split", "train", "--out", str(out)]) == 2
    assert "00000003.jpg" in capsys.readouterr().err and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]
