"""``sparrow train`` end to end on a tiny SynthRef split: weighted sources, --max-steps, --resume, export."""

from __future__ import annotations

import json

import pytest

from sparrow.cli import main
from sparrow.data.synthref import SynthConfig, generate_split

CONFIG = """
model: {{init: tiny, sam_image_size: 64, config: {{vlm_frames: 2, vlm_max_frame_pixels: 3136, proposer_queries: 8, proposer_hidden: 64, proposer_layers: 1}}}}
data:
  sources: [{{path: synth/train, weight: 2}}, {{path: synth/valid, weight: 1}}]
  num_vlm_frames: 2
  num_sam_frames: 2
stage: {{name: {stage}}}
optimizer: {{lr: 1.0e-3, warmup_steps: 1}}
steps: 2
batch_size: 2
output_dir: run
"""


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = SynthConfig(size=64, num_frames=6, expressions_per_video=2)
    generate_split(root / "synth", 2, seed=0, split="train", config=config, progress=False)
    generate_split(root / "synth", 1, seed=0, split="valid", config=config, progress=False)
    return root


def test_cli_trains_stops_resumes_and_exports(synth, capsys):
    path = synth / "vlm.yaml"
    path.write_text(CONFIG.format(stage="vlm"))
    assert main(["train", "--config", str(path), "--max-steps", "1", "--quiet"]) == 0
    assert "step 1/2" in capsys.readouterr().out
    run = synth / "run"
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 1
    assert main(["train", "--config", str(path), "--quiet"]) == 2  # existing checkpoints need --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--config", str(path), "--resume", "--quiet"]) == 0
    assert (run / "final" / "model.safetensors").exists() and list((run / "tensorboard").iterdir())
    steps = [json.loads(line)["step"] for line in (run / "losses.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_cli_frame_count_mismatch_is_an_error(synth, capsys):
    path = synth / "bad.yaml"
    path.write_text(CONFIG.format(stage="proposer").replace("num_vlm_frames: 2", "num_vlm_frames: 3"))
    assert main(["train", "--config", str(path), "--out", str(synth / "bad_run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "num_vlm_frames (3)" in err and str(path) in err


def test_cli_trains_with_tsf_crops_from_a_cache(synth, capsys):
    assert (
        main(
            [
                "tsf",
                "build",
                "--data",
                str(synth / "synth" / "train"),
                "--format",
                "mevis",
                "--out",
                str(synth / "tsf"),
                "--no-progress",
            ]
        )
        == 0
    )
    config = (
        CONFIG.format(stage="vlm")
        .replace("proposer_layers: 1}}", "proposer_layers: 1, tsf: train}}")
        .replace("{path: synth/train, weight: 2}", "{path: synth/train, weight: 2, tsf_cache: tsf}")
        .replace("num_sam_frames: 2", "num_sam_frames: 2\n  with_tsf: true")
    )
    path = synth / "tsf.yaml"
    path.write_text(config)
    assert main(["train", "--config", str(path), "--out", str(synth / "tsf_run"), "--quiet"]) == 0
    assert (synth / "tsf_run" / "final" / "model.safetensors").exists()
    capsys.readouterr()
    path.write_text(config.replace(", tsf: train", ""))  # TSF data for a model whose TSF is off: refused
    assert main(["train", "--config", str(path), "--out", str(synth / "tsf_run2"), "--quiet"]) == 2
    assert "model.config.tsf" in capsys.readouterr().err
