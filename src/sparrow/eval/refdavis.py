"""Ref-DAVIS17: the DAVIS 2017 **unsupervised** protocol run once per annotation set, then averaged.

Predictions: ``<pred>/anno_0 .. anno_3/<seq>/<frame>.png`` index images (the four annotation runs: two annotators ×
first-frame / full-video expressions). GT: a DAVIS root (``Annotations_unsupervised/480p``) or ``<seq>/<frame>.png``.
The reported figure is the mean of the runs' global figures; each run is reported too.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sparrow.errors import SparrowError
from sparrow.eval.davis import GLOBAL_KEYS, ObjectOrder, prepare_davis, score_davis

EXPECTED_RUNS = ("anno_0", "anno_1", "anno_2", "anno_3")


def find_runs(pred: str | Path, require_all: bool = True) -> list[Path]:
    """The ``anno_<k>`` run folders under ``pred`` (sorted); all four are required unless ``require_all`` is False."""
    pred = Path(pred)
    if not pred.is_dir():
        raise SparrowError("prediction folder not found", pred)
    runs = sorted(
        (p for p in pred.iterdir() if p.is_dir() and re.fullmatch(r"anno_\d+", p.name)), key=lambda p: int(p.name[5:])
    )
    if not runs:
        raise SparrowError("no annotation runs (expected anno_0 .. anno_3 sub-folders)", pred)
    names = {p.name for p in runs}
    if require_all and not set(EXPECTED_RUNS) <= names:
        raise SparrowError(
            f"annotation runs {sorted(set(EXPECTED_RUNS) - names)} are missing (found {sorted(names)})", pred
        )
    return runs


def evaluate_refdavis(
    pred: str | Path,
    gt: str | Path,
    workers: int = 1,
    require_all: bool = True,
    legacy_decay: bool = False,
    object_order: ObjectOrder = "official",
    progress: bool = True,
) -> dict:
    """Score every run with the unsupervised DAVIS protocol and average the global figures over runs.

    Every run's predictions are checked (missing files, PNG headers) before any run is scored.
    """
    runs = find_runs(pred, require_all)
    prepared = {
        run.name: prepare_davis(run, gt, task="unsupervised", legacy_decay=legacy_decay, object_order=object_order)
        for run in runs
    }
    per_run = {name: score_davis(seqs, workers=workers, progress=progress) for name, seqs in prepared.items()}
    mean = {k: float(np.mean([r["global"][k] for r in per_run.values()])) for k in GLOBAL_KEYS}
    return {
        "protocol": "ref-davis17",
        "task": "unsupervised",
        "n_runs": len(runs),
        "object_order": object_order,
        "global": mean,
        "runs": {name: r["global"] for name, r in per_run.items()},
        "objects": [dict(o, name=f"{name}/{o['name']}") for name, r in per_run.items() for o in r["objects"]],
        "curves": {f"{name}/{k}": v for name, r in per_run.items() for k, v in r["curves"].items()},
        "legacy_decay_differs": [f"{name}/{o}" for name, r in per_run.items() for o in r["legacy_decay_differs"]],
    }
