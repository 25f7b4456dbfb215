"""Configuration of a SPARROW model: backbones, prompt/selection settings, video mode, losses, TSF.

Saved as ``config.json`` beside the weights; every field is used somewhere (no silently ignored option).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparrow.errors import SparrowError
from sparrow.model.losses import LossWeights

MODES = ("track", "framewise", "perframe")  # how frames after the key frame get their masks (pipeline/masks.py)
SELECTION_LEVELS = ("frame", "track")  # what the [BOX] embedding chooses among (model/selector.py, track_selector.py)
VISIONS = ("qwen", "sam2")  # where the VLM's vision tokens come from (model/sam2_vision.py)


@dataclass
class SelectionConfig:
    """How the ``[BOX]`` embedding picks proposals."""

    top_k: int = 100  # proposals scored per frame
    threshold: float = 0.4  # sigmoid score needed to keep a proposal (argmax fallback when none passes)
    max_boxes: int = 1  # boxes kept per [BOX] at inference
    pos_iou: float = 0.5  # training labels: positive above, negative below neg_iou, ignored between (paper)
    neg_iou: float = 0.2


# Sizes that must be positive integers (a zero or negative value would fail deep inside a module with a traceback).
_POSITIVE = (
    "vlm_max_frame_pixels",
    "vlm_max_crop_pixels",
    "vlm_frames",
    "max_new_tokens",
    "proposer_hidden",
    "proposer_queries",
    "proposer_layers",
    "proposer_heads",
    "tsf_k",
    "tsf_crop_size",
    "track_hidden",
)


@dataclass
class SparrowConfig:
    """Everything needed to rebuild a SPARROW model around its two backbones."""

    vlm_family: str = "qwen2_5_vl"
    vlm_max_frame_pixels: int = 112 * 112  # per frame, before 28-px patching (real: 448*448)
    vlm_max_crop_pixels: int = 56 * 56  # per TSF crop
    vlm_frames: int = 8  # frames the VLM sees, evenly spaced
    vlm_vision: str = "qwen"  # "qwen": the VLM's own vision tower; "sam2": the model's SAM2 image encoder (frozen)
    # through a trainable projector (model/sam2_vision.py)
    max_new_tokens: int = 32
    proposer_hidden: int = 128
    proposer_queries: int = 32
    proposer_layers: int = 2
    proposer_heads: int = 4
    proposer_two_stage: bool = True  # dense per-cell head picks the decoder's initial boxes (proposer.py)
    proposer_fine: bool = False  # the proposer also reads SAM2's stride-8 map (small images: tiny preset)
    selector_appearance: bool = True  # the selector also sees ROI-pooled SAM2 features and the box of a proposal
    selector_appearance_grid: int = 0  # 0: those features averaged in the box; g: kept on a g x g grid (layout)
    identity_prompts: int = 0  # learned SAM2 prompts, one per identity (SynthRef: 36 = colour x shape),
    # trained by the segmenter stage with stage.identity_prompts (0: none)
    selection_level: str = "frame"  # "frame": a proposal per frame (the paper); "track": one tracklet of linked
    # proposals for the whole clip, scored with its trajectory (model/tracklets.py, track_selector.py)
    track_hidden: int = 256  # width of the track selector's scorer
    track_reads_question: bool = False  # the track selector also reads the question's token embeddings
    # (model/question_reader.py); pretrained VLM-free by the track_selector stage (train/selector_pretraining.py)
    track_silhouette: int = 0  # s > 0: the track selector also sees each tracklet's mean SAM2 mask inside its box on
    # an s x s grid, its shape (proposal_appearance.proposal_silhouettes); 0: none
    track_set_threshold: float = 0.0  # > 0: an answer also takes every other tracklet whose sigmoid score exceeds
    # it (expressions that name several objects; trained by loss.track_membership); 0: the best tracklet only
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    loss: LossWeights = field(default_factory=LossWeights)  # the authors' release values + the paper's filter loss
    mode: str = "track"  # "track" (SAM2 memory), "framewise" (key-frame box on every frame, the
    # release's default) or "perframe" (the [BOX] selects a box on every frame)
    key_frame: str = "auto"  # "auto": VLM frame with the best [BOX] selection score; or an index
    reprompt_every: int = 0  # track mode: re-prompt with the dual prompt every N frames (0 = never)
    tsf: str = "off"  # "off" | "train" | "train+infer"
    tsf_k: int = 4
    tsf_crop_size: int = 56
    train_box_source: str = "selected"  # box prompting the decoder in training: "selected" (detached) or "gt"
    question_template: str = "Can you segment {query} in this video?"
    base_vlm: str | None = None  # where the backbones came from (informational)
    base_sam2: str | None = None

    def __post_init__(self) -> None:
        for name, kind in (("selection", SelectionConfig), ("loss", LossWeights)):
            value = getattr(self, name)
            if isinstance(value, dict):
                unknown = sorted(set(value) - {f.name for f in dataclasses.fields(kind)})
                if unknown:
                    raise SparrowError(f"unknown {name} fields {unknown}")
                setattr(self, name, kind(**value))
        for name in _POSITIVE:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SparrowError(f"{name} must be a positive whole number, got {value!r}")
        if isinstance(self.reprompt_every, bool) or not isinstance(self.reprompt_every, int) or self.reprompt_every < 0:
            raise SparrowError(f"reprompt_every must be a whole number >= 0, got {self.reprompt_every!r}")
        if self.proposer_hidden % self.proposer_heads or self.proposer_hidden % 4:
            raise SparrowError(
                f"proposer_hidden {self.proposer_hidden} must be divisible by proposer_heads {self.proposer_heads} and by 4"
            )
        if self.mode not in MODES:
            raise SparrowError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.selection_level not in SELECTION_LEVELS:
            raise SparrowError(f"selection_level must be one of {list(SELECTION_LEVELS)}, got {self.selection_level!r}")
        if self.track_reads_question and self.selection_level != "track":
            raise SparrowError("track_reads_question needs selection_level 'track'")
        if (
            isinstance(self.track_silhouette, bool)
            or not isinstance(self.track_silhouette, int)
            or self.track_silhouette < 0
        ):
            raise SparrowError(f"track_silhouette must be a whole number >= 0, got {self.track_silhouette!r}")
        if isinstance(self.track_set_threshold, bool) or not isinstance(self.track_set_threshold, (int, float)):
            raise SparrowError(f"track_set_threshold must be a number in [0, 1), got {self.track_set_threshold!r}")
        if not 0 <= self.track_set_threshold < 1:
            raise SparrowError(f"track_set_threshold must be in [0, 1), got {self.track_set_threshold!r}")
        if self.track_set_threshold and self.selection_level != "track":
            raise SparrowError("track_set_threshold needs selection_level 'track'")
        if self.track_silhouette and self.selection_level != "track":
            raise SparrowError("track_silhouette needs selection_level 'track'")
        if self.selection_level == "track" and not self.selector_appearance:
            raise SparrowError("selection_level 'track' needs selector_appearance (tracklets are described by it)")
        if self.vlm_vision not in VISIONS:
            raise SparrowError(f"vlm_vision must be one of {list(VISIONS)}, got {self.vlm_vision!r}")
        if self.tsf not in ("off", "train", "train+infer"):
            raise SparrowError(f"tsf must be 'off', 'train' or 'train+infer', got {self.tsf!r}")
        if self.train_box_source not in ("selected", "gt"):
            raise SparrowError(f"train_box_source must be 'selected' or 'gt', got {self.train_box_source!r}")
        if self.identity_prompts < 0:
            raise SparrowError(f"identity_prompts must be >= 0, got {self.identity_prompts}")
        if not isinstance(self.selector_appearance_grid, int) or self.selector_appearance_grid < 0:
            raise SparrowError(
                f"selector_appearance_grid must be a whole number >= 0, got {self.selector_appearance_grid!r}"
            )
        if self.key_frame != "auto" and not str(self.key_frame).isdigit():
            raise SparrowError(f"key_frame must be 'auto' or a frame index, got {self.key_frame!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> SparrowConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SparrowError(f"unknown config fields {unknown}", source)
        # saved before these fields existed: learned-anchor proposer, selector on proposer features only
        data = {"proposer_two_stage": False, "selector_appearance": False, **data}
        try:
            return cls(**data)
        except SparrowError as exc:
            if exc.path is not None or source is None:
                raise
            raise SparrowError(str(exc), source) from exc

    def save(self, path: str | Path) -> None:
        from sparrow.atomic import atomic_file

        with atomic_file(path) as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: str | Path) -> SparrowConfig:
        path = Path(path)
        if not path.exists():
            raise SparrowError("missing model config", path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SparrowError(f"not valid JSON ({exc.msg})", path) from exc
        return cls.from_dict(data, source=path)
