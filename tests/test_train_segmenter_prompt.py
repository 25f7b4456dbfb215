"""A tiny SAM2 trained from random weights as a box-prompted segmenter must follow its box (issue 6).

Scenes hold three identical white squares; the target is the one the box names, so only the prompt tells them
apart. With corner tokens alone the decoder collapses to a prompt-independent mask within a few dozen steps
(measured: IoU <= 0.21 for 200 steps; not asserted, so that an improvement of that variant breaks nothing); with the
box also given as a mask prompt (the tiny config's ``sparrow_box_mask_prompt``) it reaches IoU > 0.9 in 40 steps
(0.89 at 50).
"""

from __future__ import annotations

import torch

from sparrow.model.losses import mask_bce_loss, mask_dice_loss
from sparrow.model.pixel_decoder import PixelDecoder
from sparrow.model.sam2_backbone import build_sam2, tiny_sam2_config

S = 64


def _scenes(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` images ``[n, 3, S, S]`` with three 16-px squares in three of the four quadrants; target masks
    ``[n, S/4, S/4]`` and normalised boxes ``[n, 4]`` of the first square."""
    images = torch.full((n, 3, S, S), -1.0)
    masks = torch.zeros(n, S // 4, S // 4)
    boxes = torch.zeros(n, 4)
    for i in range(n):
        for j, quadrant in enumerate(torch.randperm(4, generator=gen)[:3].tolist()):
            y0, x0 = (quadrant // 2) * 32 + 4, (quadrant % 2) * 32 + 4
            dy, dx = (int(v) for v in torch.randint(0, 12, (2,), generator=gen))
            y, x = y0 + dy, x0 + dx
            images[i, :, y : y + 16, x : x + 16] = 1.0
            if j == 0:
                masks[i, y // 4 : (y + 16) // 4, x // 4 : (x + 16) // 4] = 1.0
                boxes[i] = torch.tensor([x, y, x + 16, y + 16], dtype=torch.float32) / S
    return images, masks, boxes


def _train_and_score(box_mask_prompt: bool, steps: int = 60) -> float:
    torch.manual_seed(0)
    decoder = PixelDecoder(build_sam2(tiny_sam2_config(S)).train())
    decoder.box_mask_prompt = box_mask_prompt
    opt = torch.optim.AdamW(decoder.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        images, masks, boxes = _scenes(gen, 8)
        logits = decoder.decode(decoder.encode(images), None, boxes).mask_logits
        loss = 2.0 * mask_bce_loss(logits, masks) + 0.5 * mask_dice_loss(logits, masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    images, masks, boxes = _scenes(torch.Generator().manual_seed(99), 16)
    with torch.no_grad():
        pred = decoder.decode(decoder.encode(images), None, boxes).mask_logits > 0
    target = masks > 0
    iou = (pred & target).flatten(1).sum(1) / (pred | target).flatten(1).sum(1).clamp(min=1)
    return float(iou.mean())


def test_tiny_config_switches_the_box_mask_prompt_on() -> None:
    assert PixelDecoder(build_sam2(tiny_sam2_config(S))).box_mask_prompt is True


def test_box_prompted_segmenter_follows_the_box() -> None:
    assert _train_and_score(box_mask_prompt=True) > 0.8


def test_the_switch_decides_the_dense_prompt() -> None:
    """Off (pretrained checkpoints): the dense prompt is SAM2's no-mask embedding whatever the box; on: the prompt
    encoder's embedding of the rasterised box, so the same weights decode another mask."""
    torch.manual_seed(0)
    decoder = PixelDecoder(build_sam2(tiny_sam2_config(S))).eval()
    enc = decoder.sam.prompt_encoder
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.2, 0.9, 0.9]])
    images, _, _ = _scenes(torch.Generator().manual_seed(1), 2)
    with torch.no_grad():
        features = decoder.encode(images)
        decoder.box_mask_prompt = False
        off = decoder.dense_prompt(2, boxes)
        no_mask = enc.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(2, -1, *enc.image_embedding_size)
        torch.testing.assert_close(off, no_mask)
        logits_off = decoder.decode(features, None, boxes).mask_logits
        decoder.box_mask_prompt = True
        on = decoder.dense_prompt(2, boxes)
        logits_on = decoder.decode(features, None, boxes).mask_logits
    assert on.shape == off.shape and not torch.allclose(on[0], on[1])  # depends on the box
    assert (logits_on - logits_off).abs().max() > 1e-3
