"""Two CPU processes (gloo, through accelerate) train like one process with the same global batch, in every stage
that the training chain runs: the segmenter (random point prompts, drawn per sample), the proposer and the vlm."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers_train import ToyClips, toy_config
from safetensors.torch import load_file

from sparrow.train.loop import train

STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, tests_dir: str, stage: str) -> None:
    sys.path.insert(0, tests_dir)
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # a fresh 2-process state, whatever the parent made
    config = toy_config(Path(out), stage=stage, steps=STEPS, batch_size=1)
    train(config, sources=[ToyClips()], progress=False)


def _losses(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stage", ["segmenter", "proposer", "vlm"])
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, stage):
    one = tmp_path / "one"
    ref = train(toy_config(one, stage=stage, steps=STEPS, batch_size=2), sources=[ToyClips()], progress=False)
    two = tmp_path / "two"
    # spawn, not fork: forking a pytest-xdist worker (it runs threads) deadlocked the children now and then
    # (both stuck on a futex before the rendezvous); a spawned child re-imports torch/transformers (~10 s)
    mp.start_processes(
        _worker,
        args=(2, _free_port(), str(two), str(Path(__file__).parent), stage),
        nprocs=2,
        join=True,
        start_method="spawn",
    )

    a, b = _losses(one), _losses(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for key in ra:
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), (ra["step"], key)
    assert ref.records[-1]["loss"] == pytest.approx(a[-1]["loss"], abs=1e-9)  # the log is what the run returned

    wa = load_file(str(one / "final" / "model.safetensors"))
    wb = load_file(str(two / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        if name.endswith("attn.in_proj_bias"):
            # the key part of an attention bias has a zero gradient in exact arithmetic (softmax ignores a shift),
            # so AdamW moves it by rounding noise divided by its own tiny second moment: only bounded by lr * steps
            d = wa[name].shape[0] // 3
            torch.testing.assert_close(wb[name][d : 2 * d], wa[name][d : 2 * d], rtol=0, atol=1e-3 * STEPS, msg=name)
            wa[name], wb[name] = (torch.cat([w[name][:d], w[name][2 * d :]]) for w in (wa, wb))
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-5, msg=name)
    assert b[-1]["loss"] < b[0]["loss"]  # it trained
