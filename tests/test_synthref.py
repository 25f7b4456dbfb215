"""SynthRef: determinism, disjoint splits, masks vs boxes, occlusion, unambiguous expressions, tags, CLI."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparrow.cli import main
from sparrow.data.mevis import read_mevis
from sparrow.data.rle import decode_rle, mask_to_box
from sparrow.data.synthref import SynthConfig, generate_split, make_video
from sparrow.data.synthref import generate as gen_module
from sparrow.data.synthref.expressions import Query, check_query, facts_from_record, realise
from sparrow.data.synthref.render import boxes_of, render
from sparrow.data.synthref.scene import OCCLUDER_COLOUR, ObjectSpec, Occluder, SceneSpec
from sparrow.errors import SparrowError

CFG = SynthConfig(size=64, num_frames=10)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_split(out, 10, seed=3, split="valid", config=CFG, progress=False)
    return out / "valid"


@pytest.fixture(scope="module")
def records(split):
    return read_mevis(split)


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, split):
    generate_split(tmp_path / "a", 10, seed=3, split="valid", config=CFG, workers=2, progress=False)
    first = tree_digest(split)
    assert len(first) == 10 * 10 + 4  # 10 videos x 10 frames + 3 JSON files + the output marker
    assert tree_digest(tmp_path / "a" / "valid") == first


def test_different_seeds_differ(tmp_path, split):
    generate_split(tmp_path, 10, seed=4, split="valid", config=CFG, progress=False)
    a, b = tree_digest(split), tree_digest(tmp_path / "valid")
    assert a.keys() == b.keys()
    assert a["meta_expressions.json"] != b["meta_expressions.json"]
    assert sum(a[k] != b[k] for k in a) > 90


def test_a_video_does_not_depend_on_the_split_size(tmp_path, split):
    generate_split(tmp_path, 2, seed=3, split="valid", config=CFG, progress=False)
    small, big = tree_digest(tmp_path / "valid"), tree_digest(split)
    frames = [k for k in small if k.startswith("JPEGImages")]
    assert len(frames) == 20 and all(small[k] == big[k] for k in frames)


def test_splits_never_share_scenes():
    seen = {}
    for split_name in ("train", "valid", "test"):
        for i in range(8):
            record, frames = make_video(split_name, 0, i, CFG)
            assert record.video_id == f"{split_name}_{i:05d}"
            key = hashlib.sha256(frames.tobytes()).hexdigest()
            assert key not in seen, f"{record.video_id} repeats {seen.get(key)}"
            seen[key] = record.video_id


def test_layout_ids_and_atomic_output(split, records):
    assert (split / "boxes.json").exists() and (split / "mask_dict.json").exists()
    assert not [p for p in split.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    anno_ids = [o for r in records for o in r.objects]
    assert len(anno_ids) == len(set(anno_ids))
    for r in records:
        assert r.video_id.startswith("valid_") and r.num_frames == 10 and r.size == (64, 64)
        assert 2 <= len(r.objects) <= 6 and 1 <= len(r.expressions) <= CFG.expressions_per_video
        assert sorted({t for e in r.expressions for t in e.tags}) == r.tags


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    real = gen_module.make_video

    def failing(split, seed, index, config):
        if index == 2:
            raise RuntimeError("boom")
        return real(split, seed, index, config)

    monkeypatch.setattr(gen_module, "make_video", failing)
    with pytest.raises(RuntimeError, match="boom"):
        generate_split(tmp_path, 4, seed=0, config=CFG, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_masks_agree_with_boxes(records):
    for r in records:
        for obj in r.objects.values():
            for t in range(r.num_frames):
                if obj.masks[t] is None:
                    assert obj.boxes[t] is None
                    continue
                mask = decode_rle(obj.masks[t], expected_size=r.size)
                assert mask.any()
                assert obj.boxes[t] == mask_to_box(mask)
                full = obj.full_boxes[t]  # the amodal box contains the visible one
                assert full is not None
                assert full[0] <= obj.boxes[t][0] and full[1] <= obj.boxes[t][1]
                assert full[2] >= obj.boxes[t][2] and full[3] >= obj.boxes[t][3]


def test_boxes_of_matches_mask_to_box():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 7, 9)) > 0.93
    masks[2] = False
    boxes = boxes_of(masks)
    for m, b in zip(masks, boxes):
        ref = mask_to_box(m)
        assert (ref is None and np.isnan(b).all()) or list(b) == ref


def _occluded_scene() -> SceneSpec:
    T, S = 9, 64
    centres = np.tile(np.array([[32.0, 30.0]]), (T, 1))
    circle = ObjectSpec("circle", "red", "large", 9.0, "static", centres)
    bar = Occluder(xs=np.linspace(4.0, 60.0, T), width=8.0)
    return SceneSpec(S, T, [circle], "plain", 0, 40, np.zeros((T, 2), dtype=np.int64), occluders=[bar])


def test_occluded_object_visible_mask_is_smaller_than_its_full_shape():
    scene = _occluded_scene()
    clip = render(scene)
    full, visible = clip.full[0], clip.visible[0]
    assert (visible & ~full).sum() == 0  # visible is part of the shape
    assert (full.sum(axis=(1, 2)) == full[0].sum()).all()  # static, never clipped: same full area
    hidden = full.sum(axis=(1, 2)) - visible.sum(axis=(1, 2))
    mid = scene.num_frames // 2  # the bar crosses the centre at the middle frame
    assert hidden[0] == 0 and hidden[mid] == full[mid][:, 28:36].sum() > 100  # bar x in [28, 36) at mid
    occluder_pixels = full[mid] & ~visible[mid]
    assert (clip.frames[mid][occluder_pixels] == OCCLUDER_COLOUR).all()
    assert (clip.frames[mid][visible[mid]] == (230, 40, 40)).all()
    vis_box, full_box = boxes_of(visible[mid]), boxes_of(full[mid])
    assert (vis_box[2] - vis_box[0]) * (vis_box[3] - vis_box[1]) <= (full_box[2] - full_box[0]) * (
        full_box[3] - full_box[1]
    )


def test_occlusion_tag_means_a_hidden_part(records):
    tagged = [(r, e) for r in records for e in r.expressions if "occlusion" in e.tags]
    for r, e in tagged:
        found = False
        for o in e.obj_ids:
            obj = r.objects[o]
            for t in range(r.num_frames):
                full = obj.full_boxes[t]
                if full is None:
                    continue
                area = int(decode_rle(obj.masks[t], r.size).sum()) if obj.masks[t] is not None else 0
                full_area = (full[2] - full[0]) * (full[3] - full[1])
                found |= area < 0.75 * full_area
        assert found, (r.video_id, e.text)


def test_expressions_pass_the_checker_after_reading_back(records):
    n = 0
    for r in records:
        facts = facts_from_record(r)
        for e in r.expressions:
            q = Query.from_json(e.extra["query"])
            assert check_query(q, facts, e.obj_ids) is None, (r.video_id, e.text)
            assert realise(q, len(e.obj_ids)) == e.text
            assert q.kind == e.kind
            n += 1
    assert n >= 10


def _lookalike_facts():
    """Two identical red circles: one static on the left, one moving right from the middle-right."""
    T, S = 10, 64
    still = np.tile(np.array([[12.0, 20.0]]), (T, 1))
    mover = np.stack([40.0 + np.arange(T, dtype=float), np.full(T, 44.0)], axis=1)
    objects = [
        ObjectSpec("circle", "red", "small", 4.0, "static", still),
        ObjectSpec("circle", "red", "small", 4.0, "linear", mover, direction="right", z=1),
    ]
    scene = SceneSpec(S, T, objects, "plain", 0, 40, np.zeros((T, 2), dtype=np.int64))
    record = gen_module._record("train_00007", 7, scene, render(scene))
    return facts_from_record(record)


def test_checker_accepts_and_rejects_on_handmade_scene():
    facts = _lookalike_facts()
    still, mover = 70, 71
    reason = check_query(Query(shape="circle"), facts, [still])
    assert reason is not None and "matches objects [70, 71]" in reason
    assert check_query(Query(shape="circle"), facts, [still, mover]) is None
    assert check_query(Query(shape="circle", motion="right"), facts, [mover]) is None
    assert check_query(Query(shape="circle", motion="static"), facts, [still]) is None
    assert check_query(Query(shape="circle", position=("left", "start")), facts, [still]) is None
    assert check_query(Query(shape="circle", motion="left"), facts, [still]) is not None  # matches nothing
    # a centre near the middle line is "unsure": a query about left/right there is rejected
    facts[mover].centres[0, 0] = 0.5 * 64
    reason = check_query(Query(shape="circle", position=("left", "start")), facts, [still])
    assert reason is not None and "unsure for objects [71]" in reason


def test_checker_rejects_appearance_only_for_distractors(records):
    rejected = 0
    for r in records:
        facts = facts_from_record(r)
        for e in r.expressions:
            if "distractor" not in e.tags or len(e.obj_ids) > 1:
                continue
            f = facts[e.obj_ids[0]]
            reason = check_query(Query(shape=f.shape, colour=f.colour, size=f.size), facts, e.obj_ids)
            assert reason is not None and "matches objects" in reason
            rejected += 1
    assert rejected >= 1


def test_tags_are_true(records):
    for r in records:
        facts = facts_from_record(r)
        for e in r.expressions:
            looks = {(facts[o].shape, facts[o].colour, facts[o].size) for o in e.obj_ids}
            others = [f for o, f in facts.items() if o not in e.obj_ids]
            assert ("multi" in e.tags) == (len(e.obj_ids) > 1)
            assert ("late" in e.tags) == all(r.objects[o].full_boxes[0] is None for o in e.obj_ids)
            assert ("distractor" in e.tags) == any((f.shape, f.colour, f.size) in looks for f in others)
            if "reentry" in e.tags:
                in_frame = [[b is not None for b in r.objects[o].full_boxes] for o in e.obj_ids]
                assert any(
                    any(a and not b for a, b in itertools.pairwise(x))
                    and any(not a and b for a, b in itertools.pairwise(x))
                    for x in in_frame
                )


def test_all_kinds_and_difficulties_occur():
    kinds, tags = set(), set()
    for i in range(40):
        record, _ = make_video("train", 1, i, SynthConfig(size=64, num_frames=16))
        kinds |= {e.kind for e in record.expressions}
        tags |= set(record.tags)
    assert kinds == {"appearance", "motion", "position"}
    assert {"occlusion", "distractor", "multi", "late", "fast", "reentry"} <= tags


def test_cli_synth_and_stats(tmp_path, capsys):
    code = main(
        [
            "synth",
            "--out",
            str(tmp_path),
            "--videos",
            "3",
            "--seed",
            "1",
            "--split",
            "test",
            "--size",
            "64",
            "--frames",
            "8",
            "--quiet",
        ]
    )
    assert code == 0
    assert len(list((tmp_path / "test" / "JPEGImages").iterdir())) == 3
    assert "wrote 3 videos" in capsys.readouterr().out
    assert main(["synth", "--stats", str(tmp_path / "test")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 videos,") and "| occlusion |" in out and "| appearance |" in out
    sheet = tmp_path / "sheet.png"
    assert main(["synth", "--stats", str(tmp_path / "test"), "--sheet", str(sheet)]) == 0
    with Image.open(sheet) as img:
        assert img.size == (6 * 64 + 5 * 4, 3 * (64 + 14 + 4))  # 6 frames per row, one row per video


def test_cli_bad_arguments(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--videos", "0"]) == 2
    assert "--videos must be at least 1" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path), "--size", "8"]) == 2
    assert main(["synth"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(tmp_path), "--split", "holdout"])
    assert exc.value.code == 2
    assert main(["synth", "--stats", str(tmp_path / "nowhere")]) == 2
    assert "missing annotation file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(["synth", "--out", str(a_file), "--videos", "1"]) == 2
    assert f"{a_file}: --out must be a folder" in capsys.readouterr().err


def test_generate_split_validates_arguments(tmp_path):
    with pytest.raises(SparrowError, match="--seed must be >= 0"):
        generate_split(tmp_path, 2, seed=-1, config=CFG, progress=False)
    with pytest.raises(SparrowError, match="--frames"):
        generate_split(tmp_path, 2, config=SynthConfig(size=64, num_frames=2), progress=False)
