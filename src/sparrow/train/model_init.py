"""Build the model a training run starts from (``model.init`` of the training config)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch

from sparrow.errors import SparrowError
from sparrow.model.config import SparrowConfig
from sparrow.model.sparrow_model import SparrowModel
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
}


def _overrides(base: SparrowConfig, overrides: dict, source: str | None, runtime_only: bool) -> SparrowConfig:
    known = {f.name for f in dataclasses.fields(SparrowConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SparrowError(f"unknown model.config fields {unknown}", source)
    if runtime_only:
        fixed = sorted(set(overrides) - RUNTIME_FIELDS)
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


def tie_prompt_positional_encoding(model: SparrowModel) -> bool:
    """Make SAM2's prompt encoder use the image's random-Fourier positional basis; True when it had to change.

    SAM2 has one such basis (``pe_layer``), and the public checkpoints load it into both HF buffers
    (``shared_image_embedding`` and ``prompt_encoder.shared_embedding``). A randomly initialised HF ``Sam2VideoModel``
    draws the two independently, so box/point coordinates live in a different basis from the image positions and a
    segmenter trained from scratch learns to ignore its prompts (measured: identical box- and point-prompt losses,
    mask logits that do not move with the box). Tying them restores the promptable geometry.
    """
    sam = model.pixel_decoder.sam
    image_pe = sam.shared_image_embedding.positional_embedding
    prompt_pe = sam.prompt_encoder.shared_embedding.positional_embedding
    if torch.equal(image_pe, prompt_pe):
        return False
    with torch.no_grad():
        prompt_pe.copy_(image_pe)
    return True


def build_initial_model(init: ModelInit, source: str | None = None) -> SparrowModel:
    """``tiny``: random tiny backbones (seeded); ``real``: public checkpoints from the local cache; else a folder."""
    from sparrow.model.loading import REAL_SAM2, REAL_VLM, build_model, from_pretrained, real_config, tiny_config

    if init.init == "tiny":
        from sparrow.model.tiny_backbones import write_tiny_sam2, write_tiny_vlm

        config = _overrides(tiny_config(), init.config, source, runtime_only=False)
        with tempfile.TemporaryDirectory() as tmp:
            vlm_dir = write_tiny_vlm(Path(tmp) / "vlm", seed=init.seed)
            sam_dir = write_tiny_sam2(Path(tmp) / "sam2", seed=init.seed, image_size=init.sam_image_size)
            model = build_model(config, vlm_dir, sam_dir, seed=init.seed)
        tie_prompt_positional_encoding(model)
        return model
    if init.init == "real":
        return build_model(
            _overrides(real_config(), init.config, source, runtime_only=False), REAL_VLM, REAL_SAM2, seed=init.seed
        )
    model = from_pretrained(init.init)
    if init.config:
        model.config = _overrides(model.config, init.config, source, runtime_only=True)
    return model
