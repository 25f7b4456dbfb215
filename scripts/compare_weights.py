"""Compare two saved SPARROW model folders tensor by tensor: did a rerun reproduce the weights?

    python scripts/compare_weights.py src/sparrow/assets/default runs/default/selector/final

Reads each folder's ``model.safetensors`` (and nothing else that could run code) and prints, per component (the
first two parts of a tensor's name: ``pixel_decoder.sam``, ``proposer.layers``, ``vlm.model``, ...), how many
tensors there are, how many differ and the largest absolute difference, then whether the two folders' other files
(configs, tokenizer, adapter) are byte-identical. Exit status 0 when every tensor is bit-identical, 1 when any
differs or is missing from one side, 2 on bad input.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from sparrow.errors import SparrowError


def component(name: str) -> str:
    """``"pixel_decoder.sam.mask_decoder.x"`` -> ``"pixel_decoder.sam"``."""
    return ".".join(name.split(".")[:2])


def compare_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per component: ``tensors`` (in either), ``differ`` (present in both, not bit-identical), ``missing`` (in one
    only) and ``max_abs`` (the largest absolute difference over the differing tensors of equal shape)."""
    rows: dict[str, dict[str, float]] = {}
    for name in sorted(set(a) | set(b)):
        row = rows.setdefault(component(name), {"tensors": 0, "differ": 0, "missing": 0, "max_abs": 0.0})
        row["tensors"] += 1
        if name not in a or name not in b:
            row["missing"] += 1
        elif a[name].dtype != b[name].dtype or a[name].shape != b[name].shape:
            row["differ"] += 1
            row["max_abs"] = float("inf")
        elif not torch.equal(a[name], b[name]):
            row["differ"] += 1
            gap = float((a[name].double() - b[name].double()).abs().max())
            row["max_abs"] = max(row["max_abs"], gap)
    return rows


def other_files(a: Path, b: Path) -> list[tuple[str, str]]:
    """``(relative path, "equal" | "differ" | "only in A" | "only in B")`` for every file but the weights."""
    names = {p.relative_to(root) for root in (a, b) for p in root.rglob("*") if p.is_file()}
    out = []
    for rel in sorted(n for n in names if n.name != "model.safetensors"):
        if not (a / rel).is_file():
            out.append((str(rel), "only in B"))
        elif not (b / rel).is_file():
            out.append((str(rel), "only in A"))
        else:
            out.append((str(rel), "equal" if filecmp.cmp(a / rel, b / rel, shallow=False) else "differ"))
    return out


def weights(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / "model.safetensors"
    if not path.is_file():
        raise SparrowError("no model.safetensors here (not a saved SPARROW model folder)", folder)
    try:
        return load_file(path)
    except SafetensorError as exc:
        raise SparrowError(f"not a readable safetensors file ({exc})", path) from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="a saved model folder")
    parser.add_argument("b", type=Path, help="another saved model folder")
    args = parser.parse_args(argv)
    try:
        rows = compare_tensors(weights(args.a), weights(args.b))
    except SparrowError as exc:
        print(f"compare_weights: {exc}", file=sys.stderr)
        return 2
    print("| component | tensors | differ | missing | max abs difference |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['tensors']} | {row['differ']} | {row['missing']} | {row['max_abs']:.3g} |")
    for rel, state in other_files(args.a, args.b):
        print(f"{rel}: {state}")
    same = all(r["differ"] == 0 and r["missing"] == 0 for r in rows.values())
    total = sum(r["tensors"] for r in rows.values())
    print(f"{'bit-identical' if same else 'different'}: {total} tensors")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
