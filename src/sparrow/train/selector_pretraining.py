"""The ``track_selector`` stage: the track selector and its question reader learn, without the VLM, from the tracklets of
thousands of clips.

Reading the words does not need the video. A model with ``config.track_reads_question`` scores tracklets from the
question's token embeddings (``model/question_reader.py``) and each tracklet's appearance and trajectory; those come
from SAM2 and the proposer, which this stage keeps frozen. So each clip's tracklets are computed once (about 0.5 CPU
s per clip of 8 frames with the small preset) and the selector then makes many passes over thousands of clips; the
vlm stage shows it about 2,000 samples an hour (docs/results.md, "Track-level selection").

1. **Clips**: every video of the configured sources (written splits such as SynthRef's, or ``length`` clips of a
   fresh SynthRef stream: ``FreshSynthRef.record``), with all their expressions.
2. **Tracklets** on ``model.config.vlm_frames`` evenly spaced frames, linked exactly as inference links them
   (``SparrowModel.mask_boxes`` then ``SparrowModel.link_tracklets``); per expression the labels of
   ``tracklets.tracklet_labels`` from the target's boxes (the box around all its objects), or with
   ``loss.track_membership`` > 0 those of ``tracklets.object_tracklet_labels`` from each object's own boxes, so an
   expression that names several objects has one positive per object. Expressions whose target no tracklet covers
   are kept out.
3. **Training**: ``steps`` AdamW steps (``optimizer``, its warm-up and schedule); a step takes ``batch_size`` clips
   (a seeded permutation per pass) with all their expressions, each asked in a question template drawn per
   ``(seed, step, clip, expression)`` from the dataset's templates, and minimises ``track_selection_loss`` with the
   words alone (no ``[BOX]``), each expression's softmax over its own clip's tracklets (:func:`batch_loss`, one
   pass per step), plus ``loss.track_membership`` times ``track_membership_loss`` when that weight is > 0. The
   selector's ``[BOX]`` projection is zeroed first and stays so, so a following vlm stage starts
   from what the words say and learns what ``[BOX]`` adds.
4. **Output**: ``OUT/final`` (the whole model, ``save_pretrained``), ``OUT/losses.jsonl`` (per logged step),
   ``OUT/train_config.json`` and ``OUT/tracklets.pt``, the tracklets of step 2, which a later run into the same
   folder with the same model init, sources and frame count reads instead of linking again
   (:func:`cached_tracklets`). Training itself takes minutes, so there are no intermediate checkpoints and
   ``--resume`` does not apply.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sparrow.atomic import atomic_file
from sparrow.data.dataset import load_records
from sparrow.data.schema import VideoRecord
from sparrow.data.synthref.stream import FreshSynthRef, fresh_config
from sparrow.data.templates import ReferringTemplates
from sparrow.data.video_io import sample_indices
from sparrow.errors import SparrowError
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import save_pretrained
from sparrow.model.losses import weighted_total
from sparrow.model.sparrow_model import SparrowModel
from sparrow.model.track_selector import track_membership_loss, track_selection_loss
from sparrow.model.tracklets import object_tracklet_labels, tracklet_hits, tracklet_labels
from sparrow.train.config import TrainConfig
from sparrow.train.loop import TrainResult, lr_factor
from sparrow.train.model_init import build_initial_model, check_initial_config
from sparrow.train.stages import apply_stage

__all__ = [
    "ClipTracklets",
    "batch_loss",
    "cached_tracklets",
    "check_stage_config",
    "clip_tracklets",
    "pretrain_selector",
    "selector_records",
]


@dataclass
class ClipTracklets:
    """One clip's tracklets, as the selector sees them, and its expressions: ``appearance [N, A]``, ``trajectory
    [N, G]``, ``positive`` / ``ignore [E, N]`` bool (``tracklets.tracklet_labels``), ``texts`` (E expressions whose
    target some tracklet covers)."""

    appearance: Tensor
    trajectory: Tensor
    positive: Tensor
    ignore: Tensor
    texts: list[str]


@torch.no_grad()
def clip_tracklets(model: SparrowModel, record: VideoRecord, per_object: bool = False) -> ClipTracklets:
    """The tracklets of ``record`` on the model's ``vlm_frames`` evenly spaced frames and the labels of each of its
    expressions (module docstring, step 2): against the box around all of an expression's objects, or with
    ``per_object`` against each object's own boxes (``tracklets.object_tracklet_labels``: an expression that names
    several objects has the best tracklet of each as positives)."""
    frame_ids = sample_indices(record.num_frames, model.config.vlm_frames)
    features = model.pixel_decoder.encode(model.preprocessor(record.load_frames(frame_ids)).to(model.device))
    tracks, appearance, trajectory = model.link_tracklets(model.mask_boxes(features, model.candidates(features)))
    h, w = record.size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    positive, ignore, texts = [], [], []
    for expression in record.expressions:
        if per_object:
            rows = [[record.objects[o].boxes[t] for t in frame_ids] for o in expression.obj_ids]
            target = _boxes_tensor(rows) / scale
            pos, ign = object_tracklet_labels(tracks, target.to(tracks.boxes.device))
        else:
            target = _boxes_tensor([record.target_boxes(expression, frame_ids)])[0] / scale
            pos, ign = tracklet_labels(tracklet_hits(tracks, target.to(tracks.boxes.device)))
        if len(tracks) and bool(pos.any()):
            positive.append(pos.cpu())
            ignore.append(ign.cpu())
            texts.append(expression.text)
    n = len(tracks)
    return ClipTracklets(
        appearance=appearance.float().cpu(),
        trajectory=trajectory.float().cpu(),
        positive=torch.stack(positive) if positive else torch.zeros((0, n), dtype=torch.bool),
        ignore=torch.stack(ignore) if ignore else torch.zeros((0, n), dtype=torch.bool),
        texts=texts,
    )


def _boxes_tensor(rows: Sequence[Sequence[Sequence[float] | None]]) -> Tensor:
    """Pixel boxes per row and frame (None where absent) -> ``[R, T, 4]`` float, NaN where absent."""
    return torch.tensor([[[np.nan] * 4 if b is None else list(b) for b in row] for row in rows], dtype=torch.float32)


def selector_records(config: TrainConfig) -> list[Callable[[], VideoRecord]]:
    """The clips of the configured sources, each as a function that reads (or generates) its record, in source
    order: written splits by ``load_records``, fresh SynthRef sources as ``length`` clips of their stream."""
    out: list[Callable[[], VideoRecord]] = []
    for src in config.data.sources:
        if src.synthref is not None:
            fresh = src.synthref
            stream = FreshSynthRef(
                fresh.seed, length=fresh.length, config=fresh_config(fresh.size, fresh.num_frames), balance=False
            )
            out.extend((lambda i=i, s=stream: s.record(i)) for i in range(fresh.length))
        else:
            records = load_records(src.path, format=src.format, split=src.split or None)
            out.extend((lambda r=r: r) for r in records)
    if not out:
        raise SparrowError(
            "the track_selector stage needs data.sources (written splits or fresh SynthRef)", config.source
        )
    return out


def _questions(texts: Sequence[str], seed: int, step: int, clip: int) -> list[str]:
    """Each expression asked in a template drawn per ``(seed, step, clip, expression)``."""
    templates = ReferringTemplates()
    return [templates.question(text, np.random.default_rng([seed, step, clip, e])) for e, text in enumerate(texts)]


def check_stage_config(config: TrainConfig, model_config: SparrowConfig) -> None:
    """One-line errors, before anything is built or written, for a track_selector stage whose starting model
    (``model_config``, from ``model_init.check_initial_config``) cannot run it."""
    if model_config.selection_level != "track" or not model_config.track_reads_question:
        raise SparrowError(
            "the track_selector stage trains a track selector that reads the question "
            "(model.config: selection_level: track, track_reads_question: true)",
            config.source,
        )
    if config.data.num_vlm_frames != model_config.vlm_frames:
        raise SparrowError(
            f"data.num_vlm_frames ({config.data.num_vlm_frames}) differs from the model's vlm_frames "
            f"({model_config.vlm_frames})",
            config.source,
        )


class _QuestionWords:
    """Token embeddings of each distinct question, looked up once (``QwenVLAdapter.question_embeddings``)."""

    def __init__(self, model: SparrowModel) -> None:
        self.vlm = model.vlm
        self.cache: dict[str, Tensor] = {}

    def __call__(self, questions: list[str]) -> tuple[Tensor, Tensor]:
        """``words [Q, L, d]`` (right-padded) and ``mask [Q, L]``."""
        missing = [q for q in dict.fromkeys(questions) if q not in self.cache]
        if missing:
            words, mask = self.vlm.question_embeddings(missing)
            for q, w, m in zip(missing, words.cpu(), mask.cpu()):
                self.cache[q] = w[m]
        rows = [self.cache[q] for q in questions]
        length = max(len(r) for r in rows)
        words = rows[0].new_zeros((len(rows), length, rows[0].shape[-1]))
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, r in enumerate(rows):
            words[i, : len(r)] = r
            mask[i, : len(r)] = True
        return words, mask


def batch_loss(
    model: SparrowModel, clips: Sequence[ClipTracklets], questions: Sequence[list[str]], words: _QuestionWords
) -> dict[str, Tensor]:
    """``track_selection_loss`` of every expression of ``clips`` (asked as ``questions``, one list per clip) in one
    pass: the clips' tracklets are concatenated, and each expression's softmax is restricted to its own clip's
    tracklets (the others are ignored); averaged over expressions. With ``loss.track_membership`` > 0 also
    ``track_membership_loss`` on the same logits; ``loss`` is the weighted sum."""
    word_batch, mask = words([q for qs in questions for q in qs])
    appearance = torch.cat([c.appearance for c in clips])
    trajectory = torch.cat([c.trajectory for c in clips])
    rows, cols = sum(len(c.texts) for c in clips), len(appearance)
    positive = torch.zeros((rows, cols), dtype=torch.bool)
    ignore = torch.ones((rows, cols), dtype=torch.bool)
    r = k = 0
    for c in clips:
        e, n = c.positive.shape
        positive[r : r + e, k : k + n] = c.positive
        ignore[r : r + e, k : k + n] = c.ignore
        r, k = r + e, k + n
    logits = model.track_selector(None, appearance, trajectory, word_batch, mask)
    losses = {"track_selection": track_selection_loss(logits, positive, ignore)}
    weights = model.config.loss
    if weights.track_membership > 0:
        # the other clips' tracklets are in the ignore mask too: each expression's BCE covers its own clip only
        losses["track_membership"] = track_membership_loss(logits, positive, ignore)
    losses["loss"] = weighted_total(losses, weights)
    return losses


def cached_tracklets(model: SparrowModel, config: TrainConfig, progress: bool) -> list[ClipTracklets]:
    """The tracklets of the stage's clips (:func:`clip_tracklets`), read from ``OUT/tracklets.pt`` when an earlier
    run with the same model init, sources and frame count wrote it, else computed and written there (atomically;
    read back with ``weights_only``: tensors, numbers and strings only)."""
    path = Path(config.output_dir) / "tracklets.pt"
    per_object = model.config.loss.track_membership > 0
    fields = {
        "model": asdict(config.model),
        "sources": [asdict(s) for s in config.data.sources],
        "frames": model.config.vlm_frames,
    }
    if per_object:  # labels per named object (the key of earlier caches, without it, stays valid for theirs)
        fields["labels"] = "per_object"
    key = json.dumps(fields, sort_keys=True)
    if path.is_file():
        data = torch.load(path, weights_only=True)
        if data.get("key") == key:
            return [ClipTracklets(**c) for c in data["clips"]]
    loaders = selector_records(config)
    started = time.perf_counter()
    clips = []
    for i, load in enumerate(loaders):
        clips.append(clip_tracklets(model, load(), per_object))
        if progress and (i + 1) % 100 == 0:
            print(f"track_selector: tracklets of {i + 1}/{len(loaders)} clips, {time.perf_counter() - started:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as f:
        torch.save({"key": key, "clips": [asdict(c) for c in clips]}, f)
    return clips


def pretrain_selector(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Run the track_selector stage of ``config`` (module docstring); returns the per-step records and ``OUT/final``."""
    out = Path(config.output_dir)
    check_stage_config(config, check_initial_config(config.model, config.source))
    torch.manual_seed(config.seed)
    model = build_initial_model(config.model, config.source)
    plan = apply_stage(model, config.stage)
    model.eval()
    clips = [c for c in cached_tracklets(model, config, progress) if c.texts]
    if not clips:
        raise SparrowError(
            "no expression of the track_selector stage's clips has a tracklet on its target", config.source
        )

    selector = model.track_selector
    with torch.no_grad():
        selector.query.weight.zero_()
        selector.query.bias.zero_()
    selector.query.requires_grad_(False)
    params = [p for p in selector.parameters() if p.requires_grad]
    opt = config.optimizer
    optimizer = torch.optim.AdamW(params, lr=opt.lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(opt, config.steps))
    words = _QuestionWords(model)
    order: list[int] = []
    records: list[dict[str, float]] = []
    (out / "train_config.json").write_text(json.dumps(config.to_dict(), indent=1))
    log = out / "losses.jsonl"
    log.write_text("")
    selector.train()
    for step in range(config.steps):
        picked = []
        while len(picked) < config.batch_size:
            if not order:
                order = torch.randperm(len(clips), generator=torch.Generator().manual_seed(config.seed + step)).tolist()
            picked.append(order.pop())
        questions = [_questions(clips[i].texts, config.seed, step, i) for i in picked]
        losses = batch_loss(model, [clips[i] for i in picked], questions, words)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if opt.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, opt.grad_clip)
        optimizer.step()
        scheduler.step()
        record = {
            "step": step + 1,
            "lr": scheduler.get_last_lr()[0],
            **{k: float(v.detach()) for k, v in losses.items()},
        }
        value = record["loss"]
        records.append(record)
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            with open(log, "a") as f:
                f.write(json.dumps(record) + "\n")
            if progress and (step + 1) % (config.log_every * 20) == 0:
                print(f"track_selector: step {step + 1}/{config.steps}, loss {value:.4f}")
    model.eval()
    final = save_pretrained(model.cpu(), out / "final")
    return TrainResult(
        output_dir=out, step=config.steps, records=records, plan=plan, is_main_process=True, final_dir=final
    )
