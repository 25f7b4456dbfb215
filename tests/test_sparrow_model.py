"""SparrowModel: save/load round trip, track and framewise modes on a 30-frame clip, training losses."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch
from helpers_clips import training_sample, two_object_clip

from sparrow.data.rle import decode_rle
from sparrow.errors import SparrowError
from sparrow.model.batching import make_batch
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import build_tiny, from_pretrained, save_pretrained
from sparrow.pipeline import SegmentationPipeline


@pytest.fixture(scope="module")
def model():
    m = build_tiny(seed=0, config=SparrowConfig(vlm_frames=4, vlm_max_frame_pixels=56 * 56))
    return m.eval()


@pytest.fixture(scope="module")
def pipe(model):
    return SegmentationPipeline(model)


def test_training_forward_returns_each_weighted_loss(model):
    frames, masks, boxes = two_object_clip(t=4)
    batch = make_batch(model, [training_sample(frames, masks, boxes, [0, 3])] * 2)
    torch.manual_seed(0)
    losses = model(batch, train_proposer=True)
    for key in ("ce", "mask_bce", "mask_dice", "selection", "box", "proposer", "loss"):
        assert key in losses and torch.isfinite(losses[key]), key
    w = model.config.loss
    expected = (
        w.ce * losses["ce"]
        + w.mask_bce * losses["mask_bce"]
        + w.mask_dice * losses["mask_dice"]
        + w.selection * losses["selection"]
        + w.box * losses["box"]
        + w.proposer * losses["proposer"]
    )
    assert torch.allclose(losses["loss"], expected, rtol=1e-5)


def test_answer_slot_mismatch_is_an_error(model):
    frames, masks, boxes = two_object_clip(t=4)
    sample = training_sample(frames, masks, boxes, [0, 3])
    sample.answer = "Sure, [BOX] [SEG] and [BOX] [SEG]."
    with pytest.raises(SparrowError, match="2 \\[SEG\\] tokens for 1 target slots"):
        model(make_batch(model, [sample]))


def test_save_load_round_trip_gives_identical_outputs(model, tmp_path):
    frames, masks, boxes = two_object_clip(t=4)
    save_pretrained(model, tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors", "vlm", "sam2"}
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "model.safetensors"):  # readable like any other file the user writes
        assert stat.S_IMODE((tmp_path / "m" / name).stat().st_mode) == 0o666 & ~umask, name
    loaded = from_pretrained(tmp_path / "m")
    batch = make_batch(model, [training_sample(frames, masks, boxes, [0, 3])])
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(batch)
        torch.manual_seed(1)
        b = loaded(batch)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ra = SegmentationPipeline(model).segment(frames, "the red square", mode="framewise")
    rb = SegmentationPipeline(loaded).segment(frames, "the red square", mode="framewise")
    assert ra.answer == rb.answer and np.array_equal(ra.masks, rb.masks)


def test_loading_a_folder_without_weights_fails_clearly(model, tmp_path):
    save_pretrained(model, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(SparrowError, match="has no weights"):
        from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(SparrowError, match="cannot load weights"):
        from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("mode", ["track", "framewise", "perframe"])
def test_modes_on_a_30_frame_clip(pipe, mode):
    frames, _, _ = two_object_clip(t=30, h=64, w=80)
    result = pipe.segment(frames, "the red square", mode=mode, key_frame="auto")
    assert result.mode == mode and result.num_frames == 30 and result.masks.shape == (30, 64, 80)
    target = result.targets[0]
    assert len(target.rles) == 30 and len(target.boxes) == 30
    assert target.key_frame in result.vlm_frame_indices
    for rle, box in zip(target.rles, target.boxes):
        assert (rle is None) == (box is None)
    record = json.loads(json.dumps(result.to_json()))
    assert len(record["targets"][0]["frames"]) == 30


def test_perframe_decodes_each_frame_with_the_box_selected_on_it(model):
    from sparrow.data.video_io import Video
    from sparrow.model.pixel_decoder import PixelDecoder
    from sparrow.model.selector import select_boxes
    from sparrow.pipeline.masks import decoded_masks

    frames, _, _ = two_object_clip(t=7, h=64, w=64)
    torch.manual_seed(1)
    c = model.pixel_decoder.hidden_size
    seg, box_embedding = torch.randn(c), torch.randn(c)
    with torch.no_grad():
        got = decoded_masks(model, Video.open(frames), seg, None, False, box_embedding=box_embedding, chunk=3)
        feats = model.pixel_decoder.encode(model.preprocessor(frames))
        top = model.candidates(feats)
        assert top.appearance is not None and top.appearance.shape[:2] == top.boxes.shape[:2]
        boxes = torch.stack(
            [select_boxes(model.select(box_embedding[None], top, i), 0.4, 1)[1][0][0] for i in range(7)]
        )
        assert len({tuple(b.tolist()) for b in boxes}) > 1  # the selected box does change over the frames
        want = (
            PixelDecoder.upsample(
                model.pixel_decoder.decode(feats, seg[None].expand(7, -1), boxes).mask_logits, (64, 64)
            )
            > 0
        )
    for t in range(7):
        rle, _ = got[t]
        mask = np.zeros((64, 64), bool) if rle is None else decode_rle(rle, expected_size=(64, 64))
        assert np.array_equal(mask, want[t].numpy()), t


def test_fixed_key_frame_and_bad_arguments(pipe):
    frames, _, _ = two_object_clip(t=8, h=64, w=64)
    assert pipe.segment(frames, "the red square", mode="framewise", key_frame=5).targets[0].key_frame == 5
    with pytest.raises(SparrowError, match="out of range"):
        pipe.segment(frames, "the red square", key_frame=8)
    with pytest.raises(SparrowError, match="query is empty"):
        pipe.segment(frames, "  ")
    with pytest.raises(SparrowError, match="mode must be"):
        pipe.segment(frames, "x", mode="bogus")


def test_tsf_at_inference_from_user_boxes_and_self(pipe):
    frames, _, boxes = two_object_clip(t=12, h=64, w=96)
    given = {t: list(boxes[t]) for t in (0, 3, 6, 9, 11)}
    result = pipe.segment(frames, "the red square", mode="framewise", tsf_boxes=given)
    entries = result.extra["tsf"]["entries"]
    assert result.extra["tsf"]["source"] == "boxes" and len(entries) == pipe.config.tsf_k
    assert {e[0] for e in entries} <= set(given) and all(e[1:] == given[e[0]] for e in entries)
    plain = pipe.segment(frames, "the red square", mode="framewise")
    assert result.targets[0].selection_score != pytest.approx(plain.targets[0].selection_score, abs=1e-6)  # TSF is seen
    selfish = pipe.segment(frames, "the red square", mode="framewise", self_tsf=True)
    first = plain.targets[0].boxes
    assert selfish.extra["tsf"]["source"] == "self"
    assert len(selfish.extra["tsf"]["entries"]) == min(pipe.config.tsf_k, sum(b is not None for b in first))
    for frame, *box in selfish.extra["tsf"]["entries"]:  # crops from the first pass's predicted track
        assert box == pytest.approx(first[frame])
    with pytest.raises(SparrowError, match="out of range"):
        pipe.segment(frames, "the red square", tsf_boxes={40: [0, 0, 5, 5]})
