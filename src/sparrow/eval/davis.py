"""The DAVIS 2017 protocol: semi-supervised and unsupervised scoring of index-PNG predictions.

- GT: ``<gt>/Annotations[_unsupervised]/480p/<seq>/<frame>.png`` with ``<gt>/ImageSets/2017/<set>.txt`` (the DAVIS
  root), or directly ``<gt>/<seq>/<frame>.png``. 255 is void; objects are 1..max of the first frame.
- Predictions: ``<pred>/<seq>/<frame>.png``, index images; the object count is the maximum value read.
- Semi-supervised: first and last frames dropped, void not used, more predicted objects than GT objects is an error,
  fewer are padded with empty masks; object k is scored against GT object k.
- Unsupervised: all frames, void excluded, at most 20 proposals, padded with empty ones up to the GT count; per
  (proposal, GT object) pair the per-frame J and F; Hungarian assignment (``scipy.optimize.linear_sum_assignment``)
  maximising (mean J + mean F) / 2. Row order (``object_order``): ``"official"`` (default) lists the matched pairs
  in increasing proposal index and names row k ``<seq>_<k>`` after the k-th matched proposal, as the official
  ``DAVISEvaluation`` does, so per-object CSVs join with the official ones; ``"gt"`` lists them by GT object and
  names each row after its GT object. Means, recall and decay over all rows are the same either way.
- Aggregation: mean / recall / decay per object; global figures are means over all objects; J&F = (J_M + F_M) / 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from sparrow.errors import SparrowError
from sparrow.eval.io import check_headers, check_missing, image_size, read_index_mask
from sparrow.eval.metrics import BoundaryCache, decay_differs, region_and_boundary, statistics
from sparrow.eval.parallel import run_ordered

Task = Literal["semi-supervised", "unsupervised"]
ObjectOrder = Literal["official", "gt"]
OBJECT_ORDERS: tuple[str, ...] = ("official", "gt")
MAX_PROPOSALS = 20
GLOBAL_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


@dataclass
class DavisSequence:
    """One sequence to score: the GT frame files and the prediction folder."""

    name: str
    gt_files: list[Path]
    pred_dir: Path
    task: Task
    legacy_decay: bool = False
    object_order: ObjectOrder = "official"


@dataclass
class ObjectScore:
    """Per-frame J and F of one scored row (a GT object and its prediction) and their statistics."""

    name: str  # <seq>_<k>
    j: np.ndarray  # [T]
    f: np.ndarray  # [T]
    stats: dict[str, float] = field(default_factory=dict)
    legacy_decay_differs: bool = False
    gt_object: int = 0  # 1-based GT object index of the row
    proposal: int = 0  # 1-based predicted object index matched to it (semi-supervised: the same as gt_object)


def davis_root(gt: str | Path, task: Task, subset: str = "val") -> tuple[Path, list[str]]:
    """Resolve the annotation folder and the sequence names of a DAVIS root or a plain ``<seq>/<frame>.png`` folder."""
    gt = Path(gt)
    if not gt.is_dir():
        raise SparrowError("annotation folder not found", gt)
    ann = gt / ("Annotations_unsupervised" if task == "unsupervised" else "Annotations") / "480p"
    if ann.is_dir():
        split = gt / "ImageSets" / "2017" / f"{subset}.txt"
        if split.is_file():
            names = [ln.strip() for ln in split.read_text().splitlines() if ln.strip()]
        else:
            names = sorted(p.name for p in ann.iterdir() if p.is_dir())
        return ann, names
    names = sorted(p.name for p in gt.iterdir() if p.is_dir())
    if not names:
        raise SparrowError("no sequence folders (expected <seq>/<frame>.png or a DAVIS root)", gt)
    return gt, names


def _read_gt(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """GT index frames → (object masks bool [N, T, H, W], void bool [T, H, W]); N = max of the first frame."""
    first = read_index_mask(files[0])
    frames = np.stack([first] + [read_index_mask(p, first.shape) for p in files[1:]])
    void = frames == 255
    frames = np.where(void, 0, frames)
    n_obj = int(frames[0].max())
    objects = np.stack([frames == k for k in range(1, n_obj + 1)]) if n_obj else np.zeros((0, *frames.shape), bool)
    return objects, void


def _read_pred(files: list[Path], size: tuple[int, int]) -> np.ndarray:
    """Prediction index frames ``[T, H, W]`` uint8 (strict size)."""
    return np.stack([read_index_mask(p, size) for p in files])


def score_sequence(seq: DavisSequence) -> list[ObjectScore]:
    """Score one sequence under its task; one :class:`ObjectScore` per GT object (in GT order)."""
    gt_objects, void = _read_gt(seq.gt_files)
    n_gt = len(gt_objects)
    size = tuple(void.shape[1:])
    names = [p.name for p in seq.gt_files]
    if seq.task == "semi-supervised":
        keep = slice(1, len(names) - 1)
        gt_objects, names = gt_objects[:, keep], names[keep]
        void_used = None
    else:
        void_used = void
    if not names:
        raise SparrowError(
            f"sequence {seq.name} has too few frames for the {seq.task} protocol", seq.gt_files[0].parent
        )
    pred_idx = _read_pred([seq.pred_dir / n for n in names], size)
    n_pred = int(pred_idx.max()) if pred_idx.size else 0
    worst = seq.pred_dir / names[int(np.argmax(pred_idx.reshape(len(names), -1).max(axis=1)))]
    if seq.task == "semi-supervised" and n_pred > n_gt:
        raise SparrowError(
            f"prediction has object index {n_pred} but the annotation has {n_gt} objects"
            + (" (a 0/255 mask is read as object 255; write an index image)" if n_pred == 255 else ""),
            worst,
        )
    if seq.task == "unsupervised" and n_pred > MAX_PROPOSALS:
        raise SparrowError(
            f"{n_pred} proposals, at most {MAX_PROPOSALS} allowed"
            + (" (a 0/255 mask is read as object 255; write an index image)" if n_pred == 255 else ""),
            worst,
        )
    n_slots = max(n_pred, n_gt)
    keep_px = None if void_used is None else ~void_used
    pred_caches = [
        BoundaryCache(pred_idx == k if keep_px is None else (pred_idx == k) & keep_px) for k in range(1, n_slots + 1)
    ]
    gt_caches = [BoundaryCache(g if keep_px is None else g & keep_px) for g in gt_objects]
    out: list[ObjectScore] = []
    if seq.task == "semi-supervised":
        for k in range(n_gt):
            j, f = region_and_boundary(pred_caches[k], gt_caches[k])
            out.append(ObjectScore(f"{seq.name}_{k + 1}", j, f, gt_object=k + 1, proposal=k + 1))
    else:
        js = np.zeros((n_slots, n_gt, len(names)))
        fs = np.zeros((n_slots, n_gt, len(names)))
        for i in range(n_gt):
            for p in range(n_slots):
                js[p, i], fs[p, i] = region_and_boundary(pred_caches[p], gt_caches[i])
        score = (js.mean(axis=2) + fs.mean(axis=2)) / 2
        rows, cols = linear_sum_assignment(-score)  # rows: proposals in increasing order, cols: their GT objects
        pairs = list(zip(rows, cols))
        if seq.object_order == "gt":
            pairs.sort(key=lambda rc: rc[1])
        for k, (p, i) in enumerate(pairs):
            label = k + 1 if seq.object_order == "official" else i + 1
            out.append(
                ObjectScore(f"{seq.name}_{label}", js[p, i], fs[p, i], gt_object=int(i) + 1, proposal=int(p) + 1)
            )
    for obj in out:
        jm, jr, jd = statistics(obj.j, seq.legacy_decay)
        fm, fr, fd = statistics(obj.f, seq.legacy_decay)
        obj.stats = {"J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm, "F-Recall": fr, "F-Decay": fd}
        obj.legacy_decay_differs = decay_differs(len(obj.j)) and (
            statistics(obj.j, True)[2] != jd or statistics(obj.f, True)[2] != fd
        )
    return out


def aggregate(objects: list[ObjectScore]) -> dict[str, float]:
    """Global figures: means over objects; J&F-Mean = (mean J-Mean + mean F-Mean) / 2."""
    if not objects:
        raise SparrowError("no annotated objects to score")
    g = {k: float(np.mean([o.stats[k] for o in objects])) for k in GLOBAL_KEYS[1:]}
    return {"J&F-Mean": (g["J-Mean"] + g["F-Mean"]) / 2.0, **g}


def prepare_davis(
    pred: str | Path,
    gt: str | Path,
    task: Task = "unsupervised",
    subset: str = "val",
    legacy_decay: bool = False,
    object_order: ObjectOrder = "official",
) -> list[DavisSequence]:
    """Find the sequences to score and check every prediction before anything is scored.

    Strict: every GT frame needs a prediction (else one error listing them), and every prediction file must be a
    readable index PNG of the annotation's size (:func:`sparrow.eval.io.check_headers`).
    """
    if task not in ("semi-supervised", "unsupervised"):
        raise SparrowError(f"unknown DAVIS task {task!r} (semi-supervised or unsupervised)")
    if object_order not in OBJECT_ORDERS:
        raise SparrowError(f"unknown object order {object_order!r} (one of {OBJECT_ORDERS})")
    pred = Path(pred)
    if not pred.is_dir():
        raise SparrowError("prediction folder not found", pred)
    ann, names = davis_root(gt, task, subset)
    seqs: list[DavisSequence] = []
    expected: dict[str, list[Path]] = {}
    for name in names:
        files = sorted((ann / name).glob("*.png"))
        if not files:
            raise SparrowError(f"sequence {name} has no annotation PNGs", ann / name)
        used = files[1:-1] if task == "semi-supervised" else files
        expected[name] = [pred / name / p.name for p in used]
        seqs.append(DavisSequence(name, files, pred / name, task, legacy_decay, object_order))
    check_missing(expected, "error", pred)
    sizes = {seq.name: image_size(seq.gt_files[0]) for seq in seqs}
    check_headers({p: sizes[seq.name] for seq in seqs for p in seq.gt_files}, index=True, what="annotation")
    check_headers({p: sizes[name] for name, paths in expected.items() for p in paths}, index=True)
    return seqs


def score_davis(seqs: list[DavisSequence], workers: int = 1, progress: bool = True) -> dict:
    """Score prepared sequences (:func:`prepare_davis`); the result of :func:`evaluate_davis`."""
    per_seq = run_ordered(score_sequence, seqs, workers=workers, progress="davis" if progress else None)
    objects = [o for seq in per_seq for o in seq]
    task = seqs[0].task if seqs else "unsupervised"
    object_order = seqs[0].object_order if seqs else "official"
    return {
        "protocol": "davis2017",
        "task": task,
        "legacy_decay": bool(seqs and seqs[0].legacy_decay),
        "global": aggregate(objects),
        "object_order": object_order if task == "unsupervised" else "gt",
        "objects": [
            {
                "name": o.name,
                "gt_object": o.gt_object,
                "proposal": o.proposal,
                **o.stats,
                "J&F": (o.stats["J-Mean"] + o.stats["F-Mean"]) / 2,
            }
            for o in objects
        ],
        "curves": {o.name: ((o.j + o.f) / 2).tolist() for o in objects},
        "legacy_decay_differs": [o.name for o in objects if o.legacy_decay_differs],
    }


def evaluate_davis(
    pred: str | Path,
    gt: str | Path,
    task: Task = "unsupervised",
    subset: str = "val",
    workers: int = 1,
    legacy_decay: bool = False,
    object_order: ObjectOrder = "official",
    progress: bool = True,
) -> dict:
    """Score a DAVIS-format prediction folder (:func:`prepare_davis` checks, then :func:`score_davis`).

    ``object_order``: how unsupervised rows are ordered and named (module doc). Returns ``{"protocol", "task",
    "global": {...}, "object_order", "objects": [{name, gt_object, proposal, J-Mean, ...}], "curves": {name: [J&F
    per frame]}, "legacy_decay_differs": [names]}``.
    """
    seqs = prepare_davis(pred, gt, task, subset, legacy_decay, object_order)
    return score_davis(seqs, workers=workers, progress=progress)
