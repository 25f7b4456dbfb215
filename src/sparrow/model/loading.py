"""Building, saving and loading SPARROW models (config.json + one safetensors file + backbone configs).

Folder layout written by :func:`save_pretrained`::

    <dir>/config.json            SparrowConfig
    <dir>/vlm/config.json        the VLM's Hugging Face config, and its tokenizer files
    <dir>/sam2/config.json       the SAM2 video config
    <dir>/model.safetensors      every weight of the model (strictly loaded: missing/unexpected keys are errors)

Presets: ``tiny`` builds random tiny backbones locally (no download) and goes through :func:`build_model`, the same
path as ``real`` (``Qwen/Qwen2.5-VL-3B-Instruct`` + ``facebook/sam2.1-hiera-base-plus`` from the local Hugging
Face cache). ``default`` is the bundled trained model in ``sparrow/assets/default`` when it exists.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model
from transformers import (
    AutoTokenizer,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Sam2VideoConfig,
    Sam2VideoModel,
)

from sparrow.atomic import atomic_dir, atomic_path
from sparrow.errors import SparrowError
from sparrow.model.config import SparrowConfig
from sparrow.model.sam2_backbone import load_sam2
from sparrow.model.sparrow_model import SparrowModel
from sparrow.model.vlm_qwen2_5 import QwenVLAdapter

REAL_VLM = "Qwen/Qwen2.5-VL-3B-Instruct"
REAL_SAM2 = "facebook/sam2.1-hiera-base-plus"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets" / "default"
WEIGHTS_NAME = "model.safetensors"


def real_config() -> SparrowConfig:
    """Settings for the public backbones (method.md defaults: 16 frames, 100 proposals, 300 queries, 6 layers)."""
    return SparrowConfig(
        vlm_max_frame_pixels=448 * 448, vlm_max_crop_pixels=224 * 224, vlm_frames=16, max_new_tokens=64,
        proposer_hidden=256, proposer_queries=300, proposer_layers=6, proposer_heads=8,
        base_vlm=REAL_VLM, base_sam2=REAL_SAM2,
    )


def tiny_config() -> SparrowConfig:
    return SparrowConfig(base_vlm="tiny", base_sam2="tiny", proposer_fine=True)


def build_model(config: SparrowConfig, vlm_path: str | Path, sam2_path: str | Path, seed: int = 0) -> SparrowModel:
    """Compose a model from pretrained backbone folders (or hub ids in the local cache); new parts are seeded."""
    vlm = QwenVLAdapter.from_pretrained(vlm_path, max_frame_pixels=config.vlm_max_frame_pixels, max_crop_pixels=config.vlm_max_crop_pixels)
    sam = load_sam2(str(sam2_path))
    torch.manual_seed(seed)
    return SparrowModel(config, vlm, sam)


def build_tiny(seed: int = 0, config: SparrowConfig | None = None, sam_image_size: int = 256, workdir: str | Path | None = None) -> SparrowModel:
    """The tiny preset: random tiny backbones written locally, then loaded like real ones."""
    from sparrow.model.tiny_backbones import write_tiny_sam2, write_tiny_vlm

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        vlm_dir = write_tiny_vlm(Path(tmp) / "vlm", seed=seed)
        sam_dir = write_tiny_sam2(Path(tmp) / "sam2", seed=seed, image_size=sam_image_size)
        return build_model(config or tiny_config(), vlm_dir, sam_dir, seed=seed)


def save_pretrained(model: SparrowModel, path: str | Path) -> Path:
    """Write the model folder atomically (an existing folder is replaced only once the new one is complete)."""
    with atomic_dir(path) as tmp:
        model.config.save(tmp / "config.json")
        model.vlm.model.config.save_pretrained(tmp / "vlm")
        model.vlm.tokenizer.save_pretrained(tmp / "vlm")
        model.sam.config.save_pretrained(tmp / "sam2")
        with atomic_path(tmp / WEIGHTS_NAME) as weights:  # safetensors alone leaves the file owner-only (0600)
            save_safetensors_model(model, str(weights))
    return Path(path)


def from_pretrained(path: str | Path, device: str | torch.device = "cpu") -> SparrowModel:
    """Load a folder written by :func:`save_pretrained`; every weight must match (strict)."""
    path = Path(path)
    if not path.is_dir():
        raise SparrowError("no such model folder", path)
    weights = path / WEIGHTS_NAME
    if not weights.exists():
        raise SparrowError(f"model folder has no weights ({WEIGHTS_NAME})", path)
    config = SparrowConfig.load(path / "config.json")
    for sub in ("vlm", "sam2"):
        if not (path / sub / "config.json").exists():
            raise SparrowError(f"model folder lacks {sub}/config.json", path)
    tokenizer = AutoTokenizer.from_pretrained(str(path / "vlm"), local_files_only=True)
    vlm_model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig.from_pretrained(str(path / "vlm")))
    vlm = QwenVLAdapter(vlm_model, tokenizer, max_frame_pixels=config.vlm_max_frame_pixels, max_crop_pixels=config.vlm_max_crop_pixels)
    sam = Sam2VideoModel(Sam2VideoConfig.from_pretrained(str(path / "sam2")))
    model = SparrowModel(config, vlm, sam)
    try:
        missing, unexpected = load_safetensors_model(model, str(weights), strict=False)
    except Exception as exc:  # safetensors raises on a truncated/corrupt file or a shape mismatch
        raise SparrowError(f"cannot load weights: {str(exc).splitlines()[0]}", weights) from exc
    if missing or unexpected:
        raise SparrowError(f"weights do not match the config: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}", weights)
    return model.to(device).eval()


def load_model(name_or_path: str = "default", device: str | torch.device | None = None) -> SparrowModel:
    """``"default"`` (bundled), ``"tiny"`` (random tiny preset), ``"real"`` (public backbones, untrained new parts) or a folder."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name_or_path == "tiny":
        return build_tiny().to(device).eval()
    if name_or_path == "real":
        return build_model(real_config(), REAL_VLM, REAL_SAM2).to(device).eval()
    if name_or_path == "default":
        if not (BUNDLED_DIR / WEIGHTS_NAME).exists():
            raise SparrowError(
                "no bundled default model is installed yet (train one with `sparrow train`); use --model tiny for the untrained tiny preset"
            )
        return from_pretrained(BUNDLED_DIR, device)
    return from_pretrained(os.fspath(name_or_path), device)
