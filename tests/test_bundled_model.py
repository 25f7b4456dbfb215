"""The bundled default model loads strictly from the package and answers with the dual prompt."""

from __future__ import annotations

import numpy as np

from sparrow.data.synthref import SynthConfig, make_video
from sparrow.model.loading import BUNDLED_DIR
from sparrow.pipeline import load


def test_bundled_default_loads_and_segments():
    assert (BUNDLED_DIR / "model.safetensors").stat().st_size < 30 * 2**20  # small enough to ship
    model = load("default", device="cpu")
    assert model.config.mode == "perframe"
    record, frames = make_video("test", 0, 0, SynthConfig(size=128, num_frames=24))  # the `sparrow demo` clip
    result = model.segment(frames, record.expressions[0].text)
    assert "[BOX] [SEG]" in result.answer and not result.forced_prompt
    assert result.masks.shape == (24, 128, 128)
    truth = record.target_masks(record.expressions[0])
    union = np.logical_or(result.masks, truth).sum((1, 2))
    iou = np.where(union > 0, np.logical_and(result.masks, truth).sum((1, 2)) / np.maximum(union, 1), 1.0).mean()
    assert iou > 0.3, iou  # 0.387 measured with the shipped weights (greedy decoding: deterministic)
