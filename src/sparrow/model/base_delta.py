"""Save and load a model as the difference from a base whose weights live outside the folder (the small preset).

Tensors are named by their *canonical* name: the model's state-dict name with peft's wrappers taken out
(``vlm.model.base_model.model.`` -> ``vlm.model.``, ``.base_layer`` and ``.token_adapter`` dropped), so a LoRA-wrapped
model and its plain skeleton agree on every base weight. Saving keeps a tensor when it is not a base tensor (heads,
vision tower, SAM2, LoRA adapters, trainable token rows, ...), or when it differs from its base tensor. A tensor
whose leading rows equal a shorter base tensor (an embedding with added tokens) keeps only the extra rows; the
row offset is recorded.

Loading is strict in two phases: (1) every tensor of the plain model comes from the saved file or else the base;
(2) after the adapters are re-attached, every tensor they added comes from the saved file. A tensor found in
neither, a saved tensor that nothing used, or a shape mismatch is a :class:`~sparrow.errors.SparrowError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from sparrow.errors import SparrowError

PEFT_PREFIX = "vlm.model.base_model.model."


def canonical(name: str) -> str:
    """A state-dict name without peft's wrapper levels (identity for a plain model)."""
    if name.startswith(PEFT_PREFIX):
        name = "vlm.model." + name[len(PEFT_PREFIX) :]
    return name.replace(".base_layer.", ".").replace(".token_adapter.", ".")


def unique_state(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(canonical name, tensor)`` of the state dict, each storage once (tied weights: the first name wins)."""
    seen: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = (tensor.data_ptr() if tensor.numel() else id(tensor), tuple(tensor.shape), tuple(tensor.stride()))
        if key in seen:
            continue
        seen.add(key)
        yield canonical(name), tensor


def split_from_base(model: nn.Module, base: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The tensors to save (canonical names) and the row offsets of partially saved ones; ``base`` maps
    canonical names to base tensors."""
    saved: dict[str, torch.Tensor] = {}
    offsets: dict[str, int] = {}
    for name, tensor in unique_state(model):
        t = tensor.detach().cpu()
        b = base.get(name)
        if b is not None and t.shape == b.shape and torch.equal(t, b.to(t.dtype)):
            continue
        n = 0 if b is None else b.shape[0]
        if (
            b is not None
            and t.dim()
            and t.shape[1:] == b.shape[1:]
            and t.shape[0] > n
            and torch.equal(t[:n], b.to(t.dtype))
        ):
            saved[name] = t[n:].contiguous()
            offsets[name] = n
            continue
        saved[name] = t.contiguous()
    return saved, offsets


def _fill(
    target: torch.Tensor,
    name: str,
    saved: dict[str, torch.Tensor],
    offsets: dict[str, int],
    base: dict[str, torch.Tensor],
    where: Path,
) -> bool:
    """Copy ``name``'s value into ``target``; False when neither the file nor the base has it."""
    with torch.no_grad():
        if name in saved:
            value, n = saved[name], offsets.get(name, 0)
            if n:
                if name not in base or base[name].shape[0] != n:
                    raise SparrowError(f"{name} is saved from row {n} but the base has no such rows", where)
                value = torch.cat([base[name].to(value.dtype), value])
        elif name in base:
            value = base[name]
        else:
            return False
        if tuple(value.shape) != tuple(target.shape):
            raise SparrowError(f"{name} has shape {list(value.shape)}, the model needs {list(target.shape)}", where)
        target.copy_(value)
    return True


def fill_plain(
    model: nn.Module,
    saved: dict[str, torch.Tensor],
    offsets: dict[str, int],
    base: dict[str, torch.Tensor],
    where: Path,
) -> set[str]:
    """Phase 1: fill every tensor of the plain model; returns the names filled. Missing ones are an error."""
    filled, missing = set(), []
    for name, tensor in unique_state(model):
        (filled.add(name) if _fill(tensor, name, saved, offsets, base, where) else missing.append(name))
    if missing:
        raise SparrowError(f"weights missing from the folder and the base: {sorted(missing)[:5]}", where)
    return filled


def fill_adapters(
    model: nn.Module,
    saved: dict[str, torch.Tensor],
    offsets: dict[str, int],
    base: dict[str, torch.Tensor],
    filled: set[str],
    where: Path,
) -> None:
    """Phase 2 (after adapters are attached): fill what they added; then no saved tensor may be left unused."""
    missing = []
    for name, tensor in unique_state(model):
        if name in filled:
            continue
        if name not in saved:
            missing.append(name)
            continue
        _fill(tensor, name, saved, offsets, base, where)
        filled.add(name)
    if missing:
        raise SparrowError(f"adapter weights missing from the folder: {sorted(missing)[:5]}", where)
    unused = sorted(set(saved) - filled)
    if unused:
        raise SparrowError(f"saved weights the model does not have: {unused[:5]}", where)
