"""Pixel decoder: shapes, the exact sparse prompt layout, gradients, and parity with HF Sam2Model's box prompt."""

from __future__ import annotations

import pytest
import torch
from transformers import Sam2Config, Sam2Model

from sparrow.model.pixel_decoder import BOX_MASK_LOGIT, PixelDecoder, box_mask_logits
from sparrow.model.sam2_backbone import build_sam2, tiny_sam2_config

S, C, B = 64, 128, 2


@pytest.fixture(scope="module")
def decoder() -> PixelDecoder:
    torch.manual_seed(0)
    return PixelDecoder(build_sam2(tiny_sam2_config(S)))


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(B, 3, S, S, generator=torch.Generator().manual_seed(1))


BOXES = torch.tensor([[0.10, 0.20, 0.55, 0.60], [0.30, 0.25, 0.90, 0.80]])


def test_attributes_and_single_sam_copy(decoder: PixelDecoder) -> None:
    assert decoder.hidden_size == C and decoder.image_size == S
    assert dict(decoder.named_children()) == {"sam": decoder.sam}


def test_encode_shapes(decoder: PixelDecoder, pixels: torch.Tensor) -> None:
    with torch.no_grad():
        feats = decoder.encode(pixels)
    assert feats.embedding.shape == (B, C, S // 16, S // 16)
    assert [tuple(h.shape) for h in feats.high_res] == [(B, C // 8, S // 4, S // 4), (B, C // 4, S // 8, S // 8)]
    with pytest.raises(ValueError, match="pixel_values"):
        decoder.encode(torch.zeros(1, 3, S + 16, S))


def test_encode_matches_hf_embeddings(decoder: PixelDecoder, pixels: torch.Tensor) -> None:
    with torch.no_grad():
        decoder.sam.no_memory_embedding.normal_()  # make "no-memory embedding added" visible
        feats = decoder.encode(pixels)
        ref = decoder.sam.get_image_embeddings(pixels)  # HF: high-res levels + final embedding + no-memory
    assert torch.allclose(feats.embedding, ref[-1], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(feats.high_res, ref[:-1]))


@pytest.mark.parametrize("with_seg,with_box,tokens", [(True, True, 3), (True, False, 1), (False, True, 3)])
def test_decode_shapes(
    decoder: PixelDecoder, pixels: torch.Tensor, with_seg: bool, with_box: bool, tokens: int
) -> None:
    seg = torch.randn(B, C) if with_seg else None
    boxes = BOXES if with_box else None
    with torch.no_grad():
        out = decoder.decode(decoder.encode(pixels), seg, boxes)
        assert decoder.sparse_prompt(seg, boxes).shape == (B, 1, tokens, C)
    assert out.mask_logits.shape == (B, S // 4, S // 4)
    assert out.iou_scores.shape == (B,) and out.object_score_logits.shape == (B,)
    assert torch.isfinite(out.mask_logits).all()


def test_decode_needs_a_prompt(decoder: PixelDecoder, pixels: torch.Tensor) -> None:
    feats = decoder.encode(pixels)
    with pytest.raises(ValueError, match="SEG"):
        decoder.decode(feats, None, None)
    with pytest.raises(ValueError, match="seg_embeddings"):
        decoder.decode(feats, torch.zeros(B, C + 1), None)
    with pytest.raises(ValueError, match="boxes"):
        decoder.decode(feats, None, torch.zeros(B, 2))


def test_sparse_layout_is_corners_then_seg(decoder: PixelDecoder) -> None:
    seg = torch.randn(B, C)
    got = decoder.sparse_prompt(seg, BOXES)
    enc = decoder.sam.prompt_encoder
    corners = (BOXES * S).view(B, 1, 2, 2)
    with torch.no_grad():
        # SAM2's prompt encoder, called by hand with the corners as points labelled 2 and 3
        by_hand, _ = enc(
            input_points=corners,
            input_labels=torch.tensor([[[2, 3]]], dtype=torch.int32).expand(B, 1, 2),
            input_boxes=None,
            input_masks=None,
        )
        # and from first principles: PE of the pixel centre + the label embedding
        pe = enc.shared_embedding(corners + 0.5, (S, S))
        first_principles = pe + enc.point_embed.weight[[2, 3]]
        # HF's own box path: same two corners, then the "not a point" padding token
        box_path, _ = enc(input_points=None, input_labels=None, input_boxes=(BOXES * S)[:, None], input_masks=None)
    assert got.shape == (B, 1, 3, C)
    assert torch.allclose(got[:, :, :2], by_hand[:, :, :2], atol=1e-6)
    assert torch.allclose(got[:, :, :2], first_principles, atol=1e-5)
    assert torch.equal(got[:, 0, 2], seg)
    box_only = decoder.sparse_prompt(None, BOXES)
    assert torch.allclose(box_only, box_path, atol=1e-6)
    assert torch.equal(box_only[:, 0, 2], enc.not_a_point_embed.weight.expand(B, C))
    assert torch.equal(decoder.sparse_prompt(seg, None)[:, 0, 0], seg)
    assert not torch.allclose(got[:, 0, 0], got[:, 0, 1])  # corner labels differ


def test_gradients_reach_seg_and_sam(decoder: PixelDecoder, pixels: torch.Tensor) -> None:
    decoder.zero_grad()
    seg = torch.randn(B, C, requires_grad=True)
    out = decoder.decode(decoder.encode(pixels), seg, BOXES)
    target = torch.zeros_like(out.mask_logits)
    target[:, 4:10, 4:10] = 1.0
    torch.nn.functional.binary_cross_entropy_with_logits(out.mask_logits, target).backward()
    assert seg.grad is not None and seg.grad.abs().sum() > 0
    sam = decoder.sam
    for name in ("mask_decoder.mask_tokens.weight", "vision_encoder.neck.convs.0.weight", "no_memory_embedding"):
        grad = dict(sam.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    decoder.zero_grad()


@pytest.mark.parametrize("box_mask_prompt", [True, False])
def test_box_only_equals_hf_sam2_box_prompt(decoder: PixelDecoder, pixels: torch.Tensor, box_mask_prompt: bool) -> None:
    """Box only = HF Sam2Model's box prompt; with the box mask prompt on (the tiny config), = HF's box prompt plus
    ``input_masks`` holding the rasterised box."""
    vcfg = decoder.sam.config
    hf = Sam2Model(
        Sam2Config(
            vision_config=vcfg.vision_config.to_dict(),
            prompt_encoder_config=vcfg.prompt_encoder_config.to_dict(),
            mask_decoder_config=vcfg.mask_decoder_config.to_dict(),
        )
    ).eval()
    missing, _ = hf.load_state_dict(decoder.sam.state_dict(), strict=False)
    assert missing == []
    hf.mask_decoder.dynamic_multimask_via_stability = False
    assert decoder.box_mask_prompt is True
    plain = PixelDecoder(decoder.sam)
    plain.box_mask_prompt = box_mask_prompt
    masks = box_mask_logits(BOXES, S // 4) if box_mask_prompt else None
    with torch.no_grad():
        ref = hf(pixel_values=pixels, input_boxes=(BOXES * S)[:, None], input_masks=masks, multimask_output=False)
        out = plain.decode(plain.encode(pixels), None, BOXES)
    assert torch.allclose(out.mask_logits, ref.pred_masks[:, 0, 0], atol=1e-5)
    assert torch.allclose(out.iou_scores, ref.iou_scores[:, 0, 0], atol=1e-6)
    assert torch.allclose(out.object_score_logits, ref.object_score_logits[:, 0, 0], atol=1e-6)


def test_box_mask_logits_cover_the_cells_a_box_overlaps() -> None:
    boxes = torch.tensor([[0.10, 0.20, 0.50, 0.30], [0.50, 0.50, 0.50, 0.50], [0.0, 0.0, 1.0, 1.0]])
    got = box_mask_logits(boxes, 8)
    assert got.shape == (3, 1, 8, 8)
    assert set(got.unique().tolist()) <= {-BOX_MASK_LOGIT, BOX_MASK_LOGIT}
    on = got[:, 0] > 0
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[1:3, 0:4] = True  # rows [0.125, 0.375) overlap y 0.2-0.3; columns [0, 0.5) overlap x 0.1-0.5
    assert torch.equal(on[0], expected)
    assert on[1].sum() == 1 and on[1][4, 4]  # a degenerate box still marks its cell
    assert on[2].all()


def test_dense_prompt_depends_on_the_box(decoder: PixelDecoder) -> None:
    """With the box mask prompt on, two boxes give two dense prompts (the fix for the from-scratch segmenter collapse);
    without a box, or with the flag off, it is SAM2's no-mask embedding."""
    with torch.no_grad():
        dense = decoder.dense_prompt(B, BOXES)
        no_mask = decoder.dense_prompt(B)
        plain = PixelDecoder(decoder.sam)
        plain.box_mask_prompt = False
        assert torch.equal(plain.dense_prompt(B, BOXES), no_mask)
    assert dense.shape == no_mask.shape == (B, C, S // 16, S // 16)
    assert not torch.allclose(dense[0], dense[1])
    assert not torch.allclose(dense[0], no_mask[0])


def test_single_mask_output_in_eval(decoder: PixelDecoder, pixels: torch.Tensor) -> None:
    """Token 0 is used even where the stability fallback would swap in a multimask output; the flag is restored."""
    dec = decoder.sam.mask_decoder
    dec.dynamic_multimask_stability_thresh = 2.0  # every mask "unstable": the fallback would always fire
    try:
        with torch.no_grad():
            feats = decoder.encode(pixels)
            out = decoder.decode(feats, None, BOXES)
            sparse = decoder.sparse_prompt(None, BOXES)
            pe = decoder.sam.get_image_wide_positional_embeddings().repeat(B, 1, 1, 1)
            dec.dynamic_multimask_via_stability = False
            masks, *_ = dec(feats.embedding, pe, sparse, decoder.dense_prompt(B, BOXES), False, feats.high_res)
            dec.dynamic_multimask_via_stability = True
            fallback, *_ = dec(feats.embedding, pe, sparse, decoder.dense_prompt(B, BOXES), False, feats.high_res)
    finally:
        default = decoder.sam.config.mask_decoder_config.dynamic_multimask_stability_thresh
        dec.dynamic_multimask_stability_thresh = default
    assert dec.dynamic_multimask_via_stability is True
    assert torch.equal(out.mask_logits, masks[:, 0, 0])
    assert not torch.allclose(out.mask_logits, fallback[:, 0, 0])


def test_upsample() -> None:
    logits = torch.full((2, 16, 16), -5.0)
    logits[:, :8] = 5.0
    up = PixelDecoder.upsample(logits, (48, 64))
    assert up.shape == (2, 48, 64)
    assert (up[:, :20] > 0).all() and (up[:, 28:] < 0).all()
