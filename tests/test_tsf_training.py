"""TSF in training: cached crops reach the samples, the batch and the model; positions stay out of the labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparrow.data.dataset import ReferringVideoDataset, load_records
from sparrow.data.synthref import SynthConfig, generate_split
from sparrow.model.batching import make_batch
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import build_tiny
from sparrow.model.prompt_tokens import teacher_forced_pairs
from sparrow.model.vlm_qwen2_5 import IGNORE_INDEX
from sparrow.tsf.build import BuildConfig, build_tsf
from sparrow.tsf.cache import read_tsf_cache
from sparrow.tsf.crops import CachedCrops


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_split(
        root,
        videos=3,
        seed=1,
        split="train",
        config=SynthConfig(size=64, num_frames=8, expressions_per_video=2),
        progress=False,
    )
    records = load_records(root / "train")
    build_tsf(records, root / "tsf", BuildConfig(k=4), progress=False)
    return records, read_tsf_cache(root / "tsf")


def test_samples_carry_tsf_crops_and_object_boxes(split):
    records, cache = split
    ds = ReferringVideoDataset(records, num_vlm_frames=4, num_sam_frames=2, tsf_crops=CachedCrops(cache, 32))
    plain = ReferringVideoDataset(records, num_vlm_frames=4, num_sam_frames=2)
    sample = ds[0]
    assert (
        sample.tsf_crops is not None and sample.tsf_crops.shape == (4, 32, 32, 3) and sample.tsf_crops.dtype == np.uint8
    )
    assert plain[0].tsf_crops is None
    assert len(sample.object_boxes) == 2
    record = records[0]
    visible = sum(o.boxes[sample.sam_indices[0]] is not None for o in record.objects.values())
    assert sample.object_boxes[0].shape == (visible, 4)
    # the entries are the cached (frame, box) of this expression
    entry = cache[(sample.video_id, sample.exp_id)]
    assert entry.status == "ok" and len(entry.entries) == 4


def test_tsf_batch_trains_and_tsf_positions_are_never_labels(split):
    records, cache = split
    model = build_tiny(seed=0, config=SparrowConfig(vlm_frames=4, vlm_max_frame_pixels=56 * 56, tsf="train"))
    ds = ReferringVideoDataset(records, num_vlm_frames=4, num_sam_frames=2, tsf_crops=CachedCrops(cache, 56))
    samples = [ds[0], ds[1]]
    on, off = make_batch(model, samples, with_tsf=True), make_batch(model, samples, with_tsf=False)
    assert on.vlm.image_grid_thw is not None and on.vlm.image_grid_thw.shape[0] == 8 and off.vlm.image_grid_thw is None
    image_positions = on.vlm.input_ids == model.vlm.image_token_id
    assert int(image_positions.sum()) == int(on.vlm.image_grid_thw.prod(-1).sum()) // 4
    assert not bool((on.vlm.labels[image_positions] != IGNORE_INDEX).any())
    # the answer's labels and [BOX]/[SEG] pairs are the same with and without TSF
    for batch in (on, off):
        pairs = teacher_forced_pairs(
            batch.vlm.input_ids, batch.vlm.attention_mask, model.vlm.box_token_id, model.vlm.seg_token_id
        )
        for row, p in enumerate(pairs):
            assert len(p) == 1 and not bool(image_positions[row, p.seg_positions[0]]) if batch is on else len(p) == 1
    learned = lambda b: [row[row != IGNORE_INDEX].tolist() for row in b.vlm.labels]
    assert learned(on) == learned(off)
    losses = model(on, train_proposer=True)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    vision = model.vlm.model.model.visual
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in vision.parameters())
