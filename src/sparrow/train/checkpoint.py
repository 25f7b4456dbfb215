"""Training checkpoints: safetensors for tensors, JSON for everything else; written atomically; no pickle.

Folder ``<output_dir>/checkpoints/step_<NNNNNNNN>/``::

    trainable.safetensors   the trainable parameters (frozen ones are rebuilt exactly by the model init)
    optimizer.safetensors   AdamW state tensors, keyed ``<param index>.<name>``
    state.json              step, micro-step, optimiser param groups, scheduler state, config, frozen-weights hash

``<output_dir>/checkpoints/latest.json`` names the newest complete checkpoint; it is replaced only after the
folder is complete, so a kill at any moment leaves the previous checkpoint usable (the temporaries such a kill
leaves behind carry the dead process's id and are swept by the next save, see ``sparrow.atomic``). RNG state
needs no saving: the loop reseeds torch from ``(seed, step, process)`` before every step and the data stream is a
function of ``(seed, micro-step)``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sparrow.atomic import atomic_dir, atomic_file
from sparrow.errors import SparrowError

LATEST = "latest.json"


@dataclass
class Resumed:
    step: int
    micro_step: int
    path: Path


def params_hash(model: nn.Module, names: list[str]) -> str:
    """SHA-256 over the named parameters' bytes (in the given order)."""
    params = dict(model.named_parameters())
    digest = hashlib.sha256()
    for name in names:
        t = params[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(memoryview(t.view(torch.uint8).numpy()) if t.numel() else b"")  # no copy of the bytes
    return digest.hexdigest()


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors = {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def save_checkpoint(
    directory: Path,
    step: int,
    micro_step: int,
    model: nn.Module,
    trainable: list[str],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    frozen_hash: str,
    config: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``step_<step>`` atomically, then point ``latest.json`` at it and prune older checkpoints."""
    directory = Path(directory)
    final = directory / f"step_{step:08d}"
    params = dict(model.named_parameters())
    opt_tensors, groups = _optimizer_tensors(optimizer)
    with atomic_dir(final) as tmp:
        save_file({n: params[n].detach().cpu().contiguous() for n in trainable}, str(tmp / "trainable.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        state = {
            "step": step,
            "micro_step": micro_step,
            "param_groups": groups,
            "scheduler": scheduler.state_dict(),
            "frozen_hash": frozen_hash,
            "trainable": trainable,
            "config": config,
        }
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
    with atomic_file(directory / LATEST) as f:
        json.dump({"step": step, "path": final.name}, f)
    old = sorted(p for p in directory.glob("step_*") if p.is_dir() and p.name != final.name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint folder, or None when there is none."""
    pointer = Path(directory) / LATEST
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["path"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SparrowError(f"corrupt checkpoint pointer ({exc})", pointer) from exc
    path = Path(directory) / name
    if not (path / "state.json").exists():
        raise SparrowError(f"checkpoint pointer names a missing checkpoint {name}", pointer)
    return path


def load_checkpoint(
    path: Path,
    model: nn.Module,
    trainable: list[str],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    frozen_hash: str,
) -> Resumed:
    """Restore trainable weights, optimiser and scheduler in place; the stage and frozen weights must match."""
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
        weights = load_file(str(path / "trainable.safetensors"))
        opt_tensors = load_file(str(path / "optimizer.safetensors"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SparrowError(f"cannot read checkpoint ({exc})", path) from exc
    except Exception as exc:  # safetensors raises its own error type on a corrupt file
        raise SparrowError(f"corrupt checkpoint tensors ({str(exc).splitlines()[0]})", path) from exc
    if state["trainable"] != trainable:
        raise SparrowError("checkpoint was written by a different stage (trainable parameters differ)", path)
    if state["frozen_hash"] != frozen_hash:
        raise SparrowError("frozen weights differ from the checkpoint's (was model.init changed?)", path)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in trainable:
            params[name].copy_(weights[name])
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in opt_tensors.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    return Resumed(step=int(state["step"]), micro_step=int(state["micro_step"]), path=path)
