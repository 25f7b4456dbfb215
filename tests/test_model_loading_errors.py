"""Loading a model folder (sparrow.model.loading.from_pretrained): every broken folder is a one-line SparrowError
naming the path, and an intact copy loads to the same weights. The bundled default model is the template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sparrow.errors import SparrowError
from sparrow.model.loading import BUNDLED_DIR, WEIGHTS_NAME, from_pretrained


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(BUNDLED_DIR, out)
    return out


def _error(path: Path) -> str:
    with pytest.raises(SparrowError) as err:
        from_pretrained(path)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_an_intact_copy_loads_every_weight(folder: Path) -> None:
    model = from_pretrained(folder)
    saved = load_file(str(folder / WEIGHTS_NAME))
    state = model.state_dict()
    assert set(saved) <= set(state)
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert not model.training


def _edit_config(folder: Path, **changes) -> None:
    data = json.loads((folder / "config.json").read_text())
    data.update(changes)
    (folder / "config.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: shutil.rmtree(f), "no such model folder"),
        (lambda f: (f / WEIGHTS_NAME).unlink(), f"model folder has no weights ({WEIGHTS_NAME})"),
        (lambda f: (f / "vlm" / "config.json").unlink(), "model folder lacks vlm/config.json"),
        (lambda f: (f / "sam2" / "config.json").unlink(), "model folder lacks sam2/config.json"),
        (lambda f: (f / "config.json").unlink(), "missing model config"),
        (lambda f: (f / "config.json").write_text("{"), "not valid JSON"),
        # weights vs config: an extra decoder layer (weights missing), another width (shapes differ)
        (
            lambda f: _edit_config(f, proposer_layers=3),
            "weights do not match the config: missing ['proposer.box_heads.2.",
        ),
        (lambda f: _edit_config(f, proposer_hidden=64), "cannot load weights"),
        (
            lambda f: _edit_config(f, selector_appearance=False),
            "weights do not match the config: missing [], unexpected",
        ),
        (lambda f: (f / WEIGHTS_NAME).write_bytes((f / WEIGHTS_NAME).read_bytes()[:4096]), "cannot load weights"),
    ],
    ids=[
        "no-folder",
        "no-weights",
        "no-vlm-config",
        "no-sam2-config",
        "no-config",
        "bad-json",
        "missing-weights",
        "shape-mismatch",
        "unexpected-weights",
        "truncated",
    ],
)
def test_broken_model_folders(folder: Path, damage, message: str) -> None:
    damage(folder)
    got = _error(folder)
    assert message in got and str(folder) in got


def test_sam2_config_that_disagrees_with_the_weights(folder: Path) -> None:
    sam = json.loads((folder / "sam2" / "config.json").read_text())
    sam["mask_decoder_config"]["num_hidden_layers"] += 1  # one more two-way transformer layer than was saved
    (folder / "sam2" / "config.json").write_text(json.dumps(sam))
    message = _error(folder)
    assert "weights do not match the config: missing [" in message and "mask_decoder.transformer.layers.2." in message
