"""Masks from boxes with SAM2 (for sources that only have boxes: tracking and grounding sets).

:class:`Sam2BoxMasker` prompts SAM2 video (``transformers`` ``Sam2VideoModel``) with the object's box on every
frame that has one and keeps the predicted mask there (upsampled to the frame, logits > 0); frames without a box
get None. Loading and preprocessing are :class:`sparrow.tsf.track.Sam2Tracker`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sparrow.tsf.track import Sam2Tracker, _check_frames

Box = Sequence[float]


class Sam2BoxMasker(Sam2Tracker):
    """``masks(frames [T, H, W, 3] uint8, boxes) -> [mask [H, W] bool | None] * T``."""

    name = "sam2-box"

    @torch.no_grad()
    def masks(self, frames: np.ndarray, boxes: Sequence[Box | None]) -> list[np.ndarray | None]:
        from transformers import Sam2VideoInferenceSession

        _check_frames(frames, 0)
        T, H, W = frames.shape[:3]
        if len(boxes) != T:
            raise ValueError(f"{len(boxes)} boxes for {T} frames")
        out: list[np.ndarray | None] = [None] * T
        boxed = [t for t, b in enumerate(boxes) if b is not None]
        if not boxed:
            return out
        session = Sam2VideoInferenceSession(
            video=self._preprocess(frames),
            video_height=H,
            video_width=W,
            inference_device=self.device,
            inference_state_device=self.device,
            dtype=torch.float32,
        )
        scale = torch.tensor([W, H, W, H], dtype=torch.float32)
        for t in boxed:
            box = torch.tensor([float(v) for v in boxes[t]], dtype=torch.float32) / scale * self.size
            session.add_point_inputs(
                session.obj_id_to_idx(1),
                t,
                {"point_coords": box.reshape(1, 1, 2, 2), "point_labels": torch.tensor([[[2, 3]]], dtype=torch.int32)},
            )
            session.obj_with_new_inputs = [1]
            pred = self.model(inference_session=session, frame_idx=t).pred_masks
            logits = pred.reshape(-1, 1, *pred.shape[-2:])[:1].float()
            mask = torch.nn.functional.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)[0, 0] > 0
            out[t] = mask.cpu().numpy()
        return out
