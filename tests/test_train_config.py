"""Training configs: the shipped presets parse; user mistakes are one-line SparrowErrors naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparrow.cli import main
from sparrow.errors import SparrowError
from sparrow.train.config import OptimizerConfig, load_train_config
from sparrow.train.loop import lr_factor

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

GOOD = """
model: {init: tiny, sam_image_size: 64}
data:
  sources: [{path: data_a, weight: 3}, data_b]
stage: {name: vlm}
steps: 5
output_dir: out
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data_a").mkdir(exist_ok=True)
    (tmp_path / "data_b").mkdir(exist_ok=True)
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    config = load_train_config(path, check_paths=False)
    assert config.stage.name in path.name
    assert Path(config.output_dir).is_absolute() and config.data.sources
    if path.name.startswith("real_"):
        assert config.mixed_precision == "bf16"
    if path.name == "real_stage_vlm.yaml":
        assert config.stage.lora is not None and config.stage.lora.r == 8 and config.stage.lora.alpha == 16


def test_good_config_resolves_paths_and_weights(tmp_path):
    config = load_train_config(_write(tmp_path, GOOD))
    assert [s.path for s in config.data.sources] == [str(tmp_path / "data_a"), str(tmp_path / "data_b")]
    assert [s.weight for s in config.data.sources] == [3.0, 1.0]
    assert config.output_dir == str(tmp_path / "out")
    assert config.optimizer.betas == [0.9, 0.95] and config.optimizer.grad_clip == 1.0
    assert config.source == str(tmp_path / "run.yaml")


@pytest.mark.parametrize(
    "edit, message",
    [
        (("steps: 5", "steps: 5\nstpes: 3"), "unknown key stpes"),
        (("stage: {name: vlm}", "stage: {name: vlm, lr: 1}"), "unknown key stage.lr"),
        (("stage: {name: vlm}", "stage: {name: vllm}"), "stage.name must be one of"),
        (("data_b]", "data_missing]"), "data.sources[1].path does not exist"),
        (("steps: 5", "steps: five"), "'steps' must be int"),
        (("steps: 5", "steps: 0"), "steps must be >= 1"),
        (("init: tiny", "init: no_such_model_dir"), "model.init is not"),
        (("output_dir: out", ""), "output_dir is required"),
        (("steps: 5", "steps: 5\noptimizer: {schedule: step}"), "optimizer.schedule must be one of"),
        (("model: {init: tiny, sam_image_size: 64}", "model: [tiny]"), "'model' must be a mapping"),
        (("weight: 3}", "weight: 3, format: ytvos}"), "data.sources[0].format 'ytvos' is unknown"),
    ],
)
def test_config_errors_are_one_line_and_name_the_file(tmp_path, edit, message):
    path = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(SparrowError) as err:
        load_train_config(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_sources_of_any_layout_and_real_backbone_folders(tmp_path):
    (tmp_path / "backbones" / "vlm").mkdir(parents=True)
    text = GOOD.replace("weight: 3}", "weight: 3, format: lasot, split: train}").replace(
        "model: {init: tiny, sam_image_size: 64}",
        "model: {init: real, config: {base_vlm: backbones/vlm, base_sam2: facebook/sam2.1-hiera-base-plus}}",
    )
    config = load_train_config(_write(tmp_path, text))
    assert (config.data.sources[0].format, config.data.sources[0].split) == ("lasot", "train")
    assert (config.data.sources[1].format, config.data.sources[1].split) == ("mevis", "")
    # a folder next to the config is resolved; a hub id (no such folder) is kept for the local cache
    assert config.model.config["base_vlm"] == str(tmp_path / "backbones" / "vlm")
    assert config.model.config["base_sam2"] == "facebook/sam2.1-hiera-base-plus"


def test_unreadable_configs(tmp_path):
    for text, message in [("", "empty training config"), ("model: {init: [", "not valid YAML")]:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(SparrowError, match=message):
            load_train_config(path)
    with pytest.raises(SparrowError, match="no such training config"):
        load_train_config(tmp_path / "absent.yaml")


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, GOOD.replace("name: vlm", "name: everything"))
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparrow train: error:") and str(path) in err and len(err.splitlines()) == 1


def test_lr_schedules():
    linear = lr_factor(OptimizerConfig(warmup_steps=2, schedule="linear"), total_steps=10)
    assert [round(linear(s), 4) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    cosine = lr_factor(OptimizerConfig(warmup_steps=0, schedule="cosine"), total_steps=4)
    assert [round(cosine(s), 4) for s in range(5)] == [1.0, 0.8536, 0.5, 0.1464, 0.0]
    assert lr_factor(OptimizerConfig(warmup_steps=0, schedule="constant"), 4)(3) == 1.0
