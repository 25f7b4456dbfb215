"""scripts/compare_weights.py: per-component comparison of two saved model folders (the reproduction check)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("compare_weights", ROOT / "scripts" / "compare_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folder(path: Path, tensors: dict[str, torch.Tensor], config: str = "{}") -> Path:
    path.mkdir()
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text(config)
    return path


def test_identical_folders_exit_zero_and_a_changed_tensor_is_reported(tmp_path, capsys):
    script = _script()
    tensors = {
        "proposer.layers.0.weight": torch.arange(6.0).reshape(2, 3),
        "proposer.layers.0.bias": torch.zeros(2),
        "vlm.model.lora_A": torch.ones(4),
    }
    a = _folder(tmp_path / "a", tensors)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert script.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "| proposer.layers | 2 | 0 | 0 | 0 |" in out and "bit-identical: 3 tensors" in out
    assert "config.json: equal" in out

    changed = dict(load_file(b / "model.safetensors"))
    changed["proposer.layers.0.weight"][1, 2] += 0.25  # one element of one tensor
    save_file(changed, str(b / "model.safetensors"))
    (b / "config.json").write_text('{"x": 1}')
    assert script.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "| proposer.layers | 2 | 1 | 0 | 0.25 |" in out and "| vlm.model | 1 | 0 | 0 | 0 |" in out
    assert "config.json: differ" in out and out.rstrip().endswith("different: 3 tensors")


def test_missing_tensors_files_and_bad_folders(tmp_path, capsys):
    script = _script()
    a = _folder(tmp_path / "a", {"selector.w_q.weight": torch.ones(2), "selector.w_k.weight": torch.ones(2)})
    b = _folder(tmp_path / "b", {"selector.w_q.weight": torch.ones(2)})
    (a / "vlm").mkdir()
    (a / "vlm" / "base.json").write_text("{}")
    assert script.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "| selector.w_k | 1 | 0 | 1 | 0 |" in out and "vlm/base.json: only in A" in out
    assert script.main([str(a), str(tmp_path / "nothing")]) == 2
    assert "no model.safetensors here" in capsys.readouterr().err
    (b / "model.safetensors").write_bytes(b"garbage")
    assert script.main([str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "not a readable safetensors file" in err and len(err.strip().splitlines()) == 1
