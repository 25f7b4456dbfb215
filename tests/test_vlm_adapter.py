"""The Qwen2.5-VL adapter: patch layout, prompt layout and labels, [BOX]/[SEG] state alignment, generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparrow.model.prompt_tokens import pair_prompt_tokens, teacher_forced_pairs
from sparrow.model.tiny_backbones import write_tiny_vlm
from sparrow.model.vlm_qwen2_5 import IGNORE_INDEX, QwenVLAdapter, VLMSample, fit_to_patches


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> QwenVLAdapter:
    path = write_tiny_vlm(tmp_path_factory.mktemp("vlm") / "vlm", seed=0)
    return QwenVLAdapter.from_pretrained(path).eval()


def _frames(t=4, h=56, w=84, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_patch_layout_matches_hf_video_processor(adapter):
    from transformers import Qwen2VLVideoProcessor

    frames = _frames()
    ours, grid = adapter.video_inputs(frames)
    hf = Qwen2VLVideoProcessor(do_resize=False)(
        videos=[torch.from_numpy(frames).permute(0, 3, 1, 2)], return_tensors="pt"
    )
    assert torch.equal(grid, hf["video_grid_thw"])
    assert torch.allclose(ours, hf["pixel_values_videos"], atol=1e-5)


def test_fit_to_patches_keeps_budget_and_alignment():
    for h, w in [(128, 128), (480, 854), (50, 300), (28, 28)]:
        nh, nw = fit_to_patches(h, w, 112 * 112, 28)
        assert nh % 28 == 0 and nw % 28 == 0 and nh * nw <= 112 * 112


def test_prompt_layout_and_labels(adapter):
    crops = _frames(t=4, h=40, w=30, seed=1)
    batch = adapter.collate(
        [VLMSample(_frames(), "Can you segment the red circle?", "Sure, it is [BOX] [SEG].", tsf_crops=crops)]
    )
    ids, labels, types = batch.input_ids[0], batch.labels[0], batch.mm_token_type_ids[0]
    n_video = int(batch.video_grid_thw.prod()) // 4
    assert int((ids == adapter.video_token_id).sum()) == n_video == int((types == 2).sum())
    n_image = int(batch.image_grid_thw.prod(-1).sum()) // 4
    assert batch.image_grid_thw.shape[0] == 4 and int((ids == adapter.image_token_id).sum()) == n_image == int(
        (types == 1).sum()
    )
    learned = ids[labels != IGNORE_INDEX]
    assert adapter.tokenizer.decode(learned).replace(" ", "") == "Sure,itis[BOX][SEG].<|im_end|>"
    # no visual or TSF position is ever a label or a prompt position
    assert not bool(((types != 0) & (labels != IGNORE_INDEX)).any())
    pairs = teacher_forced_pairs(batch.input_ids, batch.attention_mask, adapter.box_token_id, adapter.seg_token_id)[0]
    for pos in pairs.seg_positions + pairs.box_positions:
        assert int(types[pos]) == 0


def test_several_targets_pair_in_order(adapter):
    answer = "The <p>red circle</p> [BOX] [SEG] and the <p>blue star</p> [BOX] [SEG] and [SEG]."
    batch = adapter.collate([VLMSample(_frames(), "Describe.", answer)])
    ids = batch.input_ids[0]
    pairs = teacher_forced_pairs(batch.input_ids, batch.attention_mask, adapter.box_token_id, adapter.seg_token_id)[0]
    assert len(pairs) == 3 and pairs.box_positions[2] is None and pairs.orphan_boxes == 0
    for box_pos, seg_pos in zip(pairs.box_positions[:2], pairs.seg_positions[:2]):
        assert int(ids[box_pos + 1]) == adapter.box_token_id and int(ids[seg_pos + 1]) == adapter.seg_token_id
        assert seg_pos == box_pos + 1  # [BOX] directly precedes [SEG]: e_SEG is read at the [BOX] position


def test_pairing_rules():
    box, seg = 7, 8
    p = pair_prompt_tokens([1, box, seg, 2, box, 3, box, seg, seg, box], box, seg)
    assert p.box_positions == [1, 6, None] and p.seg_positions == [2, 7, 8] and p.orphan_boxes == 2


def test_left_and_right_padding_give_same_states(adapter):
    samples = [
        VLMSample(_frames(), "the red circle", "Sure, [BOX] [SEG]."),
        VLMSample(_frames(t=2, seed=3), "a much longer question about the blue star", "[BOX] [SEG]."),
    ]
    states = {}
    for side in ("left", "right"):
        batch = adapter.collate(samples, padding_side=side)
        with torch.no_grad():
            _, hidden = adapter(batch)
        pairs = teacher_forced_pairs(batch.input_ids, batch.attention_mask, adapter.box_token_id, adapter.seg_token_id)
        states[side] = [hidden[b, p.seg_positions[0]] for b, p in enumerate(pairs)]
    for a, b in zip(states["left"], states["right"]):
        assert torch.allclose(a, b, atol=1e-4)


def test_generation_states_equal_teacher_forced_states(adapter):
    sample = VLMSample(_frames(), "Can you segment the red circle?")
    gen = adapter.generate(adapter.collate([sample], padding_side="left"), max_new_tokens=6)[0]
    assert gen.states.shape == (len(gen.tokens), adapter.hidden_size)
    prompt = adapter.collate([sample])
    full = torch.cat([prompt.input_ids, gen.tokens[None]], dim=1)
    batch = adapter.collate([sample])
    batch.input_ids = full
    batch.attention_mask = torch.ones_like(full)
    batch.mm_token_type_ids = torch.cat([prompt.mm_token_type_ids, torch.zeros_like(gen.tokens)[None]], dim=1)
    with torch.no_grad():
        _, hidden = adapter(batch)
    start = prompt.input_ids.shape[1] - 1  # the last prompt position produced the first new token
    assert torch.allclose(hidden[0, start : start + len(gen.tokens)], gen.states, atol=1e-4)


def test_new_token_rows_are_trainable_and_distinct(adapter):
    emb = adapter.model.get_input_embeddings().weight
    assert emb.requires_grad
    new = emb[[adapter.box_token_id, adapter.seg_token_id]]
    assert torch.isfinite(new).all() and not torch.equal(new[0], new[1])
