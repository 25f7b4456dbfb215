"""`--device` and `--dtype`: resolved once in `load`, honoured by the pipeline (weights and autocast), bad values are
one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparrow.cli import main
from sparrow.errors import SparrowError
from sparrow.pipeline.segment import resolve_device, resolve_dtype


def test_bfloat16_pipeline_runs_with_half_weights():
    from sparrow.pipeline import load

    frames = np.full((4, 32, 32, 3), 40, np.uint8)
    frames[:, 8:20, 8:20] = (230, 40, 40)
    pipeline = load("tiny", device="cpu", dtype="bfloat16")
    assert {p.dtype for p in pipeline.model.parameters()} == {torch.bfloat16}
    result = pipeline.segment(frames, "the red square", mode="framewise")
    assert result.masks.shape == (4, 32, 32) and result.answer


@pytest.mark.parametrize(
    ("device", "message"), [("gpu", "must be cuda, cuda:N, mps or cpu"), ("cuda:7", "CUDA"), ("mps", "MPS")]
)
def test_bad_or_missing_device_is_a_sparrow_error(device, message):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("MPS is available here")
    with pytest.raises(SparrowError, match=message):
        resolve_device(device)


def test_dtype_names():
    assert resolve_dtype("float16") is torch.float16 and resolve_dtype(None) is torch.float32
    with pytest.raises(SparrowError, match="--dtype must be one of"):
        resolve_dtype("int8")


@pytest.mark.parametrize(
    "command",
    [
        ["segment", "x.mp4", "q", "--out", "o"],
        ["chat", "x.mp4", "-q", "hi"],
        ["demo", "--out", "o"],
        ["infer", "--data", "d", "--out", "o"],
        ["app"],
    ],
)
def test_every_model_command_takes_device_and_dtype(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--dtype", "int8"])
    assert "--dtype: invalid choice: 'int8'" in capsys.readouterr().err
