"""Mutation score of four core modules: mutmut mutates one module at a time and runs only that module's tests.

Command (from the repository root; a benchmark, not a CI gate: about 3 to 20 minutes per module on 2 cores)::

    nice -n 10 python benchmarks/mutation_score.py [--modules rle selector prompt_tokens metrics] \
        [--max-children 2] [--only 'sparrow.eval.metrics.x__window*'] [--show-survivors] [--work DIR]

For each module a scratch copy of ``src/``, ``tests/`` and ``pyproject.toml`` is made (the repository is never
touched), a ``setup.cfg`` tells mutmut (3.x, pinned in requirements.txt) which file to mutate and which test files
to run, and ``mutmut run`` does the rest: it records which tests reach each function and runs, for each mutant,
those tests only (forked from one process that imported them once). ``--only`` restricts the mutants to mutmut
names matching a glob (``sparrow.<module>.x_<function>__mutmut_<n>``), to sample a module in less time.

Prints per module: mutants, killed, survived, no tests, timeout, other, the score killed / (killed + survived),
the wall time, and with ``--show-survivors`` the diff of every survivor. docs/testing.md lists the survivors of the
last run and why each is left (equivalent mutants) or which test now kills it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# module -> (file under src/, its tests); the tests are those whose subject is the module, not every user of it
MODULES: dict[str, tuple[str, list[str]]] = {
    "metrics": (  # the exhaustive small-mask tests first: they kill most mutants within a second
        "src/sparrow/eval/metrics.py",
        ["tests/test_eval_metrics_properties.py", "tests/test_eval_metrics.py", "tests/test_eval_bitstack.py"],
    ),
    "rle": ("src/sparrow/data/rle.py", ["tests/test_rle.py"]),
    "selector": ("src/sparrow/model/selector.py", ["tests/test_selector.py", "tests/test_selector_properties.py"]),
    "prompt_tokens": ("src/sparrow/model/prompt_tokens.py", ["tests/test_prompt_tokens.py"]),
}


def _mutmut(work: Path, *args: str, log: Path | None = None) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", *args], cwd=work, env=env, capture_output=True, text=True, check=False
    )
    if log is not None:
        log.write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        tail = (out.stdout + out.stderr)[-2000:]
        raise SystemExit(f"mutmut {' '.join(args)} failed in {work} (exit {out.returncode}):\n{tail}")
    return out.stdout


def _prepare(work: Path, target: str, tests: list[str]) -> None:
    for name in ("src", "tests"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
    lines = "\n    ".join(tests)
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = src\n"
        f"only_mutate = {target}\n"
        f"pytest_add_cli_args_test_selection =\n    {lines}\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -q\n"
    )


def run_module(name: str, work: Path, max_children: int, only: list[str], show: bool) -> dict[str, int | float]:
    target, tests = MODULES[name]
    work.mkdir(parents=True)
    _prepare(work, target, tests)
    start = time.perf_counter()
    _mutmut(work, "run", "--max-children", str(max_children), *only, log=work / "mutmut-run.log")
    seconds = time.perf_counter() - start
    statuses = {}
    for line in _mutmut(work, "results", "--all", "true").splitlines():
        key, _, status = line.strip().rpartition(": ")
        if key:
            statuses[key] = status
    if only:  # mutmut lists every mutant of the file; keep those that ran
        statuses = {k: v for k, v in statuses.items() if v != "not checked"}
    counts = Counter(statuses.values())
    killed, survived = counts["killed"], counts["survived"]
    row = {
        "mutants": len(statuses),
        "killed": killed,
        "survived": survived,
        "no tests": counts["no tests"],
        "timeout": counts["timeout"],
        "other": len(statuses) - killed - survived - counts["no tests"] - counts["timeout"],
        "score": killed / max(1, killed + survived),
        "seconds": seconds,
    }
    if show:
        for key, status in statuses.items():
            if status == "survived":
                diff = _mutmut(work, "show", key)
                changed = [ln for ln in diff.splitlines() if ln[:2] in ("- ", "+ ")]
                print(f"  {key}\n    " + "\n    ".join(changed), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", choices=sorted(MODULES), default=list(MODULES))
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested in parallel")
    parser.add_argument("--only", nargs="*", default=[], help="mutmut name globs to restrict the mutants to")
    parser.add_argument("--show-survivors", action="store_true", help="print the diff of every surviving mutant")
    parser.add_argument("--work", type=Path, default=None, help="keep the scratch copies here (default: a temp dir)")
    args = parser.parse_args()
    base = args.work or Path(tempfile.mkdtemp(prefix="sparrow-mutation-"))
    rows = {}
    try:
        for name in args.modules:
            print(f"== {name}: {MODULES[name][0]} with {' '.join(MODULES[name][1])}", flush=True)
            rows[name] = run_module(name, base / name, args.max_children, args.only, args.show_survivors)
            r = rows[name]
            print(
                f"   {r['mutants']} mutants: {r['killed']} killed, {r['survived']} survived, {r['no tests']} no tests, "
                f"{r['timeout']} timeout, {r['other']} other; score {r['score']:.3f}; {r['seconds']:.0f} s",
                flush=True,
            )
    finally:
        if args.work is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n{'module':<14} {'mutants':>8} {'killed':>7} {'survived':>9} {'no tests':>9} {'timeout':>8} {'score':>6}")
    for name, r in rows.items():
        print(
            f"{name:<14} {r['mutants']:>8} {r['killed']:>7} {r['survived']:>9} {r['no tests']:>9} {r['timeout']:>8} "
            f"{r['score']:>6.3f}"
        )


if __name__ == "__main__":
    main()
