"""Qwen2.5-VL adapter: the only module that knows this VLM family (prompt format, vision inputs, M-RoPE).

It takes frames and text, builds the Qwen chat sequence (system, user turn with the video and optional TSF
crops as small images, assistant answer), runs the model with a KV cache, and exposes the last-layer hidden
states from which ``[BOX]``/``[SEG]`` embeddings are read (``sparrow.model.prompt_tokens``). Another VLM family
is another adapter with the same public methods.

Sequence layout (identical for the tiny preset and the public checkpoints)::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n<|vision_start|><|video_pad|>*N<|vision_end|>{question}
    [\\nTarget views: (<|vision_start|><|image_pad|>*n<|vision_end|>)*K]<|im_end|>\\n<|im_start|>assistant\\n{answer}<|im_end|>

A conversation (``VLMSample.history``) puts the earlier turns first: the video goes with the first user turn, each
earlier answer follows as an assistant turn, and the sample's ``question`` is the last user turn::

    ...<|im_start|>user\n<video>{q1}<|im_end|>\n<|im_start|>assistant\n{a1}<|im_end|>\n<|im_start|>user\n{q2}<|im_end|>...

Labels are -100 everywhere except the (last) answer and its closing ``<|im_end|>``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AddedToken, AutoTokenizer, PreTrainedTokenizerBase, Qwen2_5_VLForConditionalGeneration

from sparrow.errors import SparrowError

SEG_TOKEN = "[SEG]"
BOX_TOKEN = "[BOX]"
SYSTEM_PROMPT = "You are a helpful assistant."
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IGNORE_INDEX = -100


@dataclass
class VLMSample:
    """One conversation for the VLM.

    ``frames`` uint8 ``[T, H, W, 3]``; ``seconds_per_frame`` is the time between sampled frames;
    ``tsf_crops`` uint8 ``[K, h, w, 3]`` crops of the target (TSF) or None; ``history`` the earlier
    ``(question, answer)`` turns of a conversation (the video and the crops go with the first of them).
    """

    frames: np.ndarray
    question: str
    answer: str | None = None
    seconds_per_frame: float = 1.0
    tsf_crops: np.ndarray | None = None
    history: tuple[tuple[str, str], ...] = ()


@dataclass
class VLMBatch:
    """Model inputs for a batch; ``[B, L]`` token tensors, flattened patch tensors for the vision tower."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values_videos: torch.Tensor
    video_grid_thw: torch.Tensor
    second_per_grid_ts: torch.Tensor
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> VLMBatch:
        return VLMBatch(
            **{
                f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                for f in fields(self)
            }
        )

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None and f.name != "labels"
        }


@dataclass
class VLMGeneration:
    """Generated tokens ``[G]`` of one sequence, the text, and the state that produced each token ``[G, d]``."""

    tokens: torch.Tensor
    text: str
    states: torch.Tensor


def fit_to_patches(height: int, width: int, max_pixels: int, factor: int) -> tuple[int, int]:
    """Size (h, w), multiples of ``factor``, close to the aspect of (height, width), with h*w <= max_pixels."""
    scale = min(1.0, math.sqrt(max_pixels / float(height * width)))
    h = max(factor, round(height * scale / factor) * factor)
    w = max(factor, round(width * scale / factor) * factor)
    while h * w > max_pixels and max(h, w) > factor:
        if h >= w:
            h -= factor
        else:
            w -= factor
    return h, w


def patchify(frames: torch.Tensor, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2-VL patch layout: normalised frames ``[T, 3, H, W]`` -> ``([gt*gh*gw, 3*temporal*patch*patch], [1, 3])``.

    Frames are padded in time by repeating the last one; H and W must be multiples of ``patch * merge``.
    The layout equals ``Qwen2VLVideoProcessor(do_resize=False)`` (checked in tests).
    """
    if frames.shape[0] % temporal:
        frames = torch.cat([frames, frames[-1:].repeat(temporal - frames.shape[0] % temporal, 1, 1, 1)])
    t, c, h, w = frames.shape
    gt, gh, gw = t // temporal, h // patch, w // patch
    x = frames.reshape(gt, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * temporal * patch * patch), torch.tensor([[gt, gh, gw]])


class QwenVLAdapter(nn.Module):
    """Wraps ``Qwen2_5_VLForConditionalGeneration`` and its tokenizer for SPARROW."""

    def __init__(
        self,
        model: Qwen2_5_VLForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        max_frame_pixels: int = 112 * 112,
        max_crop_pixels: int = 56 * 56,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_frame_pixels = max_frame_pixels
        self.max_crop_pixels = max_crop_pixels
        self.base: dict | None = None  # {"repo", "source", "fingerprint"} of an external base (the small preset)
        ensure_prompt_tokens(model, tokenizer)
        cfg = model.config
        vis = cfg.vision_config
        self.patch, self.merge, self.temporal = vis.patch_size, vis.spatial_merge_size, vis.temporal_patch_size
        self.video_token_id, self.image_token_id = cfg.video_token_id, cfg.image_token_id
        self.vision_start_id, self.vision_end_id = cfg.vision_start_token_id, cfg.vision_end_token_id
        self.seg_token_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
        self.box_token_id = tokenizer.convert_tokens_to_ids(BOX_TOKEN)
        self.im_end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.im_end_id
        self.register_buffer("_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self._captured: list[torch.Tensor] = []
        self.model.model.language_model.norm.register_forward_hook(self._capture_hidden)

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32, **kwargs) -> QwenVLAdapter:
        """Load a local folder (or a Hugging Face cache entry) without downloading."""
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(path), local_files_only=True, dtype=dtype)
        except OSError as exc:
            raise SparrowError(
                f"cannot load the VLM {path!s} locally ({str(exc).splitlines()[0]}); fetch it first, e.g. "
                f"`hf download {path}`"
            ) from exc
        return cls(model, tokenizer, **kwargs)

    @property
    def hidden_size(self) -> int:
        return self.model.config.text_config.hidden_size

    # ----------------------------------------------------------------------------------------- vision inputs
    def _pixels(self, images: np.ndarray, max_pixels: int) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` -> normalised float ``[T, 3, h, w]`` resized to a patch-aligned size."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
            raise SparrowError(f"expected frames [T, H, W, 3] with T > 0, got shape {list(images.shape)}")
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self._mean.device).permute(0, 3, 1, 2).float().div_(255)
        h, w = fit_to_patches(x.shape[2], x.shape[3], max_pixels, self.patch * self.merge)
        if (h, w) != tuple(x.shape[2:]):
            x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
        return (x - self._mean) / self._std

    def video_inputs(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames uint8 ``[T, H, W, 3]`` -> (patches ``[N, D]``, grid ``[1, 3]``)."""
        return patchify(self._pixels(frames, self.max_frame_pixels), self.patch, self.merge, self.temporal)

    def image_inputs(self, crops: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops uint8 ``[K, h, w, 3]`` -> (patches ``[M, D]``, grids ``[K, 3]``), each crop one image."""
        parts = [
            patchify(self._pixels(c[None], self.max_crop_pixels), self.patch, self.merge, self.temporal) for c in crops
        ]
        return torch.cat([p for p, _ in parts]), torch.cat([g for _, g in parts])

    def _tokens_for(self, grid: torch.Tensor) -> int:
        return int(grid.prod()) // (self.merge**2)

    # ----------------------------------------------------------------------------------------- text
    def _text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    @torch.no_grad()
    def question_embeddings(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The language model's input embeddings of each question's own tokens (no chat markup), right-padded:
        ``words [Q, L, d]`` float32, detached, and ``mask [Q, L]`` bool. The track selector's question reader reads
        these (``sparrow.model.question_reader``)."""
        if not questions:
            raise ValueError("question_embeddings needs at least one question")
        if not all(q.strip() for q in questions):
            raise SparrowError("the query is empty")
        ids = [self._text(q) for q in questions]
        table = self.model.get_input_embeddings()
        length = max(len(i) for i in ids)
        device = table.weight.device
        padded = torch.tensor([i + [self.pad_id] * (length - len(i)) for i in ids], device=device)
        mask = torch.tensor([[True] * len(i) + [False] * (length - len(i)) for i in ids], device=device)
        return table(padded).float() * mask[..., None], mask

    def encode(
        self, sample: VLMSample, video_grid: torch.Tensor, image_grids: torch.Tensor | None
    ) -> tuple[list[int], list[int], list[int]]:
        """Token ids, labels and mm token types (0 text, 1 image, 2 video) of one conversation."""
        ids: list[int] = []
        labels: list[int] = []
        types: list[int] = []

        def add(tokens: list[int], kind: int = 0, learn: bool = False) -> None:
            ids.extend(tokens)
            labels.extend(tokens if learn else [IGNORE_INDEX] * len(tokens))
            types.extend([kind] * len(tokens))

        turns = [*sample.history, (sample.question, None)]
        add(self._text(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"))
        add([self.vision_start_id])
        add([self.video_token_id] * self._tokens_for(video_grid), kind=2)
        add([self.vision_end_id])
        for i, (question, earlier) in enumerate(turns):
            if i:
                add(self._text("<|im_start|>user\n"))
            add(self._text(question))
            if i == 0 and image_grids is not None:
                add(self._text("\nTarget views: "))
                for grid in image_grids:
                    add([self.vision_start_id])
                    add([self.image_token_id] * self._tokens_for(grid), kind=1)
                    add([self.vision_end_id])
            add(self._text("<|im_end|>\n<|im_start|>assistant\n"))
            if earlier is not None:
                add(self._text(earlier))
                add([self.im_end_id])
                add(self._text("\n"))
        if sample.answer is not None:
            add(self._text(sample.answer), learn=True)
            add([self.im_end_id], learn=True)
        return ids, labels, types

    def collate(self, samples: list[VLMSample], padding_side: str = "right") -> VLMBatch:
        """Build a padded batch; use ``padding_side="left"`` for generation."""
        if not samples:
            raise ValueError("collate needs at least one sample")
        rows, videos, vgrids, images, igrids, spg = [], [], [], [], [], []
        for s in samples:
            if not s.question.strip():
                raise SparrowError("the query is empty")
            pix, grid = self.video_inputs(s.frames)
            videos.append(pix)
            vgrids.append(grid)
            spg.append(s.seconds_per_frame * self.temporal)
            igrid = None
            if s.tsf_crops is not None and len(s.tsf_crops):
                ipix, igrid = self.image_inputs(s.tsf_crops)
                images.append(ipix)
                igrids.append(igrid)
            rows.append(self.encode(s, grid[0], igrid))
        length = max(len(r[0]) for r in rows)
        batch_ids, batch_labels, batch_types, batch_mask = [], [], [], []
        for ids, labels, types in rows:
            pad = length - len(ids)

            def fill(xs: list[int], v: int, pad: int = pad) -> list[int]:
                return ([v] * pad + xs) if padding_side == "left" else (xs + [v] * pad)

            batch_ids.append(fill(ids, self.pad_id))
            batch_labels.append(fill(labels, IGNORE_INDEX))
            batch_types.append(fill(types, 0))
            batch_mask.append(fill([1] * len(ids), 0))
        has_answer = [s.answer is not None for s in samples]
        return VLMBatch(
            input_ids=torch.tensor(batch_ids),
            attention_mask=torch.tensor(batch_mask),
            mm_token_type_ids=torch.tensor(batch_types),
            pixel_values_videos=torch.cat(videos),
            video_grid_thw=torch.cat(vgrids),
            second_per_grid_ts=torch.tensor(spg, dtype=torch.float32),
            pixel_values=torch.cat(images) if images else None,
            image_grid_thw=torch.cat(igrids) if igrids else None,
            labels=torch.tensor(batch_labels) if all(has_answer) else None,
        )

    # ----------------------------------------------------------------------------------------- running
    def _capture_hidden(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self._captured.append(output)

    def forward(self, batch: VLMBatch) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Teacher-forced pass: (CE loss over the answer or None, last-layer hidden states ``[B, L, d]``)."""
        self._captured.clear()
        out = self.model(**batch.model_kwargs(), labels=batch.labels, use_cache=False)
        hidden = self._captured[-1]
        self._captured.clear()
        return out.loss, hidden

    @torch.no_grad()
    def generate(
        self, batch: VLMBatch, max_new_tokens: int = 64, do_sample: bool = False, **kwargs
    ) -> list[VLMGeneration]:
        """Generate answers with the KV cache (greedy unless ``do_sample``); left-padded batch expected.

        Returns, per sequence, the new tokens (up to and excluding ``<|im_end|>``), the decoded text, and the
        last-layer state that produced each new token ``[G, d]`` (the ``[BOX]``/``[SEG]`` embeddings are read there).
        """
        self._captured.clear()
        out = self.model.generate(
            **batch.model_kwargs(),
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            eos_token_id=self.im_end_id,
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            **kwargs,
        )
        steps = [h[:, -1] for h in self._captured]  # one [B, d] per generation step (prefill: last prompt position)
        self._captured.clear()
        new_tokens = out.sequences[:, batch.input_ids.shape[1] :]
        results = []
        for b in range(new_tokens.shape[0]):
            toks = new_tokens[b]
            stop = (toks == self.im_end_id).nonzero()
            n = int(stop[0]) if len(stop) else len(toks)
            n = min(n, len(steps))
            states = (
                torch.stack([steps[s][b] for s in range(n)])
                if n
                else toks.new_zeros((0, self.hidden_size), dtype=torch.float32)
            )
            # [BOX]/[SEG] absorb the space before them (lstrip); put it back for display
            text = re.sub(
                r"\s*(\[BOX\]|\[SEG\])", r" \1", self.tokenizer.decode(toks[:n], skip_special_tokens=False)
            ).strip()
            results.append(VLMGeneration(tokens=toks[:n], text=text, states=states))
        return results

    def teacher_force(self, batch: VLMBatch) -> torch.Tensor:
        """Last-layer states ``[B, L, d]`` of a given sequence (used when generation omits ``[BOX] [SEG]``)."""
        return self.forward(batch)[1]


def ensure_prompt_tokens(model: Qwen2_5_VLForConditionalGeneration, tokenizer: PreTrainedTokenizerBase) -> bool:
    """Add ``[BOX]``/``[SEG]`` to the tokenizer and the embeddings if missing; new rows start at the mean
    embedding (trainable, unlike the release's random frozen rows). Returns True if anything was added."""
    missing = [t for t in (BOX_TOKEN, SEG_TOKEN) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens(
            {
                "additional_special_tokens": [
                    AddedToken(t, lstrip=True, rstrip=False, normalized=False, special=True) for t in missing
                ]
            },
            replace_extra_special_tokens=False,
        )
    vocab = len(tokenizer)
    if model.get_input_embeddings().weight.shape[0] < vocab:
        model.resize_token_embeddings(vocab, mean_resizing=True)
        return True
    return bool(missing)
