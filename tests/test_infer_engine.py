"""``sparrow infer --format F --split S --engine local|ray``: any reader's split, per-item failures, resume, and the
same predictions from a local Ray instance (2 workers) as from the local engine."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import reader_fixtures as fx
from PIL import Image

from sparrow.cli import main
from sparrow.engine import EngineOptions
from sparrow.pipeline.infer import FAILURES, InferJob, infer_split

BASE = ["--model", "tiny", "--mode", "framewise", "--quiet"]


@pytest.fixture
def refytvos(tmp_path) -> Path:
    return fx.refvos(tmp_path / "ref-youtube-vos")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_infer_reads_a_split_of_another_layout(refytvos, tmp_path, capsys):
    out = tmp_path / "pred"
    args = ["infer", "--data", str(refytvos), "--format", "refytvos", "--split", "train", "--out", str(out), *BASE]
    assert main(args) == 0
    assert "wrote 4 expressions (0 already done" in capsys.readouterr().out
    names = ["00000", "00005", "00010", "00015"]
    for vid in ("vid_a", "vid_b"):
        for exp in ("0", "1"):
            folder = out / vid / exp
            assert sorted(p.stem for p in folder.glob("*.png")) == names
            png = np.asarray(Image.open(folder / "00005.png"))
            assert png.shape == (24, 32) and set(np.unique(png)) <= {0, 255}
            assert json.loads((folder / "answer.json").read_text())["mode"] == "framewise"
    assert not (out / FAILURES).exists()


def test_infer_records_failures_per_item_and_resumes(refytvos, tmp_path, capsys):
    frame = refytvos / "train" / "JPEGImages" / "vid_b" / "00010.jpg"
    good = frame.read_bytes()
    frame.write_bytes(b"not a jpeg")
    out = tmp_path / "pred"
    args = [
        "infer",
        "--data",
        str(refytvos),
        "--format",
        "refytvos",
        "--split",
        "train",
        "--out",
        str(out),
        "--retries",
        "1",
        *BASE,
    ]
    assert main(args) == 1  # the broken video fails, the other one is written
    printed = capsys.readouterr().out
    assert re.search(r"wrote 2 expressions \(0 already done, \d without a generated \[SEG\], 2 failed\)", printed)
    lines = [json.loads(x) for x in (out / FAILURES).read_text().splitlines()]
    assert [(x["video"], x["exp_id"]) for x in lines] == [("vid_b", "0"), ("vid_b", "1")]
    assert all(str(frame) in x["reason"] for x in lines), lines[0]["reason"]
    assert sorted(str(p.parent.relative_to(out)) for p in out.glob("*/*/answer.json")) == ["vid_a/0", "vid_a/1"]
    assert not (out / "vid_b").exists() and not list(out.rglob(".*"))  # nothing half-written

    frame.write_bytes(good)
    before = {k: v for k, v in _files(out).items() if k.startswith("vid_a")}
    assert main(args) == 0  # resumes: only the failed expressions run
    assert re.search(
        r"wrote 2 expressions \(2 already done, \d without a generated \[SEG\], 0 failed\)", capsys.readouterr().out
    )
    assert {k: v for k, v in _files(out).items() if k.startswith("vid_a")} == before
    assert len(list(out.glob("*/*/answer.json"))) == 4 and not (out / FAILURES).exists()


def test_infer_rejects_bad_options(refytvos, tmp_path, capsys):
    out = str(tmp_path / "pred")
    cases = [
        (["--format", "ytvos"], "unknown dataset format 'ytvos'"),
        (["--format", "refytvos"], "choose a split with --split (found train, valid)"),
        (["--format", "refytvos", "--split", "train", "--model", str(tmp_path)], "not a model folder"),
    ]
    for extra, message in cases:
        assert main(["infer", "--data", str(refytvos), "--out", out, *BASE, *extra]) != 0
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "pred").exists()


def test_local_and_ray_write_the_same_predictions(refytvos, tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'sparrow-video[ray]')")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    job = InferJob(
        data=str(refytvos),
        format="refytvos",
        split="train",
        model="tiny",
        mode="framewise",
        out=str(tmp_path / "local"),
    )
    local = infer_split(job, progress=False)
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    try:
        # one (pretend) GPU, half of it per item: Ray's default for GPU tasks would start a process per item
        ray_init = {"object_store_memory": 100 * 2**20, "_temp_dir": ray_tmp, "num_gpus": 1}
        options = EngineOptions(engine="ray", workers=2, gpus_per_item=0.5, ray_init=ray_init)
        remote = infer_split(InferJob(**{**job.__dict__, "out": str(tmp_path / "ray")}), options, progress=False)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert (local.written, remote.written, remote.failed) == (4, 4, 0)
    assert len(local.worker_pids) == 1 and 1 <= len(remote.worker_pids) <= 2  # each worker kept its model loaded
    a, b = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert a.keys() == b.keys() and len(a) == 4 * 5
    assert [k for k in a if a[k] != b[k]] == []
