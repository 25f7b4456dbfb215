"""Checkpoints under a real kill (SIGKILL in the middle of a write) and every way a checkpoint can be unusable."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers_train import ToyClips, toy_config
from safetensors.torch import load_file

from sparrow.errors import SparrowError
from sparrow.train import checkpoint
from sparrow.train.loop import train


def _config(out: Path, **kwargs):
    # segmenter: its point prompts are random, so an exact resume also shows that the draws are restored
    return toy_config(out, stage="segmenter", steps=3, batch_size=1, checkpoint_every=2, **kwargs)


def _killed_run(out: str, tests_dir: str, where: str) -> None:
    """Train, and SIGKILL this process while step 3's checkpoint is written (``where``: in the optimiser file of
    the step folder, or in ``latest.json`` after the folder is complete)."""
    sys.path.insert(0, tests_dir)
    torch.set_num_threads(1)
    real_save, real_dump = checkpoint.save_file, checkpoint.json.dump

    def save_file(tensors, filename, *args, **kwargs):
        if where == "folder" and ".step_00000003." in filename and filename.endswith("optimizer.safetensors"):
            Path(filename).write_bytes(b"half a file")
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(tensors, filename, *args, **kwargs)

    def dump(obj, handle, *args, **kwargs):
        if where == "pointer" and obj.get("step") == 3:
            handle.write('{"step": 3, "pa')
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_dump(obj, handle, *args, **kwargs)

    checkpoint.save_file, checkpoint.json.dump = save_file, dump
    train(_config(Path(out)), sources=[ToyClips()], progress=False)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    torch.set_num_threads(1)  # as the killed child: another thread count may change the weights' last bits
    result = train(_config(out), sources=[ToyClips()], progress=False)
    return result, load_file(str(out / "final" / "model.safetensors"))


@pytest.mark.parametrize("where", ["folder", "pointer"])
def test_sigkill_during_a_checkpoint_write_then_resume(tmp_path, uninterrupted, where):
    full, full_weights = uninterrupted
    out = tmp_path / "run"
    # spawn, not fork: a forked child of a pytest-xdist worker (it runs threads) can deadlock before it starts
    ctx = mp.get_context("spawn")
    child = ctx.Process(target=_killed_run, args=(str(out), str(Path(__file__).parent), where))
    child.start()
    child.join(240)
    assert child.exitcode == -signal.SIGKILL
    ckpts = out / "checkpoints"
    assert json.loads((ckpts / "latest.json").read_text()) == {"step": 2, "path": "step_00000002"}
    leftovers = sorted(p.name for p in ckpts.iterdir() if p.name.startswith("."))
    assert leftovers and all(name.endswith(".tmp") for name in leftovers)  # what the kill left behind
    if where == "folder":
        assert not (ckpts / "step_00000003").exists()
    else:
        assert (ckpts / "step_00000003" / "state.json").exists()  # complete, but not yet named by latest.json
    assert not (out / "final").exists()

    torch.set_num_threads(1)
    resumed = train(_config(out), sources=[ToyClips()], resume=True, progress=False)
    assert [r["step"] for r in resumed.records] == [3]
    assert resumed.records == full.records[2:]  # exact
    weights = load_file(str(out / "final" / "model.safetensors"))
    assert weights.keys() == full_weights.keys()
    assert [n for n in weights if not torch.equal(weights[n], full_weights[n])] == []
    assert json.loads((ckpts / "latest.json").read_text())["step"] == 3
    assert not [p.name for p in ckpts.iterdir() if p.name.startswith(".")]  # the next save cleared the leftovers


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A run stopped after step 2 with its checkpoint: the template every broken copy starts from."""
    out = tmp_path_factory.mktemp("saved") / "run"
    train(_config(out), sources=[ToyClips()], max_steps=2, progress=False)
    return out


def _broken_copy(saved: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    return out


def _resume_error(out: Path, **kwargs) -> str:
    with pytest.raises(SparrowError) as err:
        train(_config(out, **kwargs), sources=[ToyClips()], resume=True, progress=False)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_resume_in_another_stage_is_refused(saved, tmp_path):
    out = _broken_copy(saved, tmp_path)
    config = toy_config(out, stage="proposer", steps=3, batch_size=1, checkpoint_every=2)
    with pytest.raises(SparrowError, match="different stage") as err:
        train(config, sources=[ToyClips()], resume=True, progress=False)
    assert "step_00000002" in str(err.value)


def test_resume_with_other_frozen_weights_is_refused(saved, tmp_path):
    out = _broken_copy(saved, tmp_path)
    config = _config(out)
    config.model.seed = 1  # another tiny init: the frozen VLM and proposer weights differ
    with pytest.raises(SparrowError, match="frozen weights differ"):
        train(config, sources=[ToyClips()], resume=True, progress=False)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda c: (c / "step_00000002" / "trainable.safetensors").write_bytes(b"\x10\x00"),
            "corrupt checkpoint tensors",
        ),
        (lambda c: (c / "step_00000002" / "optimizer.safetensors").unlink(), "cannot read checkpoint"),
        (lambda c: (c / "step_00000002" / "state.json").write_text('{"step": 2,'), "cannot read checkpoint"),
        (lambda c: (c / "latest.json").write_text("{not json"), "corrupt checkpoint pointer"),
        (lambda c: (c / "latest.json").write_text('{"step": 2}'), "corrupt checkpoint pointer"),
        (lambda c: shutil.rmtree(c / "step_00000002"), "names a missing checkpoint step_00000002"),
    ],
    ids=["tensors", "optimizer-missing", "state", "pointer-json", "pointer-key", "folder-missing"],
)
def test_corrupt_checkpoints_are_one_line_errors(saved, tmp_path, damage, message):
    out = _broken_copy(saved, tmp_path)
    damage(out / "checkpoints")
    assert message in _resume_error(out)
