"""From a video and a sentence to an answer and per-frame masks: :class:`SegmentationPipeline`.

The user-facing object around a :class:`~sparrow.model.sparrow_model.SparrowModel` (``sparrow.load`` returns one),
as a Hugging Face pipeline wraps a model. One call runs three stages:

1. **preprocess** (:meth:`SegmentationPipeline.preprocess`): check the options, open the video once
   (:class:`~sparrow.data.video_io.Video`), sample ``vlm_frames`` evenly spaced frames, build the VLM sample;
2. **forward**: the VLM answers (greedy, KV cache) -> ``[BOX]``/``[SEG]`` embeddings (``pipeline/prompting.py``) ->
   for each target the key frame (``auto``: among the VLM's frames, the one where the ``[BOX]`` selection scores
   highest) and its box -> SAM2 decodes the key-frame mask -> every frame's mask by ``track``, ``framewise`` or
   ``perframe`` (``pipeline/masks.py``);
3. **postprocess**: per-frame COCO RLE and boxes in a :class:`~sparrow.pipeline.results.SegmentationResult`.

TSF at inference wraps this: ``tsf_boxes`` (user boxes) or ``self_tsf`` (a first pass's predicted track) become K
medoid crops (the offline builder's selection, ``sparrow.tsf``) shown to the VLM in a second pass.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparrow.data.video_io import Video, VideoSource, sample_indices
from sparrow.errors import SparrowError
from sparrow.model.config import MODES, SparrowConfig
from sparrow.model.loading import from_pretrained, load_model, save_pretrained
from sparrow.model.sparrow_model import SparrowModel
from sparrow.model.vlm_qwen2_5 import VLMSample
from sparrow.pipeline.masks import decoded_masks, track_masks
from sparrow.pipeline.prompting import choose_key, encode_frames, generate_answer
from sparrow.pipeline.results import SegmentationResult, TargetResult
from sparrow.tsf.build import BuildConfig, medoid_entries
from sparrow.tsf.crops import tsf_crop_images

logger = logging.getLogger(__name__)
TSFBoxes = Mapping[int, Sequence[float]]


@dataclass
class SegmentSession:
    """The state of one pipeline call, built by :meth:`SegmentationPipeline.preprocess`.

    ``video`` is opened once and read by every stage; ``vlm_frames`` uint8 ``[F, H, W, 3]`` are the frames at
    ``vlm_indices``; ``key_frame`` is ``"auto"`` or a checked frame index.
    """

    video: Video
    query: str
    question: str
    mode: str
    key_frame: int | str
    vlm_indices: list[int]
    vlm_frames: np.ndarray
    sample: VLMSample
    max_new_tokens: int
    progress: bool


class SegmentationPipeline:
    """Segment what a sentence refers to in every frame of a video with a SPARROW model.

    ``model`` is a :class:`SparrowModel` (``sparrow.load(...)`` builds the pipeline from a preset or a folder).
    """

    def __init__(self, model: SparrowModel) -> None:
        self.model = model.eval()

    @property
    def config(self) -> SparrowConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> SegmentationPipeline:
        """A pipeline around the model folder at ``path`` (written by :meth:`save_pretrained`)."""
        return cls(from_pretrained(path, device))

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the model folder (config.json, vlm/, sam2/, model.safetensors) atomically."""
        return save_pretrained(self.model, path)

    # ------------------------------------------------------------------------------------------ the call
    @torch.no_grad()
    def segment(
        self,
        video: VideoSource | Video,
        query: str,
        mode: str | None = None,
        key_frame: int | str | None = None,
        tsf_boxes: TSFBoxes | None = None,
        self_tsf: bool | None = None,
        progress: bool = False,
        max_new_tokens: int | None = None,
    ) -> SegmentationResult:
        """Answer ``query`` about ``video`` and segment each referred target in every frame.

        Args:
            video: a video file, a frame folder, a list of frames (paths, PIL images, arrays), an array
                ``[T, H, W, 3]`` uint8, or an opened :class:`~sparrow.data.video_io.Video` (reused as it is).
            query: the referring sentence.
            mode: ``"track"`` | ``"framewise"`` | ``"perframe"`` (default: the model config's).
            key_frame: ``"auto"`` or a frame index for the dual prompt (default: the config's).
            tsf_boxes: frame index -> pixel box ``[x0, y0, x1, y1]`` of the target, turned into the K TSF crops
                shown to the VLM.
            self_tsf: run once without TSF, take the predicted track as the TSF source, and run again (default:
                on when the config says ``tsf="train+infer"`` and no ``tsf_boxes`` are given).
            progress: show progress bars.
            max_new_tokens: generation budget (default: the config's).

        Returns:
            A :class:`SegmentationResult`: the answer, and per target an RLE mask and a box per frame.
        """
        source = Video.open(video, cache_size=max(self.config.vlm_frames, 8))
        try:
            if self_tsf is None:
                self_tsf = self.config.tsf == "train+infer" and tsf_boxes is None
            if tsf_boxes is not None:
                track = self._user_track(source, tsf_boxes)
                return self._segment_with_tsf(source, query, track, "boxes", mode, key_frame, progress, max_new_tokens)
            first = self._run(self.preprocess(source, query, mode, key_frame, None, progress, max_new_tokens))
            if not self_tsf:
                return first
            track = first.targets[0].boxes
            if all(b is None for b in track):
                first.extra["tsf"] = {"source": "self", "entries": [], "note": "first pass found no target; TSF not applied"}
                return first
            return self._segment_with_tsf(source, query, track, "self", mode, key_frame, progress, max_new_tokens)
        finally:
            if source is not video:
                source.close()

    def preprocess(
        self, video: Video, query: str, mode: str | None = None, key_frame: int | str | None = None,
        tsf_crops: np.ndarray | None = None, progress: bool = False, max_new_tokens: int | None = None,
    ) -> SegmentSession:
        """Check the options against the video and read the VLM's frames (stage 1)."""
        cfg = self.config
        mode = mode or cfg.mode
        if mode not in MODES:
            raise SparrowError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if not isinstance(query, str) or not query.strip():
            raise SparrowError("the query is empty")
        key = cfg.key_frame if key_frame is None else key_frame
        if key != "auto":
            if not str(key).isdigit() or not 0 <= int(key) < video.num_frames:
                raise SparrowError(f"key frame {key} out of range for {video.num_frames} frames")
            key = int(key)
        vlm_indices = sample_indices(video.num_frames, cfg.vlm_frames)
        vlm_frames = video.read(vlm_indices)
        step = (vlm_indices[1] - vlm_indices[0]) if len(vlm_indices) > 1 else 1
        question = cfg.question_template.format(query=query.strip())
        sample = VLMSample(vlm_frames, question, seconds_per_frame=step / max(video.info.fps, 1e-6), tsf_crops=tsf_crops)
        return SegmentSession(
            video=video, query=query, question=question, mode=mode, key_frame=key, vlm_indices=vlm_indices,
            vlm_frames=vlm_frames, sample=sample, max_new_tokens=max_new_tokens or cfg.max_new_tokens, progress=progress,
        )

    def _run(self, session: SegmentSession) -> SegmentationResult:
        """Stages 2 and 3: answer, key frame and box per target, masks on every frame, the result."""
        model, video = self.model, session.video
        answer = generate_answer(model, session.sample, session.max_new_tokens)
        if answer.forced:
            logger.info("the answer had no [SEG]; '[BOX] [SEG]' was appended and read by teacher forcing")
        if session.key_frame == "auto":
            cand_ids, cand_frames = session.vlm_indices, session.vlm_frames
        else:
            cand_ids, cand_frames = [session.key_frame], video.read([session.key_frame])
        features = encode_frames(model, cand_frames)
        size = (video.info.height, video.info.width)
        scale = torch.tensor([size[1], size[0], size[1], size[0]], dtype=torch.float32)
        prompts = answer.prompts
        targets = []
        for k in range(len(prompts.seg)):
            choice = choose_key(model, prompts, k, features, cand_ids)
            if session.mode == "track":
                frames = track_masks(model, video, choice, prompts, k, session.progress)
            elif session.mode == "perframe" and bool(prompts.has_box[k]):
                frames = decoded_masks(model, video, prompts.seg[k], choice.box, session.progress, box_embedding=prompts.box[k])
            else:  # framewise, or perframe for a [SEG] without [BOX] (nothing to select with)
                frames = decoded_masks(model, video, prompts.seg[k], choice.box, session.progress)
            key_box = None if choice.box is None else [round(float(v), 2) for v in choice.box.float().cpu() * scale]
            targets.append(
                TargetResult(
                    rles=[r for r, _ in frames], boxes=[b for _, b in frames], key_frame=choice.frame,
                    key_box=key_box, selection_score=choice.score,
                )
            )
        info = video.info
        return SegmentationResult(
            query=session.query, question=session.question, answer=answer.text, targets=targets,
            vlm_frame_indices=session.vlm_indices, num_frames=info.num_frames, height=info.height, width=info.width,
            fps=info.fps, mode=session.mode, forced_prompt=answer.forced, orphan_boxes=answer.orphan_boxes,
        )

    # ------------------------------------------------------------------------------------------ TSF
    def _user_track(self, video: Video, tsf_boxes: TSFBoxes) -> list[Sequence[float] | None]:
        bad = [t for t in tsf_boxes if not 0 <= int(t) < video.num_frames]
        if bad:
            raise SparrowError(f"TSF box on frame {bad[0]} out of range for {video.num_frames} frames")
        return [tsf_boxes.get(t) for t in range(video.num_frames)]

    def _segment_with_tsf(
        self, video: Video, query: str, track: Sequence[Sequence[float] | None], source: str,
        mode: str | None, key_frame: int | str | None, progress: bool, max_new_tokens: int | None,
    ) -> SegmentationResult:
        crops, entries = self.tsf_views(video, track)
        result = self._run(self.preprocess(video, query, mode, key_frame, crops, progress, max_new_tokens))
        result.extra["tsf"] = {"source": source, "entries": entries}
        return result

    def tsf_views(self, video: Video, boxes: Sequence[Sequence[float] | None]) -> tuple[np.ndarray, list[list[float]]]:
        """TSF crops from a target track (a pixel box or None per frame): the K medoid frames of the track, as the
        offline builder picks them (appearance + geometry K-means), cut from the original frames.
        Returns crops uint8 ``[K, s, s, 3]`` and the entries ``[[frame, x0, y0, x1, y1], ...]``."""
        cfg = self.config

        def get_frames(indices: list[int]) -> dict[int, np.ndarray]:
            return dict(zip(indices, video.read(indices)))

        size = (video.info.height, video.info.width)
        entries = medoid_entries(get_frames, list(boxes), size, BuildConfig(k=cfg.tsf_k))
        crops = tsf_crop_images(video, entries, cfg.tsf_crop_size)
        return crops, [[e.frame, *e.box] for e in entries]


def load(name_or_path: str | Path = "default", device: str | torch.device | None = None) -> SegmentationPipeline:
    """A pipeline around ``"default"`` (the bundled model), ``"tiny"`` (random tiny preset), ``"real"`` (public
    backbones, untrained SPARROW heads) or a folder written by :meth:`SegmentationPipeline.save_pretrained`."""
    if str(name_or_path) == "real":
        logger.warning("the 'real' preset has untrained SPARROW heads until a checkpoint is trained")
    return SegmentationPipeline(load_model(str(name_or_path), device=device))
