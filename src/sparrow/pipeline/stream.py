"""Segment a video into an output folder as the masks are computed, and resume an interrupted run.

For long videos (``sparrow segment`` always runs this way): frames are read as they are needed (the
:class:`~sparrow.data.video_io.Video` is opened once), each mask goes to disk as soon as it is computed, memory does
not grow with the video beyond one RLE per frame, and a progress bar gives the rate and the ETA.

While running, everything lives in ``<parent>/.<name>.partial/``, so nothing that looks finished exists::

    run.json        what the run is (video fingerprint, query, model, options) and, once known, the answer header
    plan.pt         the answer's prompts and every target's key frame, box, score and key mask (tensors only)
    records.jsonl   one line per computed mask, appended as it comes: {"k": target, "t": frame, "rle", "box"}
    checkpoint.pt   the last consistent point: which target, how many bytes of records.jsonl, and SAM2's pruned
                    memory state (``track``) or the frames done (``framewise``/``perframe``)
    masks/<t>.png   palette PNG of frame t, written as soon as every target of frame t is known

At the end ``result.json`` and ``overlay.mp4`` are written, the finished files are moved into ``<out>`` (swapped in
whole by :func:`sparrow.atomic.atomic_dir`, with the marker of ``sparrow.output``: the layout of
``pipeline/writer.py``) and the partial folder is removed. ``resume=True`` continues a partial folder made with the same video, query, model and
options from its checkpoint, and yields exactly the masks of an uninterrupted run (records after the checkpoint
are dropped and recomputed; SAM2 restarts from the saved state, framewise chunks restart on a chunk boundary).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sparrow.atomic import atomic_dir, atomic_file, atomic_path
from sparrow.data.exports import overlay_frame
from sparrow.data.palette import index_png
from sparrow.data.rle import decode_rle
from sparrow.data.video_io import Video, write_video
from sparrow.errors import SparrowError
from sparrow.model.propagator import PropagationCheckpoint
from sparrow.output import write_marker
from sparrow.pipeline.masks import FRAMEWISE_CHUNK, FrameOutput
from sparrow.pipeline.prompting import Plan
from sparrow.pipeline.results import SegmentationResult, TargetResult
from sparrow.pipeline.segment import SegmentationPipeline

CHECKPOINT_EVERY = 256  # frames between checkpoints: one records fsync + one SAM2 state file (window-sized) each


def partial_dir(out: str | Path) -> Path:
    """Where an unfinished run into ``out`` lives."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def is_finished(out: str | Path) -> bool:
    """``out`` holds a finished run (the folder appears only complete, with its result.json)."""
    return (Path(out) / "result.json").is_file()


@dataclass
class StreamReport:
    """What :func:`segment_to_folder` did: ``status`` "written" or "finished" (nothing to do), the result, and how
    many masks an earlier run had already computed."""

    status: str
    result: SegmentationResult | None
    reused: int = 0


def _fingerprint(video: Video) -> dict[str, Any]:
    path = video.name
    if path is None:
        return {"source": "in-memory", "frames": video.num_frames}
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "frames": video.num_frames}


class _Records:
    """``records.jsonl``: appended per mask, flushed to disk at checkpoints."""

    def __init__(self, path: Path, keep_bytes: int) -> None:
        with open(path, "ab") as handle:
            handle.truncate(keep_bytes)  # drop what came after the last checkpoint
        self.path = path
        self.handle = open(path, "a")  # noqa: SIM115

    def add(self, k: int, t: int, output: FrameOutput) -> None:
        self.handle.write(json.dumps({"k": k, "t": t, "rle": output[0], "box": output[1]}) + "\n")

    def sync(self) -> int:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        return self.handle.tell()

    def close(self) -> None:
        self.handle.close()


def _read_records(path: Path, targets: int, frames: int) -> list[list[FrameOutput | None]]:
    outputs: list[list[FrameOutput | None]] = [[None] * frames for _ in range(targets)]
    if path.exists():
        with open(path) as handle:
            for line in handle:
                rec = json.loads(line)
                outputs[rec["k"]][rec["t"]] = (rec["rle"], rec["box"])
    return outputs


class _Work:
    """The partial folder of one run. A new run creates it only once its plan exists, so input that fails
    before the first mask leaves nothing behind."""

    def __init__(self, folder: Path, spec: dict[str, Any], resume: bool) -> None:
        self.folder = folder
        self.spec = spec
        existing = self._read_json("run.json") if resume else None
        if existing is not None and existing.get("spec") != spec:
            changed = sorted(k for k in spec if existing.get("spec", {}).get(k) != spec[k])
            raise SparrowError(
                f"was started with a different {', '.join(changed)}; remove it or run without --resume", folder
            )
        self.run = existing

    def _read_json(self, name: str) -> dict[str, Any] | None:
        path = self.folder / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SparrowError(f"unreadable {name} ({exc}); remove the folder to start again", self.folder) from exc

    def create(self, header: dict[str, Any], plan: Plan) -> None:
        """Start the folder afresh with the run's header and plan."""
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / "masks").mkdir(parents=True)
        self.save("plan.pt", plan.to_dict())
        self.run = {"spec": self.spec, "header": header}
        with atomic_file(self.folder / "run.json") as handle:
            json.dump(self.run, handle)

    def load(self, name: str) -> dict[str, Any] | None:
        path = self.folder / name
        return torch.load(path, weights_only=True) if path.is_file() else None

    def save(self, name: str, data: dict[str, Any]) -> None:
        with atomic_path(self.folder / name) as tmp:
            torch.save(data, tmp)


def segment_to_folder(
    pipeline: SegmentationPipeline,
    video: Any,
    query: str,
    out: str | Path,
    model_id: str,
    mode: str | None = None,
    key_frame: int | str | None = None,
    tsf_boxes: Mapping[int, Sequence[float]] | None = None,
    self_tsf: bool | None = None,
    resume: bool = False,
    checkpoint_every: int = CHECKPOINT_EVERY,
    progress: bool = False,
) -> StreamReport:
    """Segment ``video`` for ``query`` into ``out`` (masks/, result.json, overlay.mp4), streaming.

    Args:
        pipeline: the loaded pipeline; ``model_id`` names its model in the run's fingerprint (``--model``).
        mode, key_frame, tsf_boxes, self_tsf: as :meth:`SegmentationPipeline.segment`.
        resume: continue ``.<out>.partial`` if it was started with the same settings, and do nothing when ``out``
            is finished; without it a new run starts (an older partial folder is discarded).
        checkpoint_every: frames between checkpoints (bounds what an interruption loses).
        progress: progress bars with rate and ETA.

    Returns:
        A :class:`StreamReport` (``status`` "finished" when ``resume`` found ``out`` complete).
    """
    out = Path(out)
    if resume and is_finished(out):
        return StreamReport("finished", None)
    if checkpoint_every < 1:
        raise SparrowError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    mode = mode or pipeline.config.mode
    with Video.open(video) as source, pipeline.precision(), torch.no_grad():
        spec = {
            "video": _fingerprint(source),
            "query": query,
            "model": model_id,
            "mode": mode,
            "key_frame": None if key_frame is None else str(key_frame),
            "tsf_boxes": None
            if tsf_boxes is None
            else {str(t): list(map(float, b)) for t, b in sorted(tsf_boxes.items())},
            "self_tsf": self_tsf,
            "dtype": str(pipeline.dtype).replace("torch.", ""),
        }
        work = _Work(partial_dir(out), spec, resume)
        plan, header = _plan(pipeline, work, source, query, mode, key_frame, tsf_boxes, self_tsf, progress)
        reused = _masks(pipeline, work, source, plan, mode, checkpoint_every, progress)
        result = _finish(work, source, plan, header, query, mode, progress)
    with atomic_dir(out) as tmp:  # whether out may be replaced was decided before the run (sparrow.output)
        # hard links: nothing is copied, and the partial folder stays whole until the swap has succeeded
        shutil.copytree(work.folder / "masks", tmp / "masks", copy_function=os.link)
        for name in ("result.json", "overlay.mp4"):
            os.link(work.folder / name, tmp / name)
        write_marker(tmp, "segment")
    shutil.rmtree(work.folder, ignore_errors=True)
    return StreamReport("written", result, reused)


def _plan(
    pipeline: SegmentationPipeline,
    work: _Work,
    video: Video,
    query: str,
    mode: str,
    key_frame: int | str | None,
    tsf_boxes: Mapping[int, Sequence[float]] | None,
    self_tsf: bool | None,
    progress: bool,
) -> tuple[Plan, dict[str, Any]]:
    """The answer and key choices: computed once and saved, or read back when resuming."""
    saved = work.load("plan.pt") if work.run is not None else None
    if saved is not None:
        return Plan.from_dict(saved, pipeline.device), work.run["header"]
    session, extra = pipeline.prepare(video, query, mode, key_frame, tsf_boxes, self_tsf, progress)
    plan = pipeline.plan(session)
    header = {"question": session.question, "vlm_indices": session.vlm_indices, "extra": extra}
    work.create(header, plan)
    return plan, header


def _masks(
    pipeline: SegmentationPipeline, work: _Work, video: Video, plan: Plan, mode: str, every: int, progress: bool
) -> int:
    """Compute every target's masks after the checkpoint, appending records and writing PNGs as they come.
    Returns how many masks were already done."""
    targets, frames = len(plan.choices), video.num_frames
    checkpoint = work.load("checkpoint.pt") or {"target": 0, "bytes": 0}
    records = _Records(work.folder / "records.jsonl", int(checkpoint["bytes"]))
    known = _read_records(records.path, targets, frames)  # earlier targets complete, the current one partly
    reused = sum(o is not None for per in known for o in per)
    bar = tqdm(total=targets * frames, initial=reused, disable=not progress, desc="masks", unit="frame")
    try:
        for k in range(int(checkpoint["target"]), targets):
            current = k == int(checkpoint["target"])

            def save_state(state: PropagationCheckpoint | None, done: int, k: int = k) -> None:
                offset = records.sync()
                work.save(
                    "checkpoint.pt",
                    {
                        "target": k,
                        "bytes": offset,
                        "done": done,
                        "propagation": None if state is None else state.to_dict(),
                    },
                )

            if mode == "track":
                state = checkpoint.get("propagation") if current else None
                resume = PropagationCheckpoint.from_dict(state) if state is not None else None
                stream = pipeline.target_frames(
                    video,
                    plan,
                    k,
                    mode,
                    checkpoint_every=every,
                    on_checkpoint=lambda c, save=save_state: save(c, c.done),
                    resume=resume,
                )
                chunk_every = 0
            else:
                start = int(checkpoint.get("done", 0)) if current else 0
                stream = pipeline.target_frames(video, plan, k, mode, start=start)
                chunk_every = max(1, round(every / FRAMEWISE_CHUNK)) * FRAMEWISE_CHUNK
            for t, output in stream:
                records.add(k, t, output)
                known[k][t] = output
                if k == targets - 1:
                    _write_png(work.folder, t, [known[j][t] for j in range(targets)], video)
                bar.update(1)
                if chunk_every and (t + 1) % chunk_every == 0 and t + 1 < frames:
                    save_state(None, t + 1)
            if k + 1 < targets:
                offset = records.sync()
                work.save("checkpoint.pt", {"target": k + 1, "bytes": offset, "done": 0, "propagation": None})
    finally:
        bar.close()
        records.close()
    return reused


def _write_png(folder: Path, t: int, outputs: list[FrameOutput | None], video: Video) -> None:
    size = (video.info.height, video.info.width)
    labels = np.zeros(size, dtype=np.uint8)
    for k, output in enumerate(outputs, start=1):
        if output is not None and output[0] is not None:
            labels[decode_rle(output[0], expected_size=size)] = k
    with atomic_path(folder / "masks" / f"{t:05d}.png") as tmp:
        index_png(labels).save(tmp, format="PNG")


def _finish(
    work: _Work, video: Video, plan: Plan, header: dict[str, Any], query: str, mode: str, progress: bool
) -> SegmentationResult:
    """result.json from the records, PNGs for frames no target produced, and the overlay video (one pass)."""
    info = video.info
    targets = len(plan.choices)
    outputs = _read_records(work.folder / "records.jsonl", targets, info.num_frames)
    missing = [(k + 1, t) for k in range(targets) for t in range(info.num_frames) if outputs[k][t] is None]
    if missing:
        raise RuntimeError(
            f"{len(missing)} masks missing after the run, e.g. target {missing[0][0]} frame {missing[0][1]}"
        )
    scale = torch.tensor([info.width, info.height, info.width, info.height], dtype=torch.float32)
    result = SegmentationResult(
        query=query,
        question=header["question"],
        answer=plan.answer.text,
        targets=[
            TargetResult(
                rles=[o[0] for o in per],
                boxes=[o[1] for o in per],
                key_frame=choice.frame,
                key_box=None if choice.box is None else [round(float(v), 2) for v in choice.box.float().cpu() * scale],
                selection_score=choice.score,
            )
            for choice, per in zip(plan.choices, outputs)
        ],
        vlm_frame_indices=list(header["vlm_indices"]),
        num_frames=info.num_frames,
        height=info.height,
        width=info.width,
        fps=info.fps,
        mode=mode,
        forced_prompt=plan.answer.forced,
        orphan_boxes=plan.answer.orphan_boxes,
        extra=dict(header["extra"]),
    )
    for t in range(info.num_frames):  # PNGs not there yet (no target, or lost in an interrupted finish)
        if not (work.folder / "masks" / f"{t:05d}.png").exists():
            _write_png(work.folder, t, [outputs[k][t] for k in range(targets)], video)
    with atomic_file(work.folder / "result.json") as handle:
        json.dump(result.to_json(), handle)
    frames = tqdm(video.iter(), total=info.num_frames, disable=not progress, desc="overlay", unit="frame")
    write_video(work.folder / "overlay.mp4", (overlay_frame(result, t, f) for t, f in frames), fps=info.fps or 10.0)
    return result
