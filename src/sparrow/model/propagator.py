"""Mask propagation through a video with SAM2's memory (HF ``Sam2VideoModel``), in bounded memory.

Prompts are masks on key frames, given through SAM2's public mask-prompt path (the session's mask inputs, exactly
what ``Sam2VideoProcessor.add_inputs_to_inference_session(input_masks=...)`` stores); each key frame becomes a
conditioning frame. Further key frames are re-prompts (drift correction): they are conditioning frames too, and
propagation takes their mask when it reaches them.

**What is kept.** The HF session keeps every processed frame and every frame's outputs. Here frames are read
lazily from an opened :class:`~sparrow.data.video_io.Video`, fed one at a time, and after each frame the session is pruned to
what SAM2's memory attention can still read:

- processed frames: none (each frame is dropped once processed; SAM2's one-frame feature cache stays);
- conditioning frames: all key-frame outputs (memory features, object pointer, low-res mask; the 1024² high-res
  mask and the mask input are dropped), of which the ``max_cond_frames`` closest to the current frame (HF's own
  rule: closest before, closest after, then nearest) are in the session at any time;
- tracked frames: the ``num_maskmem - 1`` most recent ones with their memory features, and the object pointers of
  the ``min(T, max_object_pointers_in_encoder) - 1`` most recent ones; masks are dropped once yielded. For
  ``direction="both"`` the same window just after the earliest key frame is also kept, because the backward pass
  reads it (as it does in HF when both passes share one session).

So the state is ``O(window + number of key frames)`` and does not grow with video length. Nothing SAM2 reads is
dropped, so as long as there are at most ``max_cond_frames`` key frames the masks equal those of HF's
``propagate_in_video_iterator`` on a session holding the whole video (forward, then ``reverse=True``). Frames go in
through ``add_new_frame(frame, frame_idx)`` and ``model(session, frame_idx=t)`` rather than the ``frame=`` streaming
call, because streaming changes how many object pointers SAM2 reads; :class:`BoundedInferenceSession` reports the
video length so that look-up stays as in HF.

**Checkpoints.** ``propagate(..., checkpoint_every=N, on_checkpoint=f)`` calls ``f`` with a
:class:`PropagationCheckpoint` every ``N`` yielded frames (after the consumer has handled them): where the run
stands and the pruned SAM2 state (conditioning outputs, the memory window, tracked frames), tensors only, so
``torch.save(..., weights_only=True)``-loadable and ``O(window + key frames)`` in size. ``propagate(...,
resume=checkpoint)`` continues from it and yields exactly the masks the uninterrupted run yields from there on.

**Reading.** Frames are read through ``Sam2Preprocessor.resized_view`` (uint8 ``3 x S x S``, SAM2's input before
normalisation): key frames first, then the forward pass in order; backwards, ``Video.iter_backward`` reads
``reverse_chunk`` frames at a time (never across a keyframe of a video file) and holds them resized. By default the
chunk is what ``REVERSE_BUFFER_BYTES`` (256 MiB) holds: 85 frames at S = 1024, 5,461 at S = 128; when keyframes are
at most that far apart each frame is decoded once per direction: O(T), not O(k0²). When the caller had the video
keep that view (``Video.keep_view``; the pipeline does when the whole video fits its ``FRAME_CACHE_BYTES``) and
scanned it, both passes read from memory and nothing is decoded here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam2VideoInferenceSession, Sam2VideoModel

from sparrow.data.video_io import Video
from sparrow.errors import SparrowError
from sparrow.model.sam2_backbone import Sam2Preprocessor

OBJ_ID = 1
DIRECTIONS = ("forward", "backward", "both")
NO_OBJECT_SCORE = -1024.0  # SAM2's logit for "object absent"
REVERSE_BUFFER_BYTES = 256 * 2**20  # resized frames held for the backward pass (sets the default reverse_chunk)
_POINTER_FIELDS = ("object_pointer", "object_score_logits")
_MASK_FIELDS = ("pred_masks", "high_res_masks")


@dataclass
class PropagationCheckpoint:
    """Where a propagation stands after ``done`` yielded frames: the next frame is ``next_frame`` of part ``part``
    (the parts of a direction, see :meth:`MaskPropagator.propagate`), with SAM2's pruned state of one object:
    ``cond`` (key frame -> conditioning output), ``outputs`` (tracked frame -> output kept for memory) and
    ``tracked`` (frame -> ``{"reverse": bool}``). Tensors stay on the session's state device."""

    part: int
    next_frame: int
    done: int
    cond: dict[int, dict[str, Any]]
    outputs: dict[int, dict[str, Any]]
    tracked: dict[int, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """Plain containers of tensors and numbers (for ``torch.save``; reload with ``weights_only=True``)."""
        return {
            "part": self.part,
            "next_frame": self.next_frame,
            "done": self.done,
            "cond": self.cond,
            "outputs": self.outputs,
            "tracked": self.tracked,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PropagationCheckpoint:
        return cls(
            int(data["part"]),
            int(data["next_frame"]),
            int(data["done"]),
            dict(data["cond"]),
            dict(data["outputs"]),
            dict(data["tracked"]),
        )


class BoundedInferenceSession(Sam2VideoInferenceSession):
    """An HF inference session that holds only a few frames but reports the whole video's length.

    SAM2 reads ``num_frames`` to bound object-pointer look-ups; reporting the full length keeps its behaviour
    identical to a session loaded with every frame.
    """

    def __init__(self, total_frames: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.total_frames = int(total_frames)

    @property
    def num_frames(self) -> int:
        return self.total_frames


def prompt_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """A mask ``[..., H, W]`` (bool or {0, 1}) -> float ``[..., S, S]`` in {0, 1}: the resize Sam2VideoProcessor
    applies to mask inputs (bilinear with antialiasing, then ``>= 0.5``); unchanged values when already ``S x S``."""
    m = mask.float()
    if tuple(m.shape[-2:]) == (size, size):
        return m
    lead = m.shape[:-2]
    m = F.interpolate(
        m.reshape(-1, 1, *m.shape[-2:]), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return (m >= 0.5).float().reshape(*lead, size, size)


def select_cond_frames(frame_idx: int, cond_frames: list[int], max_cond_frames: int) -> list[int]:
    """The conditioning frames SAM2 attends to from ``frame_idx``: all of them, or at most ``max_cond_frames``:
    the closest before, the closest at/after, then the nearest others (``Sam2VideoModel._select_closest_cond_frames``).
    Returned in the order of ``cond_frames``."""
    if max_cond_frames < 0 or len(cond_frames) <= max_cond_frames:
        return list(cond_frames)
    chosen: set[int] = set()
    before = [t for t in cond_frames if t < frame_idx]
    after = [t for t in cond_frames if t >= frame_idx]
    if before:
        chosen.add(max(before))
    if after:
        chosen.add(min(after))
    rest = sorted((t for t in cond_frames if t not in chosen), key=lambda t: abs(t - frame_idx))
    chosen.update(rest[: max(0, max_cond_frames - len(chosen))])
    return [t for t in cond_frames if t in chosen]


class MaskPropagator:
    """Propagate key-frame masks of one object through a video with SAM2 memory, forward and/or backward.

    ``sam`` is shared with the pixel decoder (it is put in eval mode during propagation and restored after);
    ``offload_to_cpu`` keeps the memory bank and frames on the CPU while SAM2 runs on its own device;
    ``reverse_chunk`` frames are read at a time for the backward pass (a video file is decoded forwards; default:
    as many resized frames as ``REVERSE_BUFFER_BYTES`` holds).
    """

    def __init__(
        self,
        sam: Sam2VideoModel,
        preprocessor: Sam2Preprocessor,
        max_cond_frames: int = 4,
        offload_to_cpu: bool = True,
        reverse_chunk: int | None = None,
    ) -> None:
        if max_cond_frames < 1:
            raise SparrowError(f"max_cond_frames must be at least 1, got {max_cond_frames}")
        if preprocessor.image_size != sam.config.image_size:
            raise SparrowError(
                f"preprocessor size {preprocessor.image_size} != SAM2 image size {sam.config.image_size}"
            )
        self.sam = sam
        self.preprocessor = preprocessor
        self.max_cond_frames = int(max_cond_frames)
        self.offload_to_cpu = offload_to_cpu
        size = int(sam.config.image_size)
        default_chunk = max(32, REVERSE_BUFFER_BYTES // (3 * size * size))
        self.reverse_chunk = default_chunk if reverse_chunk is None else max(1, int(reverse_chunk))
        self.view = preprocessor.resized_view()
        self.session: BoundedInferenceSession | None = None  # the last run's session, for inspection

    # ------------------------------------------------------------------ public API
    def propagate(
        self,
        frames: Video | np.ndarray,
        prompts: Mapping[int, np.ndarray],
        num_frames: int | None = None,
        direction: str = "both",
        progress: bool = False,
        logits: bool = False,
        checkpoint_every: int = 0,
        on_checkpoint: Callable[[PropagationCheckpoint], None] | None = None,
        resume: PropagationCheckpoint | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(t, mask)`` (bool ``[H, W]``, the video's size) for every frame ``0..T-1`` exactly once.

        With ``logits=True`` it yields SAM2's low-resolution logits (float32 ``[S/4, S/4]``; untracked frames
        ``-1024``, SAM2's no-object score) instead; the mask is their bilinear upsampling to ``[H, W]`` > 0.

        ``prompts``: key frame index -> bool mask ``[H, W]``. Order of the frames:

        - ``"forward"``: ``0, 1, ..., T-1``; frames before the earliest key frame are not tracked (empty masks);
        - ``"backward"``: ``T-1, ..., 0``; frames after the latest key frame are not tracked (empty masks);
        - ``"both"``: earliest key frame ``k0, ..., T-1``, then ``k0-1, ..., 0``.

        ``checkpoint_every``/``on_checkpoint``: hand a :class:`PropagationCheckpoint` to ``on_checkpoint`` every
        that many yielded frames; ``resume``: continue from such a checkpoint (same video, prompts and direction),
        yielding only the frames after it.

        Input is checked before anything runs (bad prompts raise :class:`SparrowError` right away).
        """
        if direction not in DIRECTIONS:
            raise SparrowError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        frames = _as_video(frames)
        info = frames.info
        total = info.num_frames if num_frames is None else int(num_frames)
        if total < 1:
            raise SparrowError(f"num_frames must be at least 1, got {total}")
        masks = self._check_prompts(prompts, total, info.height, info.width)
        if checkpoint_every < 0 or (checkpoint_every and on_checkpoint is None):
            raise SparrowError("checkpoint_every must be >= 0 and needs on_checkpoint")
        hooks = (int(checkpoint_every), on_checkpoint, resume)
        return self._run(frames, masks, total, info.height, info.width, direction, progress, logits, hooks)

    def propagate_all(
        self,
        frames: Video | np.ndarray,
        prompts: Mapping[int, np.ndarray],
        num_frames: int | None = None,
        direction: str = "both",
        progress: bool = False,
    ) -> np.ndarray:
        """All masks at once: bool ``[T, H, W]`` (see :meth:`propagate`)."""
        frames = _as_video(frames)
        info = frames.info
        total = info.num_frames if num_frames is None else int(num_frames)
        out = np.zeros((total, info.height, info.width), dtype=bool)
        for t, mask in self.propagate(frames, prompts, num_frames=total, direction=direction, progress=progress):
            out[t] = mask
        return out

    @property
    def memory_window(self) -> int:
        """How many tracked frames behind the current one SAM2 may read (memory slots or object pointers)."""
        cfg = self.sam.config
        return max(cfg.num_maskmem - 1, cfg.max_object_pointers_in_encoder - 1, 0)

    # ------------------------------------------------------------------ input checks
    @staticmethod
    def _check_prompts(prompts: Mapping[int, np.ndarray], total: int, height: int, width: int) -> dict[int, np.ndarray]:
        if not isinstance(prompts, Mapping) or not prompts:
            raise SparrowError("propagation needs at least one key-frame mask prompt")
        masks: dict[int, np.ndarray] = {}
        for key, mask in prompts.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
                raise SparrowError(f"key frame index must be an integer, got {key!r}")
            if not 0 <= int(key) < total:
                raise SparrowError(f"key frame {int(key)} out of range for a video of {total} frames")
            arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
            if arr.shape != (height, width):
                raise SparrowError(
                    f"prompt mask for frame {int(key)} has shape {list(arr.shape)}, "
                    f"the video frames are {[height, width]}"
                )
            masks[int(key)] = arr > 0.5 if arr.dtype.kind == "f" else arr.astype(bool)
        return dict(sorted(masks.items()))

    # ------------------------------------------------------------------ the run
    def _new_session(self, total: int, height: int, width: int) -> BoundedInferenceSession:
        param = next(self.sam.parameters())
        device = param.device
        state = torch.device("cpu") if self.offload_to_cpu else device
        return BoundedInferenceSession(
            total_frames=total,
            video_height=height,
            video_width=width,
            inference_device=device,
            inference_state_device=state,
            video_storage_device=state,
            dtype=param.dtype,
        )

    def _add_frame(self, session: BoundedInferenceSession, t: int, resized: torch.Tensor) -> None:
        """Give SAM2 frame ``t`` (uint8 ``[3, S, S]`` from ``Sam2Preprocessor.resize``)."""
        session.add_new_frame(self.preprocessor.normalize(resized[None])[0], frame_idx=t)

    def _prompt_mask(self, mask: np.ndarray) -> torch.Tensor:
        """bool ``[H, W]`` -> float ``[1, 1, S, S]`` in {0, 1} (:func:`prompt_mask`)."""
        return prompt_mask(torch.from_numpy(mask), self.sam.config.image_size)[None, None]

    def _run(
        self,
        frames: Video | np.ndarray,
        prompts: dict[int, np.ndarray],
        total: int,
        height: int,
        width: int,
        direction: str,
        progress: bool,
        logits: bool = False,
        hooks: tuple[int, Callable[[PropagationCheckpoint], None] | None, PropagationCheckpoint | None] = (
            0,
            None,
            None,
        ),
    ) -> Iterator[tuple[int, np.ndarray]]:
        every, on_checkpoint, resume = hooks
        was_training = self.sam.training
        self.sam.eval()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=resume.done if resume else 0, desc="propagate", unit="frame")
        try:
            session = self._new_session(total, height, width)
            self.session = session
            obj_idx = session.obj_id_to_idx(OBJ_ID)
            if resume is None:
                cond_store = self._condition(session, obj_idx, frames, prompts)
            else:
                cond_store = dict(resume.cond)
                session.processed_frames = {}  # what conditioning would have created (it adds the key frames)
                session.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"].update(resume.outputs)
                session.frames_tracked_per_obj[obj_idx].update(resume.tracked)
            first, last = min(cond_store), max(cond_store)
            low_res = self.sam.prompt_encoder.mask_input_size
            parts = _parts(direction, first, last, total)
            part, start, done = (resume.part, resume.next_frame, resume.done) if resume else (0, parts[0][1], 0)
            for p in range(part, len(parts)):
                kind, begin, stop, step, reserve = parts[p]
                begin = start if p == part else begin
                if kind == "untracked":
                    items = (
                        (t, self._untracked(low_res, height, width, logits)) for t in range(begin, stop + step, step)
                    )
                else:
                    items = self._pass(session, obj_idx, cond_store, frames, begin, stop, step, reserve, logits)
                for t, item in items:
                    if bar is not None:
                        bar.update(1)
                    yield t, item
                    done += 1
                    if every and done % every == 0 and done < total:
                        nxt = (p, t + step) if t != stop else (p + 1, parts[p + 1][1])
                        on_checkpoint(self._checkpoint(session, obj_idx, cond_store, *nxt, done))
        finally:
            if bar is not None:
                bar.close()
            self.sam.train(was_training)

    @staticmethod
    def _untracked(low_res: tuple[int, int], height: int, width: int, logits: bool) -> np.ndarray:
        if logits:
            return np.full(low_res, NO_OBJECT_SCORE, dtype=np.float32)
        return np.zeros((height, width), dtype=bool)

    @staticmethod
    def _checkpoint(
        session: BoundedInferenceSession,
        obj_idx: int,
        cond_store: dict[int, dict],
        part: int,
        next_frame: int,
        done: int,
    ) -> PropagationCheckpoint:
        outputs = session.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"]
        tracked = session.frames_tracked_per_obj[obj_idx]
        return PropagationCheckpoint(
            part,
            next_frame,
            done,
            {k: dict(v) for k, v in cond_store.items()},
            {k: dict(v) for k, v in outputs.items()},
            {k: dict(v) for k, v in tracked.items()},
        )

    def _condition(
        self, session: BoundedInferenceSession, obj_idx: int, frames: Video | np.ndarray, prompts: dict[int, np.ndarray]
    ) -> dict[int, dict]:
        """Run SAM2 on every key frame with its mask input; return the conditioning outputs (frame -> output)."""
        cond = session.output_dict_per_obj[obj_idx]["cond_frame_outputs"]
        for k, resized in frames.iter(list(prompts), view=self.view):
            self._add_frame(session, k, resized)
            session.add_mask_inputs(obj_idx, k, self._prompt_mask(prompts[k]))
            session.remove_point_inputs(obj_idx, k)
            session.obj_with_new_inputs = [OBJ_ID]
            self.sam(inference_session=session, frame_idx=k)
            session.remove_mask_inputs(obj_idx, k)
            session.processed_frames.pop(k, None)
            cond[k].pop("high_res_masks", None)  # 4 MB at 1024²; SAM2 never reads it again
        return dict(cond)

    def _frames_in_order(self, frames: Video, start: int, stop: int, step: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Frames ``start, start+step, ..., stop`` as uint8 ``[3, S, S]``, read lazily (backwards: ``reverse_chunk``
        frames at a time, held resized, so a chunk costs ``reverse_chunk * 3 * S * S`` bytes whatever the video)."""
        if step > 0:
            yield from frames.iter(range(start, stop + 1), view=self.view)
            return
        yield from frames.iter_backward(start, stop, self.reverse_chunk, view=self.view)

    def _pass(
        self,
        session: BoundedInferenceSession,
        obj_idx: int,
        cond_store: dict[int, dict],
        frames: Video | np.ndarray,
        start: int,
        stop: int,
        step: int,
        reserve: list[tuple[int, int]],
        logits: bool,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Track frames ``start..stop`` (inclusive) in direction ``step``; prune the session after each frame."""
        cond = session.output_dict_per_obj[obj_idx]["cond_frame_outputs"]
        size = (session.video_height, session.video_width)
        for t, frame in self._frames_in_order(frames, start, stop, step):
            selected = select_cond_frames(t, list(cond_store), self.max_cond_frames)
            if list(cond) != selected:
                cond.clear()
                cond.update((k, cond_store[k]) for k in selected)
            if t not in cond_store:
                self._add_frame(session, t, frame)
            out = self.sam(inference_session=session, frame_idx=t, reverse=step < 0)
            session.processed_frames.pop(t, None)
            low_res = out.pred_masks.float().cpu()  # [1, 1, S/4, S/4] logits
            self._prune(session, obj_idx, [(t + step, step)] + reserve)
            if logits:
                yield t, low_res[0, 0].numpy()
            else:
                yield t, (F.interpolate(low_res, size=size, mode="bilinear", align_corners=False)[0, 0] > 0).numpy()

    def _prune(self, session: BoundedInferenceSession, obj_idx: int, upcoming: list[tuple[int, int]]) -> None:
        """Drop from the tracked-frame outputs whatever no upcoming frame can read.

        ``upcoming``: ``(next frame, step)`` of the current pass and of passes still to run. A tracked frame ``f``
        that lies ``d`` frames behind such a frame is read as a memory if ``d < num_maskmem`` and for its object
        pointer if ``d < min(T, max_object_pointers_in_encoder)``; later frames of a pass lie further away.
        """
        cfg = self.sam.config
        mem_reach = cfg.num_maskmem - 1
        ptr_reach = min(session.num_frames, cfg.max_object_pointers_in_encoder) - 1
        outputs = session.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"]
        tracked = session.frames_tracked_per_obj[obj_idx]
        for f in list(outputs):
            level = 0  # 0 drop, 1 object pointer only, 2 memory features too
            for g, step in upcoming:
                d = (g - f) * step
                if 1 <= d <= mem_reach:
                    level = 2
                elif 1 <= d <= ptr_reach:
                    level = max(level, 1)
            out = outputs[f]
            if level == 0:
                del outputs[f]
                tracked.pop(f, None)
            elif level == 1:
                for key in [k for k in out if k not in _POINTER_FIELDS]:
                    del out[key]
            else:
                for key in _MASK_FIELDS:
                    out.pop(key, None)
        for f in [f for f in tracked if f not in outputs]:
            del tracked[f]


Part = tuple[str, int, int, int, list[tuple[int, int]]]  # kind, first frame, last frame, step, reserve


def _parts(direction: str, first: int, last: int, total: int) -> list[Part]:
    """The passes of a direction, in order: ``("track"|"untracked", begin, stop, step, reserve)`` (inclusive);
    ``reserve`` lists ``(next frame, step)`` of passes still to come whose memory reads must survive pruning."""
    if direction == "forward":
        parts = [("untracked", 0, first - 1, 1, []), ("track", first, total - 1, 1, [])]
    elif direction == "backward":
        parts = [("untracked", total - 1, last + 1, -1, []), ("track", last, 0, -1, [])]
    elif first == 0:
        parts = [("track", 0, total - 1, 1, [])]
    else:  # the backward pass starts next to the key frame and reads the forward pass's first frames
        parts = [("track", first, total - 1, 1, [(first - 1, -1)]), ("track", first - 1, 0, -1, [])]
    return [p for p in parts if (p[2] - p[1]) * p[3] >= 0]  # drop empty ranges


def _as_video(frames: Video | np.ndarray) -> Video:
    """The frames as a :class:`Video`: an opened one, or an in-memory array ``[T, H, W, 3]`` (no file I/O here)."""
    if isinstance(frames, Video):
        return frames
    if isinstance(frames, np.ndarray):
        return Video.open(frames)
    raise SparrowError(
        f"propagation reads an opened Video or a frame array, got {type(frames).__name__} (use Video.open)"
    )


__all__ = ["BoundedInferenceSession", "MaskPropagator", "PropagationCheckpoint", "prompt_mask", "select_cond_frames"]
