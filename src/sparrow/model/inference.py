"""From a video and a sentence to an answer and per-frame masks (``SparrowModel.segment``).

Steps: sample ``vlm_frames`` frames -> VLM generates the answer (greedy, KV cache) -> ``[BOX]``/``[SEG]`` embeddings
-> key frame (``auto``: among the VLM's frames, the one where the ``[BOX]`` selection scores highest) -> proposer +
selector choose the box -> SAM2 decodes the key-frame mask from box + ``[SEG]`` -> all frames by SAM2 memory
propagation (``track``, forward and backward, bounded memory), by decoding every frame with the key-frame box
(``framewise``, the authors' default), or by decoding every frame with the box the ``[BOX]`` selects on that frame
(``perframe``, the way training supervises selection). Masks are kept as COCO RLE so memory does not grow with video
length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sparrow.data.rle import RLE, decode_rle, encode_mask, mask_to_box
from sparrow.data.video_io import VideoSource, iter_frames, probe_video, read_frames, sample_indices
from sparrow.errors import SparrowError
from sparrow.model.config import MODES
from sparrow.model.pixel_decoder import ImageFeatures, PixelDecoder
from sparrow.model.prompt_tokens import pair_prompt_tokens, teacher_forced_pairs
from sparrow.model.selector import select_boxes
from sparrow.model.vlm_qwen2_5 import VLMSample

if TYPE_CHECKING:
    from sparrow.model.sparrow_model import PromptEmbeddings, SparrowModel


@dataclass
class TargetResult:
    """One referred target: a mask per frame (RLE, None where empty), its box per frame, and how it was found."""

    rles: list[RLE | None]
    boxes: list[list[float] | None]
    key_frame: int
    key_box: list[float] | None          # selected (refined) proposal box on the key frame, pixels xyxy
    selection_score: float | None        # sigmoid selection score of that box (None without [BOX])

    def mask(self, t: int, size: tuple[int, int]) -> np.ndarray:
        rle = self.rles[t]
        return np.zeros(size, dtype=bool) if rle is None else decode_rle(rle, expected_size=size)


@dataclass
class SegmentationResult:
    """Answer and masks for one (video, query)."""

    query: str
    question: str
    answer: str
    targets: list[TargetResult]
    vlm_frame_indices: list[int]
    num_frames: int
    height: int
    width: int
    fps: float
    mode: str
    forced_prompt: bool = False          # the answer had no [SEG]: "[BOX] [SEG]" was appended and teacher-forced
    orphan_boxes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def masks(self) -> np.ndarray:
        """Union over targets, bool ``[T, H, W]``."""
        out = np.zeros((self.num_frames, self.height, self.width), dtype=bool)
        for target in self.targets:
            for t in range(self.num_frames):
                if target.rles[t] is not None:
                    out[t] |= target.mask(t, (self.height, self.width))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query, "question": self.question, "answer": self.answer, "mode": self.mode,
            "num_frames": self.num_frames, "height": self.height, "width": self.width, "fps": self.fps,
            "vlm_frame_indices": self.vlm_frame_indices, "forced_prompt": self.forced_prompt, "orphan_boxes": self.orphan_boxes,
            "targets": [
                {
                    "index": k + 1, "key_frame": tr.key_frame, "key_box": tr.key_box, "selection_score": tr.selection_score,
                    "frames": [{"frame": t, "rle": r, "box": b} for t, (r, b) in enumerate(zip(tr.rles, tr.boxes))],
                }
                for k, tr in enumerate(self.targets)
            ],
            **self.extra,
        }


@dataclass
class _KeyChoice:
    frame: int
    box: torch.Tensor | None        # [4] normalised xyxy
    score: float | None
    mask_logits: torch.Tensor       # [S/4, S/4]


def _encode(model: SparrowModel, frames: np.ndarray) -> ImageFeatures:
    pixels = model.preprocessor(frames).to(model.device)
    return model.pixel_decoder.encode(pixels)


def _choose_key(model: SparrowModel, prompts: PromptEmbeddings, k: int, features: ImageFeatures, frame_ids: list[int]) -> _KeyChoice:
    """For target ``k``: the frame among ``frame_ids`` (features batch) whose prompt fits best, its box and mask."""
    cfg = model.config.selection
    seg = prompts.seg[k : k + 1]
    if bool(prompts.has_box[k]):
        top = model.candidates(features)
        best = None
        for i in range(len(frame_ids)):
            out = model.select(prompts.box[k : k + 1], top, i)
            idx, boxes = select_boxes(out, cfg.threshold, cfg.max_boxes)
            score = float(torch.sigmoid(out.logits[0, idx[0][0]]))
            if best is None or score > best[0]:
                best = (score, i, boxes[0][0])
        score, i, box = best
        logits = model.decode(features, torch.tensor([i], device=seg.device), seg, box[None]).mask_logits[0]
        return _KeyChoice(frame_ids[i], box, score, logits)
    out = model.decode(features, torch.arange(len(frame_ids), device=seg.device), seg.expand(len(frame_ids), -1), None)
    i = int(out.object_score_logits.argmax())
    return _KeyChoice(frame_ids[i], None, None, out.mask_logits[i])


def _generate_prompts(model: SparrowModel, sample: VLMSample, max_new_tokens: int) -> tuple[str, PromptEmbeddings, bool, int]:
    vlm = model.vlm
    batch = vlm.collate([sample], padding_side="left").to(model.device)
    gen = vlm.generate(batch, max_new_tokens=max_new_tokens)[0]
    pairs = pair_prompt_tokens(gen.tokens, vlm.box_token_id, vlm.seg_token_id)
    if len(pairs):
        return gen.text.strip(), model.prompt_embeddings(gen.states, pairs), False, pairs.orphan_boxes
    # Defined fallback (peers.md §4.8): no [SEG] generated -> append the dual prompt and read it by teacher forcing.
    answer = (gen.text.strip() + " [BOX] [SEG].").strip()
    forced = vlm.collate([VLMSample(sample.frames, sample.question, answer, sample.seconds_per_frame, sample.tsf_crops)]).to(model.device)
    hidden = vlm.teacher_force(forced)
    pairs = teacher_forced_pairs(forced.input_ids, forced.attention_mask, vlm.box_token_id, vlm.seg_token_id)[0]
    return answer, model.prompt_embeddings(hidden[0, :-1], pairs), True, pairs.orphan_boxes


def tsf_crops_from_track(model: SparrowModel, video: VideoSource, boxes: Sequence[Sequence[float] | None], size: tuple[int, int]) -> tuple[np.ndarray, list[list[float]]]:
    """TSF crops from a target track (one pixel box or None per frame): the K medoid frames of the track, as the
    offline builder picks them (appearance + geometry K-means), cut from the original frames.
    Returns crops uint8 ``[K, s, s, 3]`` and the entries ``[[frame, x0, y0, x1, y1], ...]``."""
    from sparrow.tsf.build import BuildConfig, medoid_entries
    from sparrow.tsf.crops import tsf_crop_images

    def get_frames(indices: list[int]) -> dict[int, np.ndarray]:
        return dict(zip(indices, read_frames(video, indices)))

    entries = medoid_entries(get_frames, list(boxes), size, BuildConfig(k=model.config.tsf_k))
    crops = tsf_crop_images(video, entries, model.config.tsf_crop_size)
    return crops, [[e.frame, *e.box] for e in entries]


@torch.no_grad()
def segment(
    model: SparrowModel,
    video: VideoSource,
    query: str,
    mode: str | None = None,
    key_frame: int | str | None = None,
    tsf_boxes: Mapping[int, Sequence[float]] | None = None,
    self_tsf: bool | None = None,
    progress: bool = False,
    max_new_tokens: int | None = None,
) -> SegmentationResult:
    """Answer ``query`` about ``video`` and segment each referred target in every frame.

    ``mode``: "track" | "framewise" | "perframe" (default: the config's); ``key_frame``: "auto" or a frame index.
    TSF at inference: ``tsf_boxes`` (frame index -> pixel box of the target, from the user) are turned into K crops
    shown to the VLM; ``self_tsf`` runs once without TSF, takes the predicted track as the TSF source and runs
    again (default: on when the config says ``tsf="train+infer"``).
    """
    cfg = model.config
    if self_tsf is None:
        self_tsf = cfg.tsf == "train+infer" and tsf_boxes is None
    if tsf_boxes is not None or self_tsf:
        info = probe_video(video)
        if tsf_boxes is not None:
            bad = [t for t in tsf_boxes if not 0 <= int(t) < info.num_frames]
            if bad:
                raise SparrowError(f"TSF box on frame {bad[0]} out of range for {info.num_frames} frames")
            track = [tsf_boxes.get(t) for t in range(info.num_frames)]
            source = "boxes"
        else:
            first = segment(model, video, query, mode, key_frame, self_tsf=False, progress=progress, max_new_tokens=max_new_tokens)
            track = first.targets[0].boxes
            source = "self"
            if all(b is None for b in track):  # nothing to crop: the first pass is the answer
                first.extra["tsf"] = {"source": source, "entries": [], "note": "first pass found no target; TSF not applied"}
                return first
        crops, entries = tsf_crops_from_track(model, video, track, (info.height, info.width))
        result = _segment_once(model, video, query, mode, key_frame, crops, progress, max_new_tokens)
        result.extra["tsf"] = {"source": source, "entries": entries}
        return result
    return _segment_once(model, video, query, mode, key_frame, None, progress, max_new_tokens)


def _segment_once(
    model: SparrowModel, video: VideoSource, query: str, mode: str | None, key_frame: int | str | None,
    tsf_crops: np.ndarray | None, progress: bool, max_new_tokens: int | None,
) -> SegmentationResult:
    cfg = model.config
    mode = mode or cfg.mode
    if mode not in MODES:
        raise SparrowError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if not isinstance(query, str) or not query.strip():
        raise SparrowError("the query is empty")
    model.eval()
    info = probe_video(video)
    vlm_idx = sample_indices(info.num_frames, cfg.vlm_frames)
    vlm_frames = read_frames(video, vlm_idx)
    step = (vlm_idx[1] - vlm_idx[0]) if len(vlm_idx) > 1 else 1
    question = cfg.question_template.format(query=query.strip())
    sample = VLMSample(vlm_frames, question, seconds_per_frame=step / max(info.fps, 1e-6), tsf_crops=tsf_crops)
    answer, prompts, forced, orphans = _generate_prompts(model, sample, max_new_tokens or cfg.max_new_tokens)

    key = cfg.key_frame if key_frame is None else key_frame
    if key == "auto":
        cand_ids, cand_frames = vlm_idx, vlm_frames
    else:
        k = int(key)
        if not 0 <= k < info.num_frames:
            raise SparrowError(f"key frame {k} out of range for {info.num_frames} frames")
        cand_ids, cand_frames = [k], read_frames(video, [k])
    features = _encode(model, cand_frames)
    size = (info.height, info.width)
    targets = []
    for k in range(len(prompts.seg)):
        choice = _choose_key(model, prompts, k, features, cand_ids)
        key_mask = PixelDecoder.upsample(choice.mask_logits[None], size)[0] > 0
        if mode == "track":
            frames_out = _track(model, video, info.num_frames, choice, key_mask.cpu().numpy(), prompts, k, progress)
        elif mode == "perframe" and bool(prompts.has_box[k]):
            frames_out = _framewise(model, video, info.num_frames, size, prompts.seg[k], choice.box, progress, box_embedding=prompts.box[k])
        else:  # framewise, or perframe for a [SEG] without [BOX] (nothing to select with)
            frames_out = _framewise(model, video, info.num_frames, size, prompts.seg[k], choice.box, progress)
        scale = torch.tensor([info.width, info.height, info.width, info.height], dtype=torch.float32)
        key_box = None if choice.box is None else [round(float(v), 2) for v in choice.box.float().cpu() * scale]
        targets.append(
            TargetResult(
                rles=[r for r, _ in frames_out], boxes=[b for _, b in frames_out], key_frame=choice.frame, key_box=key_box,
                selection_score=choice.score,
            )
        )
    return SegmentationResult(
        query=query, question=question, answer=answer, targets=targets, vlm_frame_indices=vlm_idx, num_frames=info.num_frames,
        height=info.height, width=info.width, fps=info.fps, mode=mode, forced_prompt=forced, orphan_boxes=orphans,
    )


FrameOutput = tuple[RLE | None, list[float] | None]


def _frame_output(mask: np.ndarray) -> FrameOutput:
    """A frame's mask ``[H, W]`` as (RLE, box), both None when empty."""
    return (encode_mask(mask), mask_to_box(mask)) if mask.any() else (None, None)


def _track(model: SparrowModel, video: VideoSource, num_frames: int, choice: _KeyChoice, key_mask: np.ndarray, prompts: PromptEmbeddings, k: int, progress: bool) -> list[FrameOutput]:
    """SAM2 memory propagation from the key-frame mask (and re-prompted masks every ``reprompt_every`` frames)."""
    from sparrow.model.propagator import MaskPropagator

    masks = {choice.frame: key_mask}
    every = model.config.reprompt_every
    if every > 0:
        extra = [t for t in range(num_frames) if t != choice.frame and abs(t - choice.frame) % every == 0]
        if extra:
            feats = _encode(model, read_frames(video, extra))
            for i, t in enumerate(extra):
                again = _choose_key(model, prompts, k, ImageFeatures(feats.embedding[i : i + 1], [h[i : i + 1] for h in feats.high_res]), [t])
                masks[t] = (PixelDecoder.upsample(again.mask_logits[None], key_mask.shape)[0] > 0).cpu().numpy()
    propagator = MaskPropagator(model.sam, model.preprocessor)
    outputs: list[FrameOutput] = [(None, None)] * num_frames
    seen = 0
    for t, mask in propagator.propagate(video, masks, num_frames=num_frames, direction="both", progress=progress):
        outputs[t] = _frame_output(mask)
        seen += 1
    if seen != num_frames:
        raise RuntimeError(f"propagation returned {seen} of {num_frames} frames")
    return outputs


def _framewise(
    model: SparrowModel, video: VideoSource, num_frames: int, size: tuple[int, int], seg: torch.Tensor, box: torch.Tensor | None,
    progress: bool, chunk: int = 8, box_embedding: torch.Tensor | None = None,
) -> list[FrameOutput]:
    """Decode every frame independently with ``[SEG]`` ``[C]`` and a box (no memory): the key-frame box ``[4]``
    (the release's mode), or, given the ``[BOX]`` embedding ``[C]``, the box it selects among that frame's proposals."""
    outputs: list[FrameOutput] = []
    buffer: list[np.ndarray] = []
    cfg = model.config.selection

    def flush() -> None:
        feats = _encode(model, np.stack(buffer))
        n = len(buffer)
        boxes = None if box is None else box[None].expand(n, -1)
        if box_embedding is not None:
            top = model.candidates(feats)
            boxes = torch.stack([select_boxes(model.select(box_embedding[None], top, i), cfg.threshold, 1)[1][0][0] for i in range(n)])
        out = model.pixel_decoder.decode(feats, seg[None].expand(n, -1), boxes)
        for m in (PixelDecoder.upsample(out.mask_logits, size) > 0).cpu().numpy():
            outputs.append(_frame_output(m))
        buffer.clear()

    for _, frame in tqdm(iter_frames(video), total=num_frames, disable=not progress, desc="perframe" if box_embedding is not None else "framewise", unit="frame"):
        buffer.append(frame)
        if len(buffer) == chunk:
            flush()
    if buffer:
        flush()
    return outputs
