"""SAM2 (Hugging Face ``Sam2VideoModel``): tiny config, random build, offline loading, frame preprocessing.

One ``Sam2VideoModel`` serves the whole SPARROW model: its image encoder, prompt encoder and mask decoder are the
pixel decoder (:mod:`sparrow.model.pixel_decoder`), and its memory modules propagate masks through a video
(:mod:`sparrow.model.propagator`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam2VideoConfig, Sam2VideoModel

from sparrow.data.video_io import FrameView
from sparrow.errors import SparrowError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REAL_SAM2 = "facebook/sam2.1-hiera-base-plus"


def tiny_sam2_config(image_size: int = 256) -> Sam2VideoConfig:
    """A small random SAM2 video config for tests and the CPU demo (≈1.35M parameters at any image size).

    Hidden width 128 for the FPN, prompt encoder, mask decoder and memory attention; memory width 64 (the value
    ``Sam2VideoMemoryAttentionLayer`` hard-codes); 3 memory slots and 4 object pointers; ``sparrow_box_mask_prompt``
    on (a box prompt also goes in as a rasterised mask prompt, see :mod:`sparrow.model.pixel_decoder`). ``image_size`` must be a
    multiple of 64 (the Hiera trunk downsamples by 32 and the windows need at least 2x2 tokens).
    """
    if image_size < 64 or image_size % 64:
        raise SparrowError(f"tiny SAM2 image_size must be a multiple of 64 and at least 64, got {image_size}")
    s, hidden = image_size, 128
    vision = {
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": 16,
            "num_attention_heads": 1,
            "image_size": [s, s],
            "blocks_per_stage": [1, 1, 2, 1],
            "embed_dim_per_stage": [16, 32, 64, 128],
            "num_attention_heads_per_stage": [1, 1, 2, 2],
            "window_size_per_stage": [8, 4, 4, 4],
            "global_attention_blocks": [3],  # never the first block of a query-pooled stage
            "window_positional_embedding_background_size": [4, 4],
        },
        "backbone_channel_list": [128, 64, 32, 16],
        "backbone_feature_sizes": [[s // 4] * 2, [s // 8] * 2, [s // 16] * 2],
        "fpn_hidden_size": hidden,
    }
    prompt = {"hidden_size": hidden, "image_size": s, "patch_size": 16, "mask_input_channels": 16}
    decoder = {
        "hidden_size": hidden,
        "mlp_dim": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "iou_head_hidden_dim": hidden,
    }
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=prompt,
        mask_decoder_config=decoder,
        image_size=s,
        num_maskmem=3,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[s // 16, s // 16],
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=64,
        max_object_pointers_in_encoder=4,
    )
    # boxes also reach the decoder as a rasterised mask prompt (pixel_decoder module docstring): without it a SAM2
    # trained from random weights ignores its box prompts
    config.sparrow_box_mask_prompt = True
    return config


def build_sam2(config: Sam2VideoConfig) -> Sam2VideoModel:
    """A randomly initialised ``Sam2VideoModel`` in eval mode (seed torch first for reproducible weights).

    SAM2 has one random-Fourier positional basis, which the public checkpoints load into both HF buffers
    (``shared_image_embedding`` and ``prompt_encoder.shared_embedding``); a random HF init draws the two
    independently, putting box/point coordinates in a different basis from the image positions (a segmenter
    trained from there learns to ignore its prompts). They are tied here, as in the checkpoints.
    """
    sam = Sam2VideoModel(config).eval()
    with torch.no_grad():
        sam.prompt_encoder.shared_embedding.positional_embedding.copy_(sam.shared_image_embedding.positional_embedding)
    return sam


def load_sam2(name_or_path: str | Path) -> Sam2VideoModel:
    """Load SAM2 from a local folder or the local Hugging Face cache; never downloads.

    Raises :class:`SparrowError` (one line naming the download command) when the weights are not there.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists() and not path.is_dir():
        raise SparrowError("a SAM2 checkpoint must be a folder (config.json + model.safetensors)", path)
    if not path.exists() and (name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name):
        raise SparrowError("no such SAM2 checkpoint folder", path)
    try:
        model = Sam2VideoModel.from_pretrained(str(path) if path.is_dir() else name, local_files_only=True)
    except (OSError, ValueError) as exc:
        if path.is_dir():
            reason = f"{type(exc).__name__}: {exc}"
            raise SparrowError(f"no loadable SAM2 checkpoint in this folder ({reason})", path) from exc
        raise SparrowError(
            f"SAM2 checkpoint '{name}' is not in the local Hugging Face cache; fetch it with "
            f"`hf download {name if '/' in name else REAL_SAM2}` (or give a local folder)"
        ) from exc
    return model.eval()


class Sam2Preprocessor:
    """Frames -> SAM2 pixel values, the same numbers as HF ``Sam2ImageProcessor(size={"height": S, "width": S})``.

    Steps: bilinear resize to ``S x S`` with antialiasing (aspect ratio not kept, as SAM2 does), rounding back to
    uint8 (as the HF processor resizes uint8 images), ``/ 255``, ImageNet normalisation. No torchvision needed.
    """

    def __init__(self, image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def resize(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` (or one ``[H, W, 3]``) -> uint8 ``[T, 3, S, S]``."""
        x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise SparrowError(f"frames must be uint8 [T, H, W, 3], got shape {list(x.shape)}")
        if x.dtype != torch.uint8:
            raise SparrowError(f"frames must be uint8, got {x.dtype}")
        x = x.permute(0, 3, 1, 2).float()
        size = (self.image_size, self.image_size)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x.round_().clamp_(0, 255).to(torch.uint8)

    def resized_view(self) -> FrameView:
        """:meth:`resize` of one frame as a :class:`~sparrow.data.video_io.FrameView`: ``[H, W, 3]`` -> uint8
        ``[3, S, S]`` (``3 * S * S`` bytes), what the propagator reads; a ``Video`` that keeps it serves it from
        memory."""
        size = self.image_size
        return FrameView(("sam2-resize", size), lambda frame: self.resize(frame)[0], 3 * size * size)

    def normalize(self, resized: torch.Tensor) -> torch.Tensor:
        """uint8 ``[T, 3, S, S]`` -> float32 ``[T, 3, S, S]`` (``/255``, ImageNet mean/std)."""
        return (resized.float() / 255.0 - self.mean) / self.std

    def __call__(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` (numpy or torch; one ``[H, W, 3]`` frame also accepted) -> float ``[T, 3, S, S]``."""
        return self.normalize(self.resize(frames))
