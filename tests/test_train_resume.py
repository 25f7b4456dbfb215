"""A run killed after a checkpoint and resumed reproduces the uninterrupted run exactly (losses and weights)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_train import ToyClips, toy_config
from safetensors.torch import load_file

from sparrow.errors import SparrowError
from sparrow.train.loop import train


class KillAt(ToyClips):
    """Raises KeyboardInterrupt (as a kill would stop the run) on the ``kill_at``-th read."""

    def __init__(self, kill_at: int) -> None:
        super().__init__()
        self.kill_at = kill_at

    def __getitem__(self, index: int):
        if len(self.reads) + 1 == self.kill_at:
            raise KeyboardInterrupt
        return super().__getitem__(index)


def _config(out):
    # segmenter stage: its point prompts draw from torch's RNG, so resume must restore the random stream too
    return toy_config(out, stage="segmenter", steps=4, batch_size=1, grad_accum=2, checkpoint_every=2)


def test_killed_and_resumed_run_matches_uninterrupted_run(tmp_path):
    full = train(_config(tmp_path / "full"), sources=[ToyClips()], progress=False)

    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):  # step 3's first micro-batch: 2 steps x 2 micro-steps were read before
        train(_config(out), sources=[KillAt(kill_at=5)], progress=False)
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 2
    assert not (out / "final").exists()
    assert not [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # nothing half-written
    with pytest.raises(SparrowError, match="--resume"):
        train(_config(out), sources=[ToyClips()], progress=False)

    source = ToyClips()
    resumed = train(_config(out), sources=[source], resume=True, progress=False)
    assert [r["step"] for r in resumed.records] == [3, 4]
    # micro-steps 4..7 = global samples 4..7 of 6-sample mixture epochs: the last two of epoch 0, the first two of 1
    assert [epoch for epoch, _ in source.reads] == [0, 0, 1, 1]
    assert resumed.records == full.records[2:]  # exact, not approximate
    logged = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert logged == full.records

    a = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    b = load_file(str(out / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    changed = [n for n in a if not torch.equal(a[n], b[n])]
    assert changed == []


def test_max_steps_stops_with_a_checkpoint_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    first = train(_config(out), sources=[ToyClips()], max_steps=1, progress=False)
    assert first.step == 1 and first.final_dir is None
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 1
    again = train(_config(out), sources=[ToyClips()], resume=True, max_steps=1, progress=False)
    assert again.records == []  # already there
    done = train(_config(out), sources=[ToyClips()], resume=True, progress=False)
    assert [r["step"] for r in done.records] == [2, 3, 4] and (out / "final" / "model.safetensors").exists()
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_00000002", "step_00000004"]  # keep 2
