"""Loading a model folder (sparrow.model.loading.from_pretrained): every broken folder is a one-line SparrowError
naming the path, and an intact copy loads to the same weights. Two templates: a saved tiny model (every weight in
the folder) and the bundled default model (the small preset: saved as the difference from SmolLM2's base weights,
``model/base_delta.py``), whose loader reports its own mismatches."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sparrow.errors import SparrowError
from sparrow.model.base_delta import canonical
from sparrow.model.loading import BUNDLED_DIR, WEIGHTS_NAME, build_tiny, from_pretrained, save_pretrained, tiny_config


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    config = dataclasses.replace(tiny_config(), identity_prompts=4)
    return save_pretrained(build_tiny(seed=0, config=config, sam_image_size=64), tmp_path_factory.mktemp("tiny") / "m")


@pytest.fixture(params=["tiny", "bundled"])
def folder(request, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(request.getfixturevalue("tiny_folder") if request.param == "tiny" else BUNDLED_DIR, out)
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
    state = {canonical(k): v for k, v in model.state_dict().items()}
    base = folder / "vlm" / "base.json"  # a model on a base keeps only the added rows of a grown embedding
    offsets = json.loads(base.read_text())["row_offsets"] if base.exists() else {}
    assert set(saved) <= set(state)
    assert all(torch.equal(state[k][offsets.get(k, 0) :], v) for k, v in saved.items())
    assert not model.training


def _edit_config(folder: Path, **changes) -> None:
    data = json.loads((folder / "config.json").read_text())
    data.update(changes)
    (folder / "config.json").write_text(json.dumps(data))


def _is_bundled(folder: Path) -> bool:
    return (folder / "vlm" / "base.json").exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: shutil.rmtree(f), "no such model folder"),
        (lambda f: (f / WEIGHTS_NAME).unlink(), f"model folder has no weights ({WEIGHTS_NAME})"),
        (lambda f: (f / "vlm" / "config.json").unlink(), "model folder lacks vlm/config.json"),
        (lambda f: (f / "sam2" / "config.json").unlink(), "model folder lacks sam2/config.json"),
        (lambda f: (f / "config.json").unlink(), "missing model config"),
        (lambda f: (f / "config.json").write_text("{"), "not valid JSON"),
        # weights vs config: an extra decoder layer (weights missing), another width (shapes differ), no identity
        # prompts (a saved tensor left over); (tiny message, bundled message)
        (
            lambda f: _edit_config(f, proposer_layers=3),
            (
                "weights do not match the config: missing ['proposer.box_heads.2.",
                "weights missing from the folder and the base: ['proposer.box_heads.2.",
            ),
        ),
        (
            lambda f: _edit_config(f, proposer_hidden=64),
            ("cannot load weights", "has shape [128, 128, 1, 1], the model needs [64, 128, 1, 1]"),
        ),
        (
            lambda f: _edit_config(f, identity_prompts=0),
            (
                "weights do not match the config: missing [], unexpected ['identity_prompts.weight']",
                "saved weights the model does not have: ['identity_prompts.weight']",
            ),
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
def test_broken_model_folders(folder: Path, damage, message: str | tuple[str, str]) -> None:
    if isinstance(message, tuple):
        message = message[_is_bundled(folder)]
    damage(folder)
    got = _error(folder)
    assert message in got and str(folder) in got


def test_sam2_config_that_disagrees_with_the_weights(folder: Path) -> None:
    sam = json.loads((folder / "sam2" / "config.json").read_text())
    sam["mask_decoder_config"]["num_hidden_layers"] += 1  # one more two-way transformer layer than was saved
    (folder / "sam2" / "config.json").write_text(json.dumps(sam))
    message = _error(folder)
    missing = (
        "weights missing from the folder and the base: ["
        if _is_bundled(folder)
        else "weights do not match the config: missing ["
    )
    assert missing in message and "mask_decoder.transformer.layers.2." in message
