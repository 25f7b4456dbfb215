"""The tiny model, trained on one synthetic clip for a bounded number of steps, segments it and emits [BOX] [SEG]."""

from __future__ import annotations

import torch
from helpers_clips import mask_iou, training_sample, two_object_clip

from sparrow.model.batching import make_batch
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import build_tiny
from sparrow.pipeline import SegmentationPipeline

STEPS = 150


def test_overfit_one_clip_reaches_high_iou_and_emits_dual_prompt():
    torch.manual_seed(0)
    model = build_tiny(seed=0, config=SparrowConfig(vlm_frames=4, vlm_max_frame_pixels=56 * 56))
    frames, masks, boxes = two_object_clip(t=6)
    vlm_idx = [0, 2, 3, 5]  # what sample_indices(6, 4) gives: the VLM sees the same frames in training and inference
    sample = training_sample(frames, masks, boxes, sam_indices=[0, 2, 5])
    sample.vlm_frames = frames[vlm_idx]
    batch = make_batch(model, [sample])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    model.train()
    for step in range(STEPS):
        losses = model(batch, train_proposer=True)
        optimizer.zero_grad()
        losses["loss"].backward()
        if step == 0:  # gradients reach every head and the new token rows
            for name, module in [
                ("box_head", model.box_head),
                ("seg_head", model.seg_head),
                ("selector", model.selector),
                ("proposer", model.proposer),
            ]:
                grads = [p.grad for p in module.parameters() if p.requires_grad]
                assert grads and all(g is not None for g in grads), name
                assert sum(float(g.abs().sum()) for g in grads) > 0, name
            emb_grad = model.vlm.model.get_input_embeddings().weight.grad
            assert float(emb_grad[model.vlm.seg_token_id].abs().sum()) > 0
            assert float(emb_grad[model.vlm.box_token_id].abs().sum()) > 0
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    result = SegmentationPipeline(model).segment(frames, "the red square", mode="framewise")
    assert "[BOX] [SEG]" in result.answer.replace("[BOX][SEG]", "[BOX] [SEG]") and not result.forced_prompt
    assert result.vlm_frame_indices == vlm_idx
    ious = [mask_iou(p, g) for p, g in zip(result.masks, masks)]
    assert min(ious) > 0.9, ious
    assert result.targets[0].selection_score is not None
