"""ReferringVideoDataset and the Q&A templates: shapes, seeded sampling, key frame, answer format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sparrow.data.dataset import ReferringSample, ReferringVideoDataset, load_records
from sparrow.data.rle import mask_to_box
from sparrow.data.schema import VideoRecord
from sparrow.data.synthref import SynthConfig, generate_split
from sparrow.data.templates import REFERRING_ANSWERS, REFERRING_QUESTIONS, ReferringTemplates, insert_box_tokens
from sparrow.errors import SparrowError


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds")
    generate_split(out, 4, seed=11, split="train", config=SynthConfig(size=64, num_frames=12), progress=False)
    return out / "train"


@pytest.fixture(scope="module")
def records(split) -> list[VideoRecord]:
    return load_records(split)


def _same(a: ReferringSample, b: ReferringSample) -> bool:
    return (a.vlm_indices, a.sam_indices, a.question, a.answer) == (
        b.vlm_indices,
        b.sam_indices,
        b.question,
        b.answer,
    ) and (np.array_equal(a.vlm_frames, b.vlm_frames) and np.array_equal(a.masks, b.masks))


def test_sample_shapes_and_content(records):
    ds = ReferringVideoDataset(records, num_vlm_frames=5, num_sam_frames=3, sampling="random", seed=0)
    assert isinstance(ds, torch.utils.data.Dataset)
    assert len(ds) == sum(len(r.expressions) for r in records)
    for i in range(len(ds)):
        s = ds[i]
        rec = next(r for r in records if r.video_id == s.video_id)
        exp = next(e for e in rec.expressions if e.exp_id == s.exp_id)
        assert s.vlm_frames.shape == (5, 64, 64, 3) and s.vlm_frames.dtype == np.uint8
        assert s.sam_frames.shape == (3, 64, 64, 3) and s.sam_frames.dtype == np.uint8
        assert s.masks.shape == (1, 3, 64, 64) and s.masks.dtype == bool
        assert s.boxes.shape == (1, 3, 4) and s.key_box.shape == (1, 4)
        assert len(s.vlm_indices) == 5 and s.vlm_indices == sorted(s.vlm_indices)
        assert np.array_equal(s.vlm_frames, rec.load_frames(s.vlm_indices))
        assert np.array_equal(s.sam_frames, rec.load_frames(s.sam_indices))
        assert np.array_equal(s.masks[0], rec.target_masks(exp, s.sam_indices))
        for j in range(3):  # boxes are the extent of the union mask, NaN where it is empty
            ref = mask_to_box(s.masks[0, j])
            assert (ref is None and np.isnan(s.boxes[0, j]).all()) or list(s.boxes[0, j]) == ref
        assert s.masks[0, 0].any(), "the key frame (first SAM frame) shows the target"
        np.testing.assert_array_equal(s.key_box, s.boxes[:, 0])
        assert not np.isnan(s.key_box).any()
        assert (s.text, s.kind, s.tags) == (exp.text, exp.kind, exp.tags)
        assert s.text in s.question
        assert s.answer.count("[BOX] [SEG]") == 1 and s.answer.count("[SEG]") == 1


def test_uniform_sampling(records):
    ds = ReferringVideoDataset(records, num_vlm_frames=4, num_sam_frames=3, sampling="uniform")
    s = ds[0]
    assert s.vlm_indices == [0, 4, 7, 11]
    rec = records[0]
    visible = [t for t in range(12) if any(rec.objects[o].masks[t] is not None for o in rec.expressions[0].obj_ids)]
    assert s.sam_indices[0] == visible[0]
    assert s.sam_indices[-1] == 11 and s.sam_indices == sorted(s.sam_indices)
    ds.set_epoch(5)
    assert ds[0].vlm_indices == s.vlm_indices and ds[0].sam_indices == s.sam_indices
    long = ReferringVideoDataset(records, num_vlm_frames=20, num_sam_frames=2)
    assert len(long[0].vlm_indices) == 20  # shorter video: frames repeat, the count is exact


def test_random_sampling_is_a_function_of_seed_epoch_index(records):
    a = ReferringVideoDataset(records, num_vlm_frames=4, sampling="random", seed=7)
    b = ReferringVideoDataset(records, num_vlm_frames=4, sampling="random", seed=7)
    order_a = [a[i] for i in range(len(a))]
    order_b = [b[i] for i in reversed(range(len(b)))][::-1]  # access order does not matter
    assert all(_same(x, y) for x, y in zip(order_a, order_b))
    b.set_epoch(1)
    assert any(not _same(x, b[i]) for i, x in enumerate(order_a))
    b.set_epoch(0)
    assert all(_same(x, b[i]) for i, x in enumerate(order_a))
    c = ReferringVideoDataset(records, num_vlm_frames=4, sampling="random", seed=8)
    assert any(not _same(x, c[i]) for i, x in enumerate(order_a))


def test_only_sampled_frames_are_decoded(tmp_path, records):
    ds = ReferringVideoDataset(records[:1], num_vlm_frames=2, num_sam_frames=1, sampling="uniform")
    s = ds[0]
    used = set(s.vlm_indices) | set(s.sam_indices)
    rec = records[0]
    unused = [t for t in range(rec.num_frames) if t not in used]
    moved = rec.frame_path(unused[0])
    backup = tmp_path / "frame.jpg"
    moved.rename(backup)
    try:
        assert np.array_equal(ds[0].vlm_frames, s.vlm_frames)
        with pytest.raises(SparrowError, match="missing frame"):
            ReferringVideoDataset(records[:1], num_vlm_frames=rec.num_frames)[0]
    finally:
        backup.rename(moved)


def test_dataloader_batches(records):
    ds = ReferringVideoDataset(records, num_vlm_frames=2, num_sam_frames=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=list)
    batch = next(iter(loader))
    assert len(batch) == 2 and all(isinstance(s, ReferringSample) for s in batch)


def test_bad_arguments(records, tmp_path):
    with pytest.raises(SparrowError, match="sampling must be one of"):
        ReferringVideoDataset(records, sampling="dense")
    with pytest.raises(SparrowError, match="frame counts"):
        ReferringVideoDataset(records, num_sam_frames=0)
    with pytest.raises(SparrowError, match="no \\(video, expression\\) pairs"):
        ReferringVideoDataset([])
    with pytest.raises(SparrowError, match="unknown dataset format 'ytvos'"):
        load_records(tmp_path, format="ytvos")
    with pytest.raises(IndexError):
        ReferringVideoDataset(records)[10_000]


def test_insert_box_tokens():
    assert insert_box_tokens("Sure, [SEG].") == "Sure, [BOX] [SEG]."
    assert insert_box_tokens("[SEG] and [SEG].") == "[BOX] [SEG] and [BOX] [SEG]."
    assert insert_box_tokens("It is [BOX] [SEG].") == "It is [BOX] [SEG]."  # already paired: unchanged
    assert insert_box_tokens("no mask here") == "no mask here"
    with pytest.raises(ValueError, match="not paired"):
        insert_box_tokens("[BOX][SEG]")


def test_templates():
    t = ReferringTemplates()
    rng = np.random.default_rng(0)
    questions = {t.question("the red circle.", rng) for _ in range(60)}
    assert questions == {q.format(phrase="the red circle") for q in REFERRING_QUESTIONS}
    answers = {t.answer(1, rng) for _ in range(60)}
    assert answers == {a.replace("[SEG]", "[BOX] [SEG]") for a in REFERRING_ANSWERS}
    two = t.answer(2, np.random.default_rng(1))
    assert two.count("[BOX] [SEG]") == 2 and two.count("[SEG]") == 2
    with pytest.raises(ValueError, match="phrase"):
        ReferringTemplates(questions=("Segment it.",))
    with pytest.raises(ValueError, match="exactly one"):
        ReferringTemplates(answers=("[SEG] [SEG]",))
    with pytest.raises(ValueError, match="not paired"):
        insert_box_tokens("[BOX] here, [SEG].")


def test_custom_templates(records):
    t = ReferringTemplates(questions=("Where is {phrase}?",), answers=("Here: [SEG].",))
    s = ReferringVideoDataset(records, templates=t)[0]
    assert s.question == f"Where is {records[0].expressions[0].text}?"
    assert s.answer == "Here: [BOX] [SEG]."


def test_load_records_reads_any_layout_into_training_samples(tmp_path):
    import reader_fixtures as fx

    root = fx.refvos(tmp_path / "refytvos")
    records = load_records(root, format="refytvos", split="train")
    assert [r.video_id for r in records] == ["vid_a", "vid_b"]
    dataset = ReferringVideoDataset(records, num_vlm_frames=3, num_sam_frames=2, sampling="uniform")
    sample = dataset[1]  # vid_a, "the green box": object 2, absent on frame 0
    assert (sample.video_id, sample.text) == ("vid_a", "the green box")
    assert sample.vlm_frames.shape == (3, 24, 32, 3) and sample.sam_frames.shape == (2, 24, 32, 3)
    assert sample.sam_indices[0] == 1 and sample.boxes[0, 0].tolist() == fx.box(2, 1)  # key frame: first visible
    assert np.array_equal(sample.masks[0, 0], fx.mask(2, 1))
    with pytest.raises(SparrowError, match="choose a split"):
        load_records(root, format="refytvos")
    lasot = load_records(fx.lasot(tmp_path / "lasot"), format="lasot", split="train")  # boxes only
    with pytest.raises(SparrowError, match="'car-1', expression '0': the target has boxes but no masks"):
        ReferringVideoDataset(lasot, num_vlm_frames=2, num_sam_frames=2)[0]
