"""A contact sheet of SynthRef clips: frames with the referred target's mask and box drawn over them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from sparrow.atomic import atomic_path
from sparrow.data.schema import Expression, VideoRecord
from sparrow.errors import SparrowError

_BOX = (255, 0, 255)  # magenta box
_OUTLINE = (255, 255, 255)  # white mask outline


def overlay(frame: np.ndarray, mask: np.ndarray, box: list[float] | None) -> Image.Image:
    """``frame [H, W, 3]`` uint8 with the outline of ``mask [H, W]`` in white and ``box`` (xyxy) in magenta."""
    out = np.ascontiguousarray(frame).copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, _OUTLINE, 1)
    img = Image.fromarray(out)
    if box is not None:
        ImageDraw.Draw(img).rectangle([box[0] - 1, box[1] - 1, box[2], box[3]], outline=_BOX)
    return img


def pick_examples(records: list[VideoRecord], clips: int) -> list[tuple[VideoRecord, Expression]]:
    """Up to ``clips`` (video, expression) pairs from different videos: one per difficulty tag first, then any."""
    from sparrow.data.synthref.scene import DIFFICULTIES

    chosen: list[tuple[VideoRecord, Expression]] = []
    used: set[str] = set()
    for tag in DIFFICULTIES:
        for rec in records:
            exp = next((e for e in rec.expressions if tag in e.tags), None)
            if exp is not None and rec.video_id not in used:
                chosen.append((rec, exp))
                used.add(rec.video_id)
                break
    for rec in records:
        if rec.expressions and rec.video_id not in used:
            chosen.append((rec, rec.expressions[0]))
            used.add(rec.video_id)
    return chosen[:clips]


def contact_sheet(records: list[VideoRecord], out: str | Path, clips: int = 6, frames: int = 6, scale: int = 1) -> Path:
    """Write a PNG with one row per clip (see :func:`pick_examples`): the expression as caption over ``frames``
    evenly spaced frames with the target's visible mask outlined (white) and its box (magenta)."""
    chosen = pick_examples(records, clips)
    if not chosen:
        raise SparrowError("no video with an expression to show", out)
    H, W = chosen[0][0].height * scale, chosen[0][0].width * scale
    caption_h, gap = 14, 4
    sheet = Image.new("RGB", (frames * (W + gap) - gap, len(chosen) * (H + caption_h + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, (rec, exp) in enumerate(chosen):
        idx = [int(round(x)) for x in np.linspace(0, rec.num_frames - 1, frames)]
        imgs = rec.load_frames(idx)
        masks = rec.target_masks(exp, idx)
        boxes = rec.target_boxes(exp, idx)
        y = row * (H + caption_h + gap)
        tags = f" [{', '.join(exp.tags)}]" if exp.tags else ""
        draw.text((2, y + 1), f'{rec.video_id}: "{exp.text}" ({exp.kind}){tags}', fill=(0, 0, 0))
        for col in range(frames):
            img = overlay(imgs[col], masks[col], boxes[col])
            if scale != 1:
                img = img.resize((W, H), Image.NEAREST)
            sheet.paste(img, (col * (W + gap), y + caption_h))
    out = Path(out)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return out
