"""A target's mask on every frame, once its key frame and prompt are chosen (the three modes).

- ``track``: SAM2 memory propagation from the key-frame mask (and re-prompted masks every ``reprompt_every``
  frames), forward then backward, in bounded memory (``model/propagator.py``);
- ``framewise``: every frame decoded independently with ``[SEG]`` and the key-frame box (the authors' mode);
- ``perframe``: every frame decoded with ``[SEG]`` and the box the ``[BOX]`` embedding selects among that frame's
  proposals (what training supervises); for a model that selects tracklets, the box of the chosen tracklet on that
  frame (``TrackGuide.box_at``), snapped to the frame's best-overlapping tightened proposal, and no mask where the
  tracklet is absent; when the answer took several tracklets (``SparrowConfig.track_set_threshold``), the union of
  their masks.

Each frame's mask is turned into (RLE, box) as soon as it is computed, so memory does not grow with the video.
:func:`track_frames` and :func:`decoded_frames` yield the frames as they are computed (in propagation order for
``track``) and can start again from a checkpoint (``pipeline/stream.py`` uses them for long videos and
``--resume``); :func:`track_masks` and :func:`decoded_masks` collect them in frame order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torchvision.ops import box_iou
from tqdm.auto import tqdm

from sparrow.data.rle import RLE, encode_mask, mask_to_box
from sparrow.data.video_io import Video
from sparrow.model.pixel_decoder import ImageFeatures, PixelDecoder
from sparrow.model.propagator import MaskPropagator, PropagationCheckpoint
from sparrow.model.proposer import Proposals
from sparrow.model.selector import select_boxes
from sparrow.model.sparrow_model import PromptEmbeddings, SparrowModel
from sparrow.model.tracklets import TrackGuide
from sparrow.pipeline.prompting import KeyChoice, choose_key, encode_frames, frame_features

FrameOutput = tuple[RLE | None, list[float] | None]
FRAMEWISE_CHUNK = 8  # frames encoded per SAM2 batch in framewise/perframe (memory: 8 x SAM2 features)
SNAP_IOU = 0.5  # a tracklet's box on a frame is replaced by the frame's tightened proposal that overlaps it this much


def frame_output(mask: np.ndarray) -> FrameOutput:
    """A frame's bool mask ``[H, W]`` as (RLE, pixel box xyxy), both None when empty."""
    return (encode_mask(mask), mask_to_box(mask)) if mask.any() else (None, None)


def upsampled_mask(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Low-res logits ``[S/4, S/4]`` -> bool mask ``[H, W]``."""
    return (PixelDecoder.upsample(logits[None], size)[0] > 0).cpu().numpy()


def track_frames(
    model: SparrowModel,
    video: Video,
    choice: KeyChoice,
    prompts: PromptEmbeddings,
    target: int,
    progress: bool,
    reverse_chunk: int | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[PropagationCheckpoint], None] | None = None,
    resume: PropagationCheckpoint | None = None,
) -> Iterator[tuple[int, FrameOutput]]:
    """SAM2 memory propagation from the key-frame mask, forward then backward through ``video``: yields
    ``(t, (rle, box))`` in propagation order. Re-prompted frames (``reprompt_every``) take the dual prompt's mask
    there: for a model that selects tracklets, the chosen tracklet's (as ``perframe`` decodes it; none where the
    tracklet is absent), else the box the ``[BOX]`` selects on that frame; checkpoints and ``resume`` as in
    :meth:`MaskPropagator.propagate`."""
    size = (video.info.height, video.info.width)
    masks = {choice.frame: upsampled_mask(choice.mask_logits, size)}
    every = model.config.reprompt_every
    if every > 0:
        extra = [t for t in range(video.num_frames) if t != choice.frame and abs(t - choice.frame) % every == 0]
        if extra and resume is None:  # a resumed run restarts from SAM2 state that already holds the re-prompts
            feats = encode_frames(model, video.read(extra))
            if choice.track is not None:  # the chosen tracklet(s) on those frames, as perframe decodes them
                seg = prompts.seg[target]
                guided, present = _guided_masks(model, feats, seg, [choice.track, *choice.others], extra, size)
                masks.update({t: guided[i] for i, t in enumerate(extra) if present[i]})
            else:
                for i, t in enumerate(extra):
                    again = choose_key(model, prompts, target, frame_features(feats, i), [t])
                    masks[t] = upsampled_mask(again.mask_logits, size)
    propagator = MaskPropagator(model.sam, model.preprocessor, reverse_chunk=reverse_chunk)
    for t, mask in propagator.propagate(
        video,
        masks,
        direction="both",
        progress=progress,
        checkpoint_every=checkpoint_every,
        on_checkpoint=on_checkpoint,
        resume=resume,
    ):
        yield t, frame_output(mask)


def track_masks(
    model: SparrowModel,
    video: Video,
    choice: KeyChoice,
    prompts: PromptEmbeddings,
    target: int,
    progress: bool,
    reverse_chunk: int | None = None,
) -> list[FrameOutput]:
    """:func:`track_frames` collected in frame order (one entry per frame)."""
    outputs: list[FrameOutput] = [(None, None)] * video.num_frames
    seen = 0
    for t, output in track_frames(model, video, choice, prompts, target, progress, reverse_chunk):
        outputs[t] = output
        seen += 1
    if seen != video.num_frames:
        raise RuntimeError(f"propagation returned {seen} of {video.num_frames} frames")
    return outputs


def decoded_frames(
    model: SparrowModel,
    video: Video,
    seg: torch.Tensor,
    box: torch.Tensor | None,
    progress: bool,
    box_embedding: torch.Tensor | None = None,
    chunk: int = FRAMEWISE_CHUNK,
    start: int = 0,
    guide: TrackGuide | None = None,
    others: Sequence[TrackGuide] = (),
) -> Iterator[tuple[int, FrameOutput]]:
    """Decode every frame from ``start`` on (a multiple of ``chunk``, so a resumed run batches frames as the
    uninterrupted one did) independently with ``[SEG]`` ``[C]`` and a box: the key-frame box ``[4]`` (framewise),
    or, given the ``[BOX]`` embedding ``[C]``, the box it selects among that frame's proposals (perframe), or, given
    the chosen tracklet ``guide``, its box on the frame (:func:`guided_boxes`; frames where it is absent get no
    mask), with ``others`` (more tracklets of the same answer) the union of each one's mask. Yields
    ``(t, (rle, box))`` in frame order."""
    if start % chunk:
        raise ValueError(f"start {start} is not a multiple of the chunk {chunk}")
    size = (video.info.height, video.info.width)
    threshold = model.config.selection.threshold
    t = start
    per_frame = box_embedding is not None or guide is not None
    for frames in _chunks(video, chunk, progress, "perframe" if per_frame else "framewise", start):
        feats = encode_frames(model, frames)
        n = len(frames)
        if guide is not None:
            masks, keep = _guided_masks(model, feats, seg, [guide, *others], list(range(t, t + n)), size)
            for i in range(n):
                yield t, frame_output(masks[i]) if bool(keep[i]) else (None, None)
                t += 1
            continue
        boxes = None if box is None else box[None].expand(n, -1)
        keep = torch.ones(n, dtype=torch.bool)
        if box_embedding is not None:
            top = model.candidates(feats)
            picked = [select_boxes(model.select(box_embedding[None], top, i), threshold, 1)[1][0][0] for i in range(n)]
            boxes = torch.stack(picked)
        out = model.pixel_decoder.decode(feats, seg[None].expand(n, -1), boxes)
        for i, mask in enumerate((PixelDecoder.upsample(out.mask_logits, size) > 0).cpu().numpy()):
            yield t, frame_output(mask) if bool(keep[i]) else (None, None)
            t += 1


def _guided_masks(
    model: SparrowModel,
    features: ImageFeatures,
    seg: torch.Tensor,
    guides: list[TrackGuide],
    frame_ids: list[int],
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """The union over ``guides`` of each tracklet's mask on ``frame_ids`` (the rows of ``features``), decoded from
    ``[SEG]`` ``[C]`` and its :func:`guided_boxes`: bool masks ``[n, H, W]`` and ``[n]`` whether any tracklet is
    present on the frame."""
    n = len(frame_ids)
    masks = np.zeros((n, *size), dtype=bool)
    keep = np.zeros(n, dtype=bool)
    top: Proposals | None = None  # the chunk's tightened proposals, computed once for all the tracklets
    for guide in guides:
        if top is None and any(guide.box_at(t) is not None for t in frame_ids):
            top = model.mask_boxes(features, model.candidates(features))
        guided = guided_boxes(model, features, guide, frame_ids, top)
        present = np.array([b is not None for b in guided])
        if not present.any():
            continue
        boxes = torch.stack([b if b is not None else seg.new_zeros(4) for b in guided])
        out = model.pixel_decoder.decode(features, seg[None].expand(n, -1), boxes)
        decoded = (PixelDecoder.upsample(out.mask_logits, size) > 0).cpu().numpy()
        masks |= decoded & present[:, None, None]
        keep |= present
    return masks, keep


def guided_boxes(
    model: SparrowModel,
    features: ImageFeatures,
    guide: TrackGuide,
    frame_ids: list[int],
    top: Proposals | None = None,
) -> list[torch.Tensor | None]:
    """The chosen tracklet's box ``[4]`` on each of ``frame_ids`` (the rows of ``features``), None where it is absent:
    ``guide.box_at(t)``, replaced by the frame's tightened proposal (``SparrowModel.mask_boxes``, or ``top`` when
    the caller computed them) that overlaps it by at least ``SNAP_IOU`` when there is one (between the VLM's frames
    the tracklet's box is interpolated; the proposal follows the object itself)."""
    guides = [guide.box_at(t) for t in frame_ids]
    if all(box is None for box in guides):  # the tracklet is absent from the whole chunk: nothing to snap
        return guides
    if top is None:
        top = model.mask_boxes(features, model.candidates(features))
    out: list[torch.Tensor | None] = []
    for i, box in enumerate(guides):
        if box is not None:
            box = box.to(top.boxes.device, top.boxes.dtype)
            cands = top.boxes[i][top.valid[i]]
            if len(cands):
                overlap = box_iou(cands, box[None])[:, 0]
                if float(overlap.max()) >= SNAP_IOU:
                    box = cands[int(overlap.argmax())]
        out.append(box)
    return out


def decoded_masks(
    model: SparrowModel,
    video: Video,
    seg: torch.Tensor,
    box: torch.Tensor | None,
    progress: bool,
    box_embedding: torch.Tensor | None = None,
    chunk: int = FRAMEWISE_CHUNK,
) -> list[FrameOutput]:
    """:func:`decoded_frames` of every frame, as a list in frame order."""
    return [output for _, output in decoded_frames(model, video, seg, box, progress, box_embedding, chunk)]


def _chunks(video: Video, chunk: int, progress: bool, desc: str, start: int = 0) -> Iterator[np.ndarray]:
    """The video's frames from ``start`` on, in order, ``chunk`` at a time, as uint8 ``[n, H, W, 3]``."""
    buffer: list[np.ndarray] = []
    frames = video.iter(range(start, video.num_frames))
    for _, frame in tqdm(frames, total=video.num_frames, initial=start, disable=not progress, desc=desc, unit="frame"):
        buffer.append(frame)
        if len(buffer) == chunk:
            yield np.stack(buffer)
            buffer.clear()
    if buffer:
        yield np.stack(buffer)
