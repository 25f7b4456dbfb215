"""Imports run one way: data -> model -> pipeline -> cli/app (docs/architecture.md, "Layers").

Every ``sparrow`` import of every module under ``src/sparrow`` is read with ``ast`` (module level, function level
and ``TYPE_CHECKING`` blocks alike) and must point to the module's own package or a lower layer. The module graph
must have no cycle, and no module may exceed 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "src" / "sparrow"

# Layer of each top-level part of the package; a module may import its own part or a strictly lower layer.
LAYERS = {
    # layer 0, the base, in three steps (a step imports only lower steps):
    "errors": -2,
    "threads": -2,
    "version": -2,  # one-line user errors; CPU thread policy; the version string
    "atomic": -1,
    "checks": -1,  # atomic writes; argument checks that run before a model loads
    "output": 0,  # where a command may write (uses atomic)
    "engine": 1,  # run a function over many items, locally or on Ray
    "data": 1,
    "eval": 2,
    "tsf": 2,  # eval scores files; tsf builds target tracks: neither uses the model
    "model": 3,
    "pipeline": 4,
    "train": 4,  # the users of the model: inference on videos, and training
    "diagnostics": 4,  # probes of what a trained model has learned (benchmarks/probe_grounding.py)
    "app": 5,
    "__init__": 5,
    "cli": 6,  # registers every part's commands, the app's included
    "__main__": 7,  # `python -m sparrow` runs the CLI
}
MAX_LINES = 500


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def part_of(module: str) -> str:
    """``sparrow.model.loading`` -> ``model``; ``sparrow`` itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def sparrow_imports(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import of a ``sparrow`` module in ``source``, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "sparrow"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "sparrow":
                continue
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return found


def collect(root: Path = ROOT) -> dict[str, tuple[Path, list[tuple[int, str]]]]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        modules[name] = (path, sparrow_imports(path.read_text(), name, path.name == "__init__.py"))
    return modules


def upward_imports(modules: dict[str, tuple[Path, list[tuple[int, str]]]], root: Path = ROOT) -> list[str]:
    """One line per import that points to another part of the same or a higher layer."""
    bad = []
    for name, (path, imports) in modules.items():
        src = part_of(name)
        seen = set()
        for line, target in imports:
            if target not in modules:  # `from sparrow.x import name`: the name, not a module
                continue
            dst = part_of(target)
            if dst == src or (name == "sparrow" and dst in LAYERS):
                continue
            if dst not in LAYERS or src not in LAYERS:
                bad.append(f"{path.name}:{line}: part {src!r} or {dst!r} has no layer in LAYERS")
            elif LAYERS[dst] >= LAYERS[src] and line not in seen:
                seen.add(line)
                bad.append(
                    f"{path.relative_to(root.parent)}:{line}: {src} (layer {LAYERS[src]}) imports {target} "
                    f"({dst}, layer {LAYERS[dst]})"
                )
    return bad


def import_cycles(modules: dict[str, tuple[Path, list[tuple[int, str]]]]) -> list[list[str]]:
    """Cycles among modules (each import of a module, wherever it stands, is an edge)."""
    graph = {m: sorted({t for _, t in imps if t in modules and t != m}) for m, (_, imps) in modules.items()}
    graph["sparrow"] = []  # the package root only re-exports lazily on call
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_every_import_points_down() -> None:
    bad = upward_imports(collect())
    assert not bad, "imports that run up:\n" + "\n".join(bad)


def test_no_import_cycle() -> None:
    cycles = import_cycles(collect())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_over_500_lines() -> None:
    long = [
        f"{p.relative_to(ROOT)}: {n}" for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, long


@pytest.mark.parametrize(
    ("where", "line", "expect"),
    [
        ("data/video_io.py", "from sparrow.model.config import MODES", "data (layer 1) imports sparrow.model.config"),
        ("eval/rvos.py", "    from sparrow.pipeline.segment import load", "eval (layer 2) imports sparrow.pipeline"),
        ("model/heads.py", "from sparrow.tsf.crops import crop_box", ""),  # tsf is below model: allowed
        ("model/heads.py", "from sparrow.pipeline import results", "model (layer 3) imports sparrow.pipeline"),
        ("tsf/crops.py", "from sparrow.eval import metrics", "tsf (layer 2) imports sparrow.eval"),
    ],
)
def test_the_checker_catches_an_upward_import(tmp_path: Path, where: str, line: str, expect: str) -> None:
    """Copy the package, add one import, and check that exactly that import is reported (or none when allowed)."""
    copy = tmp_path / "sparrow"
    for path in ROOT.rglob("*.py"):
        dst = copy / path.relative_to(ROOT)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(path.read_text())
    target = copy / where
    target.write_text(target.read_text() + f"\n\ndef _planted():\n{line if line.startswith(' ') else '    ' + line}\n")
    bad = upward_imports(collect(copy), copy)
    if expect:
        assert len(bad) == 1 and expect in bad[0], bad
    else:
        assert bad == [], bad


def test_the_cycle_finder_finds_a_cycle() -> None:
    modules = {
        "a": (Path("a.py"), [(1, "b")]),
        "b": (Path("b.py"), [(1, "c")]),
        "c": (Path("c.py"), [(3, "a")]),
        "sparrow": (Path("__init__.py"), []),
    }
    assert import_cycles(modules) == [["a", "b", "c", "a"]]
