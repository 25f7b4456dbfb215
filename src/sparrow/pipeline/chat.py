"""Conversation about one video: ``sparrow chat VIDEO`` and the app's chat tab.

A :class:`ChatSession` opens the video once and samples the VLM's frames once; each :meth:`ChatSession.ask` sends
the whole conversation so far (``VLMSample.history``) and generates the next answer. Every answer that contains
``[SEG]`` comes with its masks: each ``[SEG]`` (with its ``[BOX]``) is one target, prompted and propagated like
``segment`` does (same key-frame choice and modes). An answer without ``[SEG]`` is text only, unless the turn asks
for masks (``masks=True``: ``[BOX] [SEG]`` is appended and read by teacher forcing, as in ``segment``).

Grounded captions (GCG style): each ``[SEG]`` is tied to the phrase before it, the text in ``<p>...</p>`` when
the answer tags it, else the last words (at most 8) since the previous ``[SEG]`` or punctuation (the question,
when that is empty, as in "Sure, [BOX] [SEG].", or when the ``[SEG]`` was forced). :meth:`ChatSession.to_json` writes every turn, and under ``"gcg"`` the file
format ``sparrow eval gcg`` reads (``{video: {"caption", "phrases", "masks": [tube per phrase]}}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from sparrow.data.video_io import Video, VideoSource, sample_indices
from sparrow.errors import SparrowError
from sparrow.model.config import MODES
from sparrow.model.vlm_qwen2_5 import VLMSample
from sparrow.pipeline.masks import FrameOutput
from sparrow.pipeline.prompting import Plan, choose_key, encode_frames, generate_answer
from sparrow.pipeline.results import TargetResult
from sparrow.pipeline.segment import SegmentationPipeline

_TOKEN = re.compile(r"(?:\[BOX\]\s*)?\[SEG\]")
_TAGGED = re.compile(r"<p>(.*?)</p>\s*$", re.DOTALL)
MAX_PHRASE_WORDS = 8  # an untagged phrase is at most the last 8 words before its [SEG]


def grounded_phrases(answer: str, question: str) -> list[str]:
    """The phrase each ``[SEG]`` of ``answer`` grounds, in order (see the module docstring)."""
    phrases = []
    start = 0
    for match in _TOKEN.finditer(answer):
        before = answer[start : match.start()]
        tagged = _TAGGED.search(before)
        if tagged:
            phrase = tagged.group(1)
        else:
            phrase = re.split(r"[.,;:!?]", before)[-1]
            phrase = re.sub(
                r"^\s*(it is|it's|this is|that is|here is|here it is|sure)\b", "", phrase, flags=re.IGNORECASE
            )
        phrase = " ".join(re.sub(r"<[^>]*>", " ", phrase).split()[-MAX_PHRASE_WORDS:])
        phrases.append(phrase or " ".join(question.split()))
        start = match.end()
    return phrases


@dataclass
class ChatTurn:
    """One question and answer; ``targets`` (one per ``[SEG]``, masks in every frame) and their ``phrases``."""

    question: str
    answer: str
    targets: list[TargetResult] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)
    forced: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "forced_prompt": self.forced,
            "phrases": self.phrases,
            "targets": [
                {
                    "phrase": p,
                    "key_frame": t.key_frame,
                    "key_box": t.key_box,
                    "selection_score": t.selection_score,
                    "frames": [{"frame": i, "rle": r, "box": b} for i, (r, b) in enumerate(zip(t.rles, t.boxes))],
                }
                for p, t in zip(self.phrases, self.targets)
            ],
        }


class ChatSession:
    """A conversation about ``video`` with a pipeline (``mode``: how masks are computed, default the model's)."""

    def __init__(
        self,
        pipeline: SegmentationPipeline,
        video: VideoSource | Video,
        mode: str | None = None,
        max_new_tokens: int | None = None,
        progress: bool = False,
    ) -> None:
        self.pipeline = pipeline
        self.mode = mode or pipeline.config.mode
        if self.mode not in MODES:
            raise SparrowError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        cfg = pipeline.config
        self.video = Video.open(video, cache_size=max(cfg.vlm_frames, 8))
        self.vlm_indices = sample_indices(self.video.num_frames, cfg.vlm_frames)
        self.vlm_frames = self.video.read(self.vlm_indices)
        step = (self.vlm_indices[1] - self.vlm_indices[0]) if len(self.vlm_indices) > 1 else 1
        self.seconds_per_frame = step / max(self.video.info.fps, 1e-6)
        self.max_new_tokens = max_new_tokens or cfg.max_new_tokens
        self.progress = progress
        self.turns: list[ChatTurn] = []

    def ask(self, question: str, masks: bool = False) -> ChatTurn:
        """Answer ``question`` given the turns so far; masks for every ``[SEG]`` of the answer (``masks=True``
        makes sure there is one)."""
        if not isinstance(question, str) or not question.strip():
            raise SparrowError("the question is empty")
        question = question.strip()
        history = tuple((t.question, t.answer) for t in self.turns)
        sample = VLMSample(self.vlm_frames, question, seconds_per_frame=self.seconds_per_frame, history=history)
        model = self.pipeline.model
        with torch.no_grad(), self.pipeline.precision():
            answer = generate_answer(model, sample, self.max_new_tokens, force=masks)
            turn = ChatTurn(question, answer.text, forced=answer.forced)
            if answer.prompts is not None:
                features = encode_frames(model, self.vlm_frames)
                choices = [
                    choose_key(model, answer.prompts, k, features, self.vlm_indices)
                    for k in range(len(answer.prompts.seg))
                ]
                plan = Plan(answer, choices)
                turn.targets = [self._target(plan, k) for k in range(len(choices))]
                # a forced [BOX] [SEG] grounds the question, not words the model wrote
                turn.phrases = [question] if answer.forced else grounded_phrases(answer.text, question)
        self.turns.append(turn)
        return turn

    def _target(self, plan: Plan, k: int) -> TargetResult:
        info = self.video.info
        outputs: list[FrameOutput | None] = [None] * info.num_frames
        for t, output in self.pipeline.target_frames(self.video, plan, k, self.mode, self.progress):
            outputs[t] = output
        choice = plan.choices[k]
        scale = torch.tensor([info.width, info.height, info.width, info.height], dtype=torch.float32)
        key_box = None if choice.box is None else [round(float(v), 2) for v in choice.box.float().cpu() * scale]
        return TargetResult([o[0] for o in outputs], [o[1] for o in outputs], choice.frame, key_box, choice.score)

    def to_json(self, video_id: str = "video") -> dict[str, Any]:
        """Every turn with its masks, and the last grounded turn as a GCG entry (``"gcg"``; empty if none)."""
        info = self.video.info
        grounded = [t for t in self.turns if t.targets]
        gcg = {}
        if grounded:
            last = grounded[-1]
            gcg[video_id] = {"caption": last.answer, "phrases": last.phrases, "masks": [t.rles for t in last.targets]}
        return {
            "video": video_id,
            "num_frames": info.num_frames,
            "height": info.height,
            "width": info.width,
            "fps": info.fps,
            "mode": self.mode,
            "vlm_frame_indices": self.vlm_indices,
            "turns": [t.to_json() for t in self.turns],
            "gcg": gcg,
        }

    def close(self) -> None:
        self.video.close()
