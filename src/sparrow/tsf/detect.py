"""Find the referred target in one reference frame: zero-shot GroundingDINO, or the annotated box (``gt``).

A detector has ``detect(frame, text, frame_index, gt_boxes) -> Detection | None``: ``frame [H, W, 3]`` uint8,
the referring expression, the frame's index in the video, and the annotated target boxes per frame when the
data has them (only the ``gt`` detector reads them). The box is ``[x0, y0, x1, y1]`` in frame pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparrow.errors import SparrowError

Box = Sequence[float]
GDINO_HINT = "download a GroundingDINO checkpoint, e.g. `hf download IDEA-Research/grounding-dino-tiny --local-dir DIR`"


@dataclass(frozen=True)
class Detection:
    """The target's box ``(x0, y0, x1, y1)`` in frame pixels and the detector's confidence in [0, 1]."""

    box: tuple[float, float, float, float]
    score: float


class GtDetector:
    """The annotated target box of the frame (score 1), or None where the target is not annotated there."""

    name = "gt"

    def detect(
        self, frame: np.ndarray, text: str, frame_index: int, gt_boxes: Sequence[Box | None] | None = None
    ) -> Detection | None:
        if gt_boxes is None:
            raise SparrowError(
                "the 'gt' detector needs annotated boxes; this expression has none (use --detector gdino)"
            )
        box = gt_boxes[frame_index]
        return None if box is None else Detection(tuple(float(v) for v in box), 1.0)


def grounding_text(text: str) -> str:
    """GroundingDINO's prompt convention: lower case, ending with a period."""
    t = " ".join(text.lower().split())
    return t if t.endswith(".") else t + "."


class GroundingDinoDetector:
    """Zero-shot detection with ``transformers`` ``GroundingDinoForObjectDetection`` from a local folder.

    The highest-scoring box over all queries and text tokens is returned if its score reaches
    ``box_threshold`` (None otherwise). ``model_dir`` holds the model and its processor (``save_pretrained``).
    """

    name = "gdino"

    def __init__(
        self,
        model_dir: str | Path,
        box_threshold: float = 0.25,
        text_threshold: float = 0.25,
        device: str | torch.device = "cpu",
    ) -> None:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise SparrowError(f"no GroundingDINO model here (config.json missing): {GDINO_HINT}", model_dir)
        try:
            self.processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
            self.model = (
                GroundingDinoForObjectDetection.from_pretrained(model_dir, local_files_only=True).to(device).eval()
            )
        except (OSError, ValueError) as exc:
            raise SparrowError(
                f"cannot load GroundingDINO ({type(exc).__name__}: {exc}); {GDINO_HINT}", model_dir
            ) from exc
        self.device = torch.device(device)
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold

    @torch.no_grad()
    def detect(
        self, frame: np.ndarray, text: str, frame_index: int = 0, gt_boxes: Sequence[Box | None] | None = None
    ) -> Detection | None:
        H, W = frame.shape[:2]
        inputs = self.processor(images=frame, text=grounding_text(text), return_tensors="pt").to(self.device)
        outputs = self.model(**inputs)
        result = self.processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=self.box_threshold,
            text_threshold=self.text_threshold,
            target_sizes=[(H, W)],
        )[0]
        if len(result["scores"]) == 0:
            return None
        best = int(torch.argmax(result["scores"]))
        x0, y0, x1, y1 = (float(v) for v in result["boxes"][best].clamp(min=0).tolist())
        x1, y1 = min(x1, float(W)), min(y1, float(H))
        if x1 <= x0 or y1 <= y0:
            return None
        return Detection((x0, y0, x1, y1), float(result["scores"][best]))
