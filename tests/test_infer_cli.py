"""`sparrow infer` writes the layout `sparrow eval rvos` scores, resumes, and the two chain end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sparrow.cli import main
from sparrow.data.mevis import read_mevis
from sparrow.data.synthref import SynthConfig, generate_split
from sparrow.eval.metrics import region_and_boundary
from sparrow.pipeline import load


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_split(
        root,
        videos=1,
        seed=3,
        split="test",
        config=SynthConfig(size=64, num_frames=6, expressions_per_video=2),
        progress=False,
    )
    return root / "test"


def test_infer_then_eval(split, tmp_path, capsys):
    pred = tmp_path / "pred"
    base = ["infer", "--data", str(split), "--out", str(pred), "--model", "tiny", "--mode", "framewise", "--quiet"]
    assert main(base + ["--limit", "1"]) == 0
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "wrote 1 expressions (1 already done" in out
    meta = json.loads((split / "meta_expressions.json").read_text())["videos"]
    vid = next(iter(meta))
    for exp_id in meta[vid]["expressions"]:
        folder = pred / vid / exp_id
        pngs = sorted(folder.glob("*.png"))
        assert [p.stem for p in pngs] == meta[vid]["frames"]
        arr = np.asarray(Image.open(pngs[0]))
        assert arr.shape == (64, 64) and set(np.unique(arr)) <= {0, 255}
        assert "answer" in json.loads((folder / "answer.json").read_text())
    report = tmp_path / "report"
    assert (
        main(["eval", "rvos", "--pred", str(pred), "--gt", str(split), "--format", "mevis", "--report", str(report)])
        == 0
    )
    rows = {r["exp_id"]: r for r in json.loads((report / "report.json").read_text())["expressions"]}
    # values: each folder holds what the pipeline computes for that expression, and eval scores those very masks
    pipe = load("tiny", device="cpu")
    (record,) = read_mevis(split)
    for exp in record.expressions:
        folder = pred / record.video_id / exp.exp_id
        written = np.stack([np.asarray(Image.open(folder / f"{n}.png")) > 0 for n in record.frames])
        result = pipe.segment(record.load_frames(), exp.text, mode="framewise")
        assert np.array_equal(written, result.masks), exp.exp_id
        assert written.any() and not written.all()  # real masks, not a blank or a full frame
        j, f = region_and_boundary(written, record.target_masks(exp))
        assert rows[exp.exp_id]["J"] == pytest.approx(float(j.mean()), abs=1e-12)
        assert rows[exp.exp_id]["F"] == pytest.approx(float(f.mean()), abs=1e-12)
        info = json.loads((folder / "answer.json").read_text())
        assert info["answer"] == result.answer and info["key_frames"] == [t.key_frame for t in result.targets]


@pytest.mark.parametrize("tsf", ["off", "self", "boxes"])
def test_infer_tsf_at_inference_sources(split, tmp_path, tsf):
    pred = tmp_path / "pred"
    args = [
        "infer",
        "--data",
        str(split),
        "--out",
        str(pred),
        "--model",
        "tiny",
        "--mode",
        "perframe",
        "--quiet",
        "--limit",
        "1",
    ]
    assert main(args + ["--tsf", tsf]) == 0
    (answer,) = pred.glob("*/*/answer.json")
    info = json.loads(answer.read_text())
    assert info["tsf"] == (None if tsf == "off" else tsf) and info["mode"] == "perframe"
