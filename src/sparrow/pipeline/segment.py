"""From a video and a sentence to an answer and per-frame masks: :class:`SegmentationPipeline`.

The user-facing object around a :class:`~sparrow.model.sparrow_model.SparrowModel` (``sparrow.load`` returns one),
as a Hugging Face pipeline wraps a model. One call runs three stages:

1. **preprocess** (:meth:`SegmentationPipeline.preprocess`): check the options, open the video once
   (:class:`~sparrow.data.video_io.Video`), sample ``vlm_frames`` evenly spaced frames, build the VLM sample; in
   ``track`` mode, when every frame resized to SAM2's input fits ``FRAME_CACHE_BYTES``, the video is decoded once
   here, in order, and kept resized for propagation (``Video.keep_view`` + ``Video.scan``);
2. **forward**: the VLM answers (greedy, KV cache) -> ``[BOX]``/``[SEG]`` embeddings (``pipeline/prompting.py``) ->
   for each target the key frame (``auto``: among the VLM's frames, the one where the ``[BOX]`` selection scores
   highest) and its box -> SAM2 decodes the key-frame mask -> every frame's mask by ``track``, ``framewise`` or
   ``perframe`` (``pipeline/masks.py``);
3. **postprocess**: per-frame COCO RLE and boxes in a :class:`~sparrow.pipeline.results.SegmentationResult`.

TSF at inference wraps this: ``tsf_boxes`` (user boxes) or ``self_tsf`` (a first pass's predicted track) become K
medoid crops (the offline builder's selection, ``sparrow.tsf``) shown to the VLM in a second pass.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparrow.data.video_io import Video, VideoSource, sample_indices
from sparrow.errors import SparrowError
from sparrow.model.config import MODES, SparrowConfig
from sparrow.model.loading import from_pretrained, load_model, save_pretrained
from sparrow.model.sparrow_model import SparrowModel
from sparrow.model.vlm_qwen2_5 import VLMSample
from sparrow.pipeline.masks import FrameOutput, decoded_frames, track_frames
from sparrow.pipeline.prompting import Plan, choose_key, encode_frames, generate_answer
from sparrow.pipeline.results import SegmentationResult, TargetResult
from sparrow.tsf.build import BuildConfig, medoid_entries
from sparrow.tsf.crops import tsf_crop_images

logger = logging.getLogger(__name__)
# track mode keeps every frame resized to SAM2's input for one call (decoded once, in order) when they all fit here;
# longer videos are read with seeks as they are needed. Peak memory: at most this above a long video's.
FRAME_CACHE_BYTES = 128 * 2**20
TSFBoxes = Mapping[int, Sequence[float]]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> ``cuda`` if available, else ``mps`` if available, else ``cpu``; an unavailable device is a
    :class:`SparrowError`."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SparrowError(f"--device must be cuda, cuda:N, mps or cpu, got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SparrowError(f"--device {device}: no CUDA device is available here (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SparrowError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise SparrowError(f"--device {device}: MPS is not available here (use --device cpu)")
    if dev.type not in ("cuda", "mps", "cpu"):
        raise SparrowError(f"--device must be cuda, cuda:N, mps or cpu, got {device!r}")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"bfloat16"`` | ``"float16"`` | ``"float32"`` (or the torch dtype; None: float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise SparrowError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")


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
    ``dtype``: the weights are cast to it; half precision runs under ``torch.autocast`` (bfloat16 on every
    device, float16 on CUDA/MPS), float16 on the CPU runs plain (its autocast is not implemented for SAM2's memory
    attention) and float32 as it is. Inputs are built in float32; SAM2's session takes the weights' dtype.
    """

    def __init__(self, model: SparrowModel, dtype: str | torch.dtype | None = None) -> None:
        self.dtype = resolve_dtype(dtype)
        self.model = (model.to(self.dtype) if self.dtype != torch.float32 else model).eval()

    def precision(self) -> contextlib.AbstractContextManager:
        """The autocast context every forward of this pipeline runs in (a no-op in float32)."""
        kind = self.device.type
        if self.dtype == torch.float32 or (self.dtype == torch.float16 and kind == "cpu"):
            return contextlib.nullcontext()
        return torch.autocast(kind, dtype=self.dtype)

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
        source = Video.open(video, cache_size=max(self.config.vlm_frames + 1, 8))
        view = self.model.preprocessor.resized_view().name
        kept_by_caller = source is video and source.keeps_view(view)
        try:
            with self.precision():
                return self._segment(source, query, mode, key_frame, tsf_boxes, self_tsf, progress, max_new_tokens)
        finally:
            if source is not video:
                source.close()
            elif not kept_by_caller:  # the caller's video: release the frames this call kept (preprocess)
                source.drop_view(view)

    def _segment(
        self,
        source: Video,
        query: str,
        mode: str | None,
        key_frame: int | str | None,
        tsf_boxes: TSFBoxes | None,
        self_tsf: bool | None,
        progress: bool,
        max_new_tokens: int | None,
    ) -> SegmentationResult:
        session, extra = self.prepare(source, query, mode, key_frame, tsf_boxes, self_tsf, progress, max_new_tokens)
        result = self._run(session)
        result.extra.update(extra)
        return result

    def prepare(
        self,
        video: Video,
        query: str,
        mode: str | None = None,
        key_frame: int | str | None = None,
        tsf_boxes: TSFBoxes | None = None,
        self_tsf: bool | None = None,
        progress: bool = False,
        max_new_tokens: int | None = None,
    ) -> tuple[SegmentSession, dict[str, Any]]:
        """Stage 1 with TSF: the session the masks are computed from, and the result's extra fields (``tsf``).

        ``tsf_boxes`` become K crops; ``self_tsf`` runs a whole first pass without TSF and crops its track."""
        if self_tsf is None:
            self_tsf = self.config.tsf == "train+infer" and tsf_boxes is None
        if tsf_boxes is not None:
            track, source = self._user_track(video, tsf_boxes), "boxes"
        elif self_tsf:
            track, source = (
                self._run(self.preprocess(video, query, mode, key_frame, None, progress, max_new_tokens))
                .targets[0]
                .boxes,
                "self",
            )
            if all(b is None for b in track):
                note = {"source": "self", "entries": [], "note": "first pass found no target; TSF not applied"}
                return self.preprocess(video, query, mode, key_frame, None, progress, max_new_tokens), {"tsf": note}
        else:
            return self.preprocess(video, query, mode, key_frame, None, progress, max_new_tokens), {}
        crops, entries = self.tsf_views(video, track)
        session = self.preprocess(video, query, mode, key_frame, crops, progress, max_new_tokens)
        return session, {"tsf": {"source": source, "entries": entries}}

    def preprocess(
        self,
        video: Video,
        query: str,
        mode: str | None = None,
        key_frame: int | str | None = None,
        tsf_crops: np.ndarray | None = None,
        progress: bool = False,
        max_new_tokens: int | None = None,
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
        if mode == "track" and video.keep_view(self.model.preprocessor.resized_view(), FRAME_CACHE_BYTES):
            # one decoding pass, in order: the VLM's frames (and a given key frame) now, and every frame resized to
            # SAM2's input for propagation, which then decodes nothing
            keep = vlm_indices + ([key] if key != "auto" else [])
            vlm_frames = video.scan(keep)[: len(vlm_indices)]
        else:
            vlm_frames = video.read(vlm_indices)
        step = (vlm_indices[1] - vlm_indices[0]) if len(vlm_indices) > 1 else 1
        question = cfg.question_template.format(query=query.strip())
        sample = VLMSample(
            vlm_frames, question, seconds_per_frame=step / max(video.info.fps, 1e-6), tsf_crops=tsf_crops
        )
        return SegmentSession(
            video=video,
            query=query,
            question=question,
            mode=mode,
            key_frame=key,
            vlm_indices=vlm_indices,
            vlm_frames=vlm_frames,
            sample=sample,
            max_new_tokens=max_new_tokens or cfg.max_new_tokens,
            progress=progress,
        )

    @torch.no_grad()
    def plan(self, session: SegmentSession) -> Plan:
        """Stage 2a: the answer, then per target the key frame, its box and score, and the key-frame mask logits."""
        model, video = self.model, session.video
        answer = generate_answer(model, session.sample, session.max_new_tokens)
        if answer.forced:
            logger.info("the answer had no [SEG]; '[BOX] [SEG]' was appended and read by teacher forcing")
        if session.key_frame == "auto":
            cand_ids, cand_frames = session.vlm_indices, session.vlm_frames
        else:
            cand_ids, cand_frames = [session.key_frame], video.read([session.key_frame])
        features = encode_frames(model, cand_frames)
        choices = [choose_key(model, answer.prompts, k, features, cand_ids) for k in range(len(answer.prompts.seg))]
        return Plan(answer, choices)

    def target_frames(
        self,
        video: Video,
        plan: Plan,
        target: int,
        mode: str,
        progress: bool = False,
        start: int = 0,
        **track_options: Any,
    ) -> Iterator[tuple[int, FrameOutput]]:
        """Stage 2b for one target: ``(t, (rle, box))`` as computed (``track``: propagation order, checkpoints and
        resume through ``track_options``; ``framewise``/``perframe``: frame order from ``start``)."""
        model, prompts, choice = self.model, plan.answer.prompts, plan.choices[target]
        if mode == "track":
            return track_frames(model, video, choice, prompts, target, progress, **track_options)
        if mode == "perframe" and choice.track is not None:
            return decoded_frames(
                model, video, prompts.seg[target], None, progress, start=start, guide=choice.track, others=choice.others
            )
        if mode == "perframe" and bool(prompts.has_box[target]):
            return decoded_frames(
                model, video, prompts.seg[target], choice.box, progress, box_embedding=prompts.box[target], start=start
            )
        # framewise, or perframe for a [SEG] without [BOX] (nothing to select with)
        return decoded_frames(model, video, prompts.seg[target], choice.box, progress, start=start)

    def postprocess(self, session: SegmentSession, plan: Plan, frames: list[list[FrameOutput]]) -> SegmentationResult:
        """Stage 3: the result from the plan and, per target, one ``(rle, box)`` per frame in frame order."""
        info = session.video.info
        scale = torch.tensor([info.width, info.height, info.width, info.height], dtype=torch.float32)
        targets = []
        for choice, outputs in zip(plan.choices, frames):
            key_box = None if choice.box is None else [round(float(v), 2) for v in choice.box.float().cpu() * scale]
            targets.append(
                TargetResult(
                    rles=[r for r, _ in outputs],
                    boxes=[b for _, b in outputs],
                    key_frame=choice.frame,
                    key_box=key_box,
                    selection_score=choice.score,
                )
            )
        answer = plan.answer
        return SegmentationResult(
            query=session.query,
            question=session.question,
            answer=answer.text,
            targets=targets,
            vlm_frame_indices=session.vlm_indices,
            num_frames=info.num_frames,
            height=info.height,
            width=info.width,
            fps=info.fps,
            mode=session.mode,
            forced_prompt=answer.forced,
            orphan_boxes=answer.orphan_boxes,
        )

    def _run(self, session: SegmentSession) -> SegmentationResult:
        """Stages 2 and 3: answer, key frame and box per target, masks on every frame, the result."""
        plan = self.plan(session)
        frames = []
        for k in range(len(plan.choices)):
            outputs: list[FrameOutput | None] = [None] * session.video.num_frames
            for t, output in self.target_frames(session.video, plan, k, session.mode, session.progress):
                outputs[t] = output
            if any(o is None for o in outputs):
                raise RuntimeError(f"target {k + 1}: {sum(o is None for o in outputs)} frames without a mask")
            frames.append(outputs)
        return self.postprocess(session, plan, frames)

    # ------------------------------------------------------------------------------------------ TSF
    def _user_track(self, video: Video, tsf_boxes: TSFBoxes) -> list[Sequence[float] | None]:
        bad = [t for t in tsf_boxes if not 0 <= int(t) < video.num_frames]
        if bad:
            raise SparrowError(f"TSF box on frame {bad[0]} out of range for {video.num_frames} frames")
        return [tsf_boxes.get(t) for t in range(video.num_frames)]

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


def load(
    name_or_path: str | Path = "default",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> SegmentationPipeline:
    """A pipeline around ``"default"`` (the bundled model), ``"tiny"`` (random tiny preset), ``"real"`` (public
    backbones, untrained SPARROW heads) or a folder written by :meth:`SegmentationPipeline.save_pretrained`.

    Args:
        device: ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"cpu"`` (default: CUDA, else MPS, else CPU).
        dtype: ``"bfloat16"``, ``"float16"`` or ``"float32"`` (default) for the weights and the forward passes.
    """
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    if str(name_or_path) == "real":
        logger.warning("the 'real' preset has untrained SPARROW heads until a checkpoint is trained")
    return SegmentationPipeline(load_model(str(name_or_path), device=dev), dtype=dt)
