"""Follow the target through a video from one reference box: annotation (``gt``), OpenCV CSRT, or SAM2 video.

A tracker has ``track(frames, ref_index, ref_box, gt_boxes) -> list[box | None]``: ``frames [T, H, W, 3]``
uint8, the reference frame index and box ``[x0, y0, x1, y1]`` (pixels), and the annotated boxes where the
data has them (only ``gt`` reads them). It returns one box or None (target lost / absent) per frame, tracking
forward from the reference frame and backward to frame 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from sparrow.data.rle import mask_to_box
from sparrow.errors import SparrowError

Box = Sequence[float]
SAM2_HINT = "download a SAM2 video checkpoint, e.g. `hf download facebook/sam2.1-hiera-tiny --local-dir DIR`"


def _check_frames(frames: np.ndarray, ref_index: int) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise SparrowError(f"frames must be a non-empty [T, H, W, 3] array, got shape {list(frames.shape)}")
    if not 0 <= ref_index < frames.shape[0]:
        raise SparrowError(f"reference frame {ref_index} out of range for {frames.shape[0]} frames")


class GtTracker:
    """The annotated boxes themselves (the reference box is ignored)."""

    name = "gt"

    def track(
        self, frames: np.ndarray, ref_index: int, ref_box: Box, gt_boxes: Sequence[Box | None] | None = None
    ) -> list[list[float] | None]:
        if gt_boxes is None:
            raise SparrowError(
                "the 'gt' tracker needs annotated boxes; this expression has none (use --tracker csrt or sam2)"
            )
        if len(gt_boxes) != len(frames):
            raise SparrowError(f"{len(gt_boxes)} annotated boxes for {len(frames)} frames")
        return [None if b is None else [float(v) for v in b] for b in gt_boxes]


class CsrtTracker:
    """OpenCV CSRT (``cv2.TrackerCSRT``, opencv-contrib), run on frames downscaled to ``max_side`` pixels."""

    name = "csrt"

    def __init__(self, max_side: int = 640) -> None:
        self.max_side = max_side

    def _run(
        self, frames: np.ndarray, order: list[int], ref_box: Box, scale: float, out: list[list[float] | None]
    ) -> None:
        H, W = frames.shape[1:3]
        x0, y0 = max(float(ref_box[0]), 0.0) * scale, max(float(ref_box[1]), 0.0) * scale
        x1, y1 = min(float(ref_box[2]), W) * scale, min(float(ref_box[3]), H) * scale
        rect = (int(round(x0)), int(round(y0)), max(int(round(x1 - x0)), 2), max(int(round(y1 - y0)), 2))
        tracker = cv2.TrackerCSRT.create()
        try:
            tracker.init(self._frame(frames[order[0]], scale), rect)
        except cv2.error as exc:  # OpenCV rejects the box (too small, outside the frame): a data problem
            raise SparrowError(f"CSRT cannot start from box {list(ref_box)} on frame {order[0]}: {exc}") from exc
        for t in order[1:]:
            try:
                ok, (x, y, w, h) = tracker.update(self._frame(frames[t], scale))
            except cv2.error as exc:
                raise SparrowError(f"CSRT failed on frame {t}: {exc}") from exc
            if not ok or w <= 0 or h <= 0:
                out[t] = None
                continue
            bx0, by0 = max(x / scale, 0.0), max(y / scale, 0.0)
            bx1, by1 = min((x + w) / scale, float(W)), min((y + h) / scale, float(H))
            out[t] = [bx0, by0, bx1, by1] if bx1 > bx0 and by1 > by0 else None

    @staticmethod
    def _frame(frame: np.ndarray, scale: float) -> np.ndarray:
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if scale == 1.0:
            return bgr
        return cv2.resize(
            bgr, (int(round(frame.shape[1] * scale)), int(round(frame.shape[0] * scale))), interpolation=cv2.INTER_AREA
        )

    def track(
        self, frames: np.ndarray, ref_index: int, ref_box: Box, gt_boxes: Sequence[Box | None] | None = None
    ) -> list[list[float] | None]:
        _check_frames(frames, ref_index)
        T, H, W = frames.shape[:3]
        scale = min(1.0, self.max_side / max(H, W))
        out: list[list[float] | None] = [None] * T
        out[ref_index] = [float(v) for v in ref_box]
        if ref_index < T - 1:
            self._run(frames, list(range(ref_index, T)), ref_box, scale, out)
        if ref_index > 0:
            self._run(frames, list(range(ref_index, -1, -1)), ref_box, scale, out)
        return out


class Sam2Tracker:
    """SAM2 video (``transformers`` ``Sam2VideoModel``): box prompt on the reference frame, propagation forward
    and backward, the box of each predicted mask's extent (None where the mask is empty).

    ``model`` is a loaded ``Sam2VideoModel`` or a local folder. Frames are resized to the model's square input
    size and ImageNet-normalised here (no processor needed); the whole clip is held at that size.
    """

    name = "sam2"
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, model: torch.nn.Module | str | Path, device: str | torch.device = "cpu") -> None:
        from transformers import Sam2VideoModel

        if isinstance(model, (str, Path)):
            model_dir = Path(model)
            if not (model_dir / "config.json").is_file():
                raise SparrowError(f"no SAM2 video model here (config.json missing): {SAM2_HINT}", model_dir)
            try:
                model = Sam2VideoModel.from_pretrained(model_dir, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise SparrowError(
                    f"cannot load SAM2 video ({type(exc).__name__}: {exc}); {SAM2_HINT}", model_dir
                ) from exc
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.size = int(self.model.config.image_size)

    def _preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """``[T, H, W, 3]`` uint8 -> ``[T, 3, S, S]`` float32, resized and normalised."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - torch.tensor(self.MEAN).view(1, 3, 1, 1)) / torch.tensor(self.STD).view(1, 3, 1, 1)

    def _box(self, pred_masks: torch.Tensor, H: int, W: int) -> list[float] | None:
        logits = pred_masks.reshape(-1, 1, *pred_masks.shape[-2:])[:1].float()
        mask = torch.nn.functional.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)[0, 0] > 0
        return mask_to_box(mask.cpu().numpy())

    @torch.no_grad()
    def track(
        self, frames: np.ndarray, ref_index: int, ref_box: Box, gt_boxes: Sequence[Box | None] | None = None
    ) -> list[list[float] | None]:
        from transformers import Sam2VideoInferenceSession

        _check_frames(frames, ref_index)
        T, H, W = frames.shape[:3]
        session = Sam2VideoInferenceSession(
            video=self._preprocess(frames),
            video_height=H,
            video_width=W,
            inference_device=self.device,
            inference_state_device=self.device,
            dtype=torch.float32,
        )
        box = torch.tensor([float(v) for v in ref_box], dtype=torch.float32) / torch.tensor([W, H, W, H]) * self.size
        session.add_point_inputs(
            session.obj_id_to_idx(1),
            ref_index,
            {"point_coords": box.reshape(1, 1, 2, 2), "point_labels": torch.tensor([[[2, 3]]], dtype=torch.int32)},
        )
        session.obj_with_new_inputs = [1]
        out: list[list[float] | None] = [None] * T
        first = self.model(inference_session=session, frame_idx=ref_index)
        out[ref_index] = self._box(first.pred_masks, H, W)
        for reverse in (False, True):
            if (ref_index == T - 1 and not reverse) or (ref_index == 0 and reverse):
                continue
            for o in self.model.propagate_in_video_iterator(session, start_frame_idx=ref_index, reverse=reverse):
                out[o.frame_idx] = self._box(o.pred_masks, H, W)
        return out
