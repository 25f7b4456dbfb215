"""Fresh SynthRef clips for training (issue 10 item 4): deterministic, balanced, sharded like one process, fast."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sparrow.data.synthref.expressions import KINDS, Query, check_query, facts_from_record
from sparrow.data.synthref.generate import make_video
from sparrow.data.synthref.scene import DIFFICULTIES, sample_scene
from sparrow.data.synthref.stream import TAG_CYCLE, FreshSynthRef, fresh_config
from sparrow.errors import SparrowError
from sparrow.train.config import load_train_config
from sparrow.train.data import MixtureStream, build_sources


def _same(a, b) -> bool:
    return (
        a.video_id == b.video_id
        and a.question == b.question
        and a.answer == b.answer
        and a.text == b.text
        and a.vlm_indices == b.vlm_indices
        and a.sam_indices == b.sam_indices
        and np.array_equal(a.vlm_frames, b.vlm_frames)
        and np.array_equal(a.masks, b.masks)
        and np.array_equal(a.boxes, b.boxes, equal_nan=True)
    )


def test_a_sample_depends_only_on_seed_epoch_and_index() -> None:
    a, b = FreshSynthRef(seed=5, length=21), FreshSynthRef(seed=5, length=21)
    b[3]  # reading other samples first changes nothing
    assert _same(a[7], b[7])
    a.set_epoch(1)
    assert not _same(a[7], b[7])  # a new epoch draws new clips
    b.set_epoch(1)
    assert _same(a[7], b[7])
    assert not _same(FreshSynthRef(seed=6, length=21)[7], FreshSynthRef(seed=5, length=21)[7])


def test_samples_are_valid_training_samples() -> None:
    ds = FreshSynthRef(seed=0, length=21, num_vlm_frames=8, num_sam_frames=4)
    s = ds[4]
    assert s.vlm_frames.shape == (8, 128, 128, 3) and s.sam_frames.shape == (4, 128, 128, 3)
    assert s.masks.shape == (1, 4, 128, 128) and s.masks[0, 0].any()  # the key frame shows the target
    assert "[BOX] [SEG]" in s.answer and s.text in s.question
    record, _, e = ds.draw(4)
    expression = record.expressions[e]
    query = Query.from_json(expression.extra["query"])
    assert check_query(query, facts_from_record(record), expression.obj_ids) is None


def test_kinds_and_tags_are_balanced() -> None:
    ds = FreshSynthRef(seed=3, length=42)
    wanted = [ds.wanted(i) for i in range(42)]
    assert Counter(w for w, _ in wanted) == {k: 14 for k in KINDS}
    assert Counter(t for _, t in wanted) == {t: 6 for t in TAG_CYCLE}
    samples = [ds[i] for i in range(21)]
    assert Counter(s.kind for s in samples) == {k: 7 for k in KINDS}  # the kind is always met
    fitting = sum((t in s.tags) if t != "none" else not s.tags for (_, t), s in zip(wanted, samples))
    assert fitting >= 16  # the asked-for tag is met for most samples (19 of 21 here)
    for tag in DIFFICULTIES:  # every difficulty is represented (3 to 11 of 21 here; written splits: late 7%)
        assert sum(tag in s.tags for s in samples) >= 2, tag


def test_forced_planting_keeps_the_written_splits_unchanged() -> None:
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    a, b = sample_scene(rng_a), sample_scene(rng_b, force=())
    assert [o.colour for o in a.objects] == [o.colour for o in b.objects] and a.planted == b.planted
    assert "late" in sample_scene(np.random.default_rng(11), force=("late",)).planted
    with pytest.raises(ValueError, match="unknown difficulties"):
        sample_scene(np.random.default_rng(0), force=("blurry",))
    record, frames = make_video("train", 0, 0)  # the split generator goes through build_video
    assert record.video_id == "train_00000" and frames.shape == (24, 128, 128, 3)


def test_two_processes_see_what_one_process_sees() -> None:
    sources = [FreshSynthRef(seed=1, length=21)]
    one = MixtureStream(sources, [1.0], seed=0, batch_size=2, num_micro_steps=2)
    two = [
        MixtureStream(sources, [1.0], seed=0, batch_size=1, num_processes=2, process_index=r, num_micro_steps=2)
        for r in (0, 1)
    ]
    for step in range(2):
        joint = one[step]
        split = two[0][step] + two[1][step]
        assert all(_same(x, y) for x, y in zip(joint, split))


def test_training_config_accepts_a_fresh_source(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "data:\n  sources:\n    - {synthref: {seed: 1000, size: 64, num_frames: 12, length: 42}, weight: 1}\n"
        "  num_vlm_frames: 4\n  num_sam_frames: 2\nstage: {name: vlm}\noutput_dir: out\n"
    )
    config = load_train_config(path)
    sources = build_sources(config.data.sources, 4, 2, "random", seed=0, identity=True)
    assert isinstance(sources[0], FreshSynthRef) and len(sources[0]) == 42
    s = sources[0][0]
    assert s.vlm_frames.shape == (4, 64, 64, 3) and s.identity_masks.shape[1:] == (2, 64, 64)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "data:\n  sources:\n    - {path: somewhere, synthref: {seed: 1}}\nstage: {name: vlm}\noutput_dir: out\n"
    )
    with pytest.raises(SparrowError, match="both synthref and a path"):
        load_train_config(bad)
    bad.write_text("data:\n  sources:\n    - {synthref: {seed: 1, length: 0}}\nstage: {name: vlm}\noutput_dir: out\n")
    with pytest.raises(SparrowError, match="length >= 1"):
        load_train_config(bad)


def test_generation_speed() -> None:
    """~60 ms per sample on a loaded 2-core machine (one clip or a few per sample, JPEG round trip of the sampled
    frames); the bound leaves room for load."""
    ds = FreshSynthRef(seed=2, length=21, config=fresh_config(128, 24))
    start = time.process_time()
    for i in range(10):
        ds[i]
    assert (time.process_time() - start) / 10 < 0.5
