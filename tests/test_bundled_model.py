"""The bundled default model loads strictly from the package and answers with the dual prompt."""

from __future__ import annotations

import numpy as np

from sparrow.data.synthref import SynthConfig, make_video
from sparrow.model.loading import BUNDLED_DIR
from sparrow.pipeline import load
from sparrow.pipeline.demo import mean_iou


def test_bundled_default_loads_and_segments():
    assert (BUNDLED_DIR / "model.safetensors").stat().st_size < 30 * 2**20  # small enough to ship
    model = load("default", device="cpu")
    assert model.config.mode == "perframe" and model.config.selection_level == "track"
    record, frames = make_video("test", 0, 0, SynthConfig(size=128, num_frames=24))  # the `sparrow demo` clip
    scores = []
    for expression in record.expressions:
        result = model.segment(frames, expression.text, progress=False)
        assert "[BOX] [SEG]" in result.answer and not result.forced_prompt
        assert result.masks.shape == (24, 128, 128)
        scores.append(mean_iou(result.masks, record.target_masks(expression)))
    # measured with the shipped weights on these raw frames (greedy decoding: deterministic): 0.00, 0.90, 0.81, 0.50.
    # The first expression's tracklet choice is a near tie (softmax 0.51 against 0.29, MODEL_CARD.md): on the frames
    # read back from the demo's mp4 it picks the target (0.89, tests/test_segment_cli_flags.py).
    assert np.mean(scores) > 0.45, scores
    assert sorted(scores)[1] > 0.4, scores  # three of the four find their target
