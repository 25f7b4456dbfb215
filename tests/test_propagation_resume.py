"""Propagation checkpoints: a run stopped after a checkpoint and resumed from it (through torch.save) yields exactly
the logits of an uninterrupted run, in every direction, across the switch from the forward to the backward pass."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from test_propagator import S, moving_square

from sparrow.errors import SparrowError
from sparrow.model.propagator import MaskPropagator, PropagationCheckpoint
from sparrow.model.sam2_backbone import Sam2Preprocessor, build_sam2, tiny_sam2_config


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    return build_sam2(tiny_sam2_config(S))


def _roundtrip(checkpoint: PropagationCheckpoint) -> PropagationCheckpoint:
    buffer = io.BytesIO()
    torch.save(checkpoint.to_dict(), buffer)
    buffer.seek(0)
    return PropagationCheckpoint.from_dict(torch.load(buffer, weights_only=True))


@pytest.mark.parametrize(
    ("direction", "key", "stop_after"), [("both", 9, 17), ("both", 9, 24), ("forward", 5, 10), ("backward", 14, 7)]
)
def test_resumed_run_yields_the_uninterrupted_logits(sam, direction, key, stop_after):
    frames, gt = moving_square(26)
    prompts = {key: gt[key], 20: gt[20]} if direction == "both" else {key: gt[key]}
    prop = MaskPropagator(sam, Sam2Preprocessor(S))
    full = list(prop.propagate(frames, prompts, direction=direction, logits=True))

    saved: list[bytes] = []
    seen = []
    run = prop.propagate(
        frames,
        prompts,
        direction=direction,
        logits=True,
        checkpoint_every=4,
        on_checkpoint=lambda c: saved.append(_roundtrip(c)),
    )
    for item in run:  # "killed" after stop_after frames
        seen.append(item)
        if len(seen) == stop_after:
            break
    run.close()
    checkpoint = saved[-1]
    assert checkpoint.done == 4 * ((stop_after - 1) // 4) and len(checkpoint.outputs) <= 16  # emitted on the next read
    resumed = list(
        MaskPropagator(sam, Sam2Preprocessor(S)).propagate(
            frames, prompts, direction=direction, logits=True, resume=checkpoint
        )
    )
    stitched = seen[: checkpoint.done] + resumed
    assert [t for t, _ in stitched] == [t for t, _ in full]
    for (_, a), (_, b) in zip(stitched, full):
        assert np.array_equal(a, b)


def test_checkpoint_every_needs_a_callback(sam):
    frames, gt = moving_square(6)
    with pytest.raises(SparrowError, match="on_checkpoint"):
        MaskPropagator(sam, Sam2Preprocessor(S)).propagate(frames, {2: gt[2]}, checkpoint_every=2)
