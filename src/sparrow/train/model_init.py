"""Build the model a training run starts from (``model.init`` of the training config)."""

from __future__ import annotations

import dataclasses

import torch

from sparrow.errors import SparrowError
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import (
    REAL_SAM2,
    REAL_VLM,
    build_model,
    build_small,
    build_tiny,
    from_pretrained,
    real_config,
    small_config,
    tiny_config,
)
from sparrow.model.sam2_vision import set_vlm_vision
from sparrow.model.sparrow_model import SparrowModel, make_track_selector
from sparrow.train.config import ModelInit

# SparrowConfig fields that only steer training/inference and may change on a saved model (the rest is architecture).
RUNTIME_FIELDS = {
    "loss",
    "selection",
    "train_box_source",
    "tsf",
    "tsf_k",
    "tsf_crop_size",
    "mode",
    "key_frame",
    "reprompt_every",
    "max_new_tokens",
    "question_template",
    "vlm_frames",
    "track_set_threshold",
}
# Architecture fields a run may change on a saved model: the part they name is rebuilt with fresh (seeded) weights.
REBUILT_FIELDS = {"vlm_vision", "selection_level", "track_hidden", "track_reads_question", "track_silhouette"}


def _overrides(base: SparrowConfig, overrides: dict, source: str | None, runtime_only: bool) -> SparrowConfig:
    known = {f.name for f in dataclasses.fields(SparrowConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SparrowError(f"unknown model.config fields {unknown}", source)
    if runtime_only:
        fixed = sorted(set(overrides) - RUNTIME_FIELDS - REBUILT_FIELDS)
        if fixed:
            raise SparrowError(f"model.config cannot change architecture fields {fixed} of a saved model", source)
    data = base.to_dict()
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            bad = sorted(set(value) - set(data[key]))
            if bad:
                raise SparrowError(f"unknown model.config.{key} fields {bad}", source)
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return SparrowConfig.from_dict(data, source=source)


def check_initial_config(init: ModelInit, source: str | None = None) -> SparrowConfig:
    """The model config a run would start from, validated without building the model (one-line errors)."""
    presets = {"tiny": tiny_config, "small": small_config, "real": real_config}
    if init.init in presets:
        return _overrides(presets[init.init](), init.config, source, runtime_only=False)
    base = SparrowConfig.load(f"{init.init}/config.json")
    return _overrides(base, init.config, source, runtime_only=True) if init.config else base


def build_initial_model(init: ModelInit, source: str | None = None) -> SparrowModel:
    """``tiny``: random tiny backbones (seeded); ``small``: SmolLM2 VLM + tiny SAM2 (or the SAM2, proposer and
    selector of ``init.segmenter_from``); ``real``: the backbones ``model.config.base_vlm`` / ``base_sam2`` name
    (default the public checkpoints, from the local Hugging Face cache; a local folder works too); else a folder,
    whose ``vlm_vision`` may change (the VLM then gets a fresh tower of that kind, seeded by ``init.seed``)."""
    if init.init == "tiny":
        config = _overrides(tiny_config(), init.config, source, runtime_only=False)
        return build_tiny(seed=init.seed, config=config, sam_image_size=init.sam_image_size)
    if init.init == "small":
        config = _overrides(small_config(), init.config, source, runtime_only=False)
        donor = from_pretrained(init.segmenter_from) if init.segmenter_from else None
        return build_small(seed=init.seed, config=config, sam_image_size=init.sam_image_size, segmenter_from=donor)
    if init.init == "real":
        config = _overrides(real_config(), init.config, source, runtime_only=False)
        return build_model(config, config.base_vlm or REAL_VLM, config.base_sam2 or REAL_SAM2, seed=init.seed)
    model = from_pretrained(init.init)
    if init.config:
        saved = model.config
        model.config = _overrides(model.config, init.config, source, runtime_only=True)
        if model.config.vlm_vision != saved.vlm_vision:
            torch.manual_seed(init.seed)
            set_vlm_vision(model.vlm, model.pixel_decoder, model.config.vlm_vision)
        # the track selector is sized by these; a change rebuilds it with fresh seeded weights (or removes it)
        changed = any(
            getattr(model.config, f) != getattr(saved, f)
            for f in ("selection_level", "track_hidden", "vlm_frames", "track_reads_question", "track_silhouette")
        )
        if changed and (model.track_selector is not None or model.config.selection_level == "track"):
            torch.manual_seed(init.seed)
            model.track_selector = make_track_selector(
                model.config, model.pixel_decoder.hidden_size, model.vlm.hidden_size
            )
    return model
