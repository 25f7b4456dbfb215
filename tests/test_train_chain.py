"""The training chain as ``make train-default`` runs it: each stage's YAML starts from the previous stage's exported
folder (``model.init: <run>/final``), through ``sparrow train``. Each stage must start from exactly those weights
and change only its own part."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from sparrow.cli import main
from sparrow.data.synthref import SynthConfig, generate_split
from sparrow.train.stages import STAGE_TRAINABLE

CONFIG = """
model: {{init: {init}{extra}}}
data:
  sources: [{{path: synth/train}}]
  num_vlm_frames: 2
  num_sam_frames: 2
stage: {{name: {stage}}}
optimizer: {{lr: 1.0e-3, warmup_steps: 1}}
steps: 2
batch_size: 2
output_dir: runs/{stage}
"""
TINY = (
    ", sam_image_size: 64, config: {vlm_frames: 2, vlm_max_frame_pixels: 3136, proposer_queries: 8, "
    "proposer_hidden: 64, proposer_layers: 1}"
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    generate_split(root / "synth", 2, seed=0, split="train", config=SynthConfig(size=64, num_frames=6), progress=False)
    previous = None
    for stage in ("segmenter", "proposer", "vlm"):
        init = "tiny" if previous is None else f"runs/{previous}/final"
        extra = TINY if previous is None else ""
        path = root / f"{stage}.yaml"
        path.write_text(CONFIG.format(init=init, extra=extra, stage=stage))
        assert main(["train", "--config", str(path), "--quiet"]) == 0, stage
        previous = stage
    return root


def _owned(name: str, stage: str) -> bool:
    """Whether a weight belongs to the part ``stage`` trains."""
    return any(name == p or name.startswith(p + ".") for p in STAGE_TRAINABLE[stage])


@pytest.mark.parametrize("previous, stage", [("segmenter", "proposer"), ("proposer", "vlm")])
def test_each_stage_starts_from_the_previous_export_and_changes_only_its_part(chain, previous, stage):
    before = load_file(str(chain / "runs" / previous / "final" / "model.safetensors"))
    after = load_file(str(chain / "runs" / stage / "final" / "model.safetensors"))
    assert before.keys() == after.keys()
    own = [n for n in after if _owned(n, stage)]
    others = [n for n in after if not _owned(n, stage)]
    assert own and others
    assert [n for n in others if not torch.equal(before[n], after[n])] == []  # loaded exactly, kept frozen
    assert any(not torch.equal(before[n], after[n]) for n in own)  # and this stage trained its part


def test_segmenter_trained_sam2_from_the_tiny_init(chain):
    seg = load_file(str(chain / "runs" / "segmenter" / "final" / "model.safetensors"))
    prop = load_file(str(chain / "runs" / "proposer" / "final" / "model.safetensors"))
    sam = [n for n in seg if "mask_decoder" in n]
    assert sam and all(torch.equal(seg[n], prop[n]) for n in sam)  # the proposer stage kept the trained SAM2


def test_a_saved_model_takes_runtime_settings_but_not_architecture_changes(chain, capsys):
    path = chain / "runtime.yaml"
    path.write_text(
        CONFIG.format(init="runs/vlm/final", extra=", config: {tsf_k: 2, max_new_tokens: 8}", stage="vlm")
        .replace("output_dir: runs/vlm", "output_dir: runs/runtime")
        .replace("steps: 2", "steps: 1")
    )
    assert main(["train", "--config", str(path), "--quiet"]) == 0
    path.write_text(CONFIG.format(init="runs/vlm/final", extra=", config: {proposer_layers: 2}", stage="vlm"))
    capsys.readouterr()
    assert main(["train", "--config", str(path), "--out", str(chain / "runs" / "arch"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot change architecture fields ['proposer_layers']" in err and str(path) in err
    assert len(err.strip().splitlines()) == 1
    path.write_text(CONFIG.format(init="runs/missing/final", extra="", stage="vlm"))
    assert main(["train", "--config", str(path), "--out", str(chain / "runs" / "missing_run"), "--quiet"]) == 2
    assert "runs/missing/final" in capsys.readouterr().err
