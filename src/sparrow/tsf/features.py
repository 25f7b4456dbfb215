"""Crop features for TSF clustering: appearance from a frozen encoder joined with box geometry.

The joint feature of a crop is ``[appearance ‖ geometry]``. Each part is standardised per column over the
crops of one track and scaled by ``1/sqrt(D_part)``, so appearance and geometry carry the same total weight
whatever their dimensions (``geometry_weight`` rescales the geometry part).

Appearance encoders are callables ``crops [N, S, S, 3] uint8 -> [N, D] float``:
- :class:`VisionModelEncoder` wraps a frozen ``transformers`` vision model (CLIP/SigLIP/DINOv2 vision model, or
  any module taking ``pixel_values``), pooled output or mean over tokens;
- :class:`HandcraftedEncoder` is a deterministic, weight-free colour histogram + HOG (tests, CPU fallback).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage.feature import hog

from sparrow.errors import SparrowError

AppearanceEncoder = Callable[[np.ndarray], np.ndarray]


class HandcraftedEncoder:
    """Joint RGB histogram (``bins**3``, L1-normalised) + HOG of the grey crop at ``hog_size`` px.

    ``__call__(crops [N, S, S, 3] uint8) -> [N, bins**3 + hog_dim]`` float32.
    """

    def __init__(self, bins: int = 4, hog_size: int = 32) -> None:
        self.bins = bins
        self.hog_size = hog_size

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        out = []
        for crop in crops:
            q = (crop.astype(np.int64) * self.bins) // 256
            codes = (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]
            hist = np.bincount(codes.ravel(), minlength=self.bins**3).astype(np.float32)
            hist /= max(hist.sum(), 1.0)
            grey = cv2.cvtColor(
                cv2.resize(crop, (self.hog_size, self.hog_size), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY
            )
            h = hog(grey, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), feature_vector=True)
            out.append(np.concatenate([hist, h.astype(np.float32)]))
        return np.stack(out) if out else np.zeros((0, self.bins**3), dtype=np.float32)


class VisionModelEncoder:
    """A frozen vision model as appearance encoder.

    ``model`` takes ``pixel_values [N, 3, image_size, image_size]`` (normalised with ``mean``/``std``) and
    returns an output with ``pooler_output [N, D]`` or ``last_hidden_state [N, L, D]`` (mean over L is used).
    ``__call__(crops [N, S, S, 3] uint8) -> [N, D]`` float32, in batches of ``batch_size``, without gradients.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        image_size: int,
        mean: Sequence[float] = (0.48145466, 0.4578275, 0.40821073),
        std: Sequence[float] = (0.26862954, 0.26130258, 0.27577711),
        batch_size: int = 32,
    ) -> None:
        self.model = model.eval()
        self.image_size = image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, crops: np.ndarray) -> np.ndarray:
        param = next(self.model.parameters())
        feats = []
        for start in range(0, len(crops), self.batch_size):
            x = (
                torch.from_numpy(np.ascontiguousarray(crops[start : start + self.batch_size]))
                .permute(0, 3, 1, 2)
                .float()
                / 255.0
            )
            x = torch.nn.functional.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
            x = ((x - self.mean) / self.std).to(device=param.device, dtype=param.dtype)
            out = self.model(pixel_values=x)
            pooled = getattr(out, "pooler_output", None)
            if pooled is None or pooled.ndim != 2:
                pooled = out.last_hidden_state.mean(1)
            feats.append(pooled.float().cpu().numpy())
        return np.concatenate(feats) if feats else np.zeros((0, 0), dtype=np.float32)


def geometry_features(
    boxes: np.ndarray, frames: Sequence[int], frame_size: tuple[int, int], num_frames: int
) -> np.ndarray:
    """Box geometry ``[N, 6]``: centre x/W, centre y/H, log(w/W), log(h/H), log(w/h), time t/(T-1).

    ``boxes [N, 4]`` are ``[x0, y0, x1, y1]`` pixels of frames ``frame_size = (H, W)``.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    H, W = frame_size
    w = np.maximum(b[:, 2] - b[:, 0], 1.0)
    h = np.maximum(b[:, 3] - b[:, 1], 1.0)
    t = np.asarray(frames, dtype=np.float64) / max(num_frames - 1, 1)
    return np.stack(
        [(b[:, 0] + b[:, 2]) / (2 * W), (b[:, 1] + b[:, 3]) / (2 * H), np.log(w / W), np.log(h / H), np.log(w / h), t],
        1,
    )


def _standardise(part: np.ndarray) -> np.ndarray:
    part = np.asarray(part, dtype=np.float64)
    std = part.std(0)
    scaled = (part - part.mean(0)) / np.where(std > 1e-12, std, 1.0)
    return scaled / np.sqrt(max(part.shape[1], 1))


def joint_features(appearance: np.ndarray, geometry: np.ndarray, geometry_weight: float = 1.0) -> np.ndarray:
    """``[N, Da + Dg]``: standardised appearance ``[N, Da]`` joined with ``geometry_weight`` x standardised
    geometry ``[N, Dg]``."""
    if len(appearance) != len(geometry):
        raise ValueError(f"{len(appearance)} appearance rows for {len(geometry)} geometry rows")
    return np.concatenate([_standardise(appearance), geometry_weight * _standardise(geometry)], 1)


def load_vision_encoder(
    model_dir: str | Path, device: str | torch.device = "cpu", batch_size: int = 32
) -> VisionModelEncoder:
    """A :class:`VisionModelEncoder` from a local ``transformers`` folder (CLIP/SigLIP, vision-only or not, DINOv2).

    A two-tower model (``.vision_model``) contributes its vision tower; the input size comes from the config and
    the normalisation from the folder's image processor when it has one (CLIP's otherwise).
    """
    from transformers import AutoImageProcessor, AutoModel

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise SparrowError(
            "no vision model here (config.json missing): save one or download e.g. facebook/dinov2-small",
            model_dir,
        )
    try:
        model = AutoModel.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise SparrowError(f"cannot load the vision model ({type(exc).__name__}: {exc})", model_dir) from exc
    model = getattr(model, "vision_model", model).to(device)
    cfg = getattr(model.config, "vision_config", model.config)
    size = getattr(cfg, "image_size", 224)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    kwargs = {}
    if (model_dir / "preprocessor_config.json").is_file():
        proc = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)
        kwargs = {"mean": proc.image_mean, "std": proc.image_std}
    return VisionModelEncoder(model, size, batch_size=batch_size, **kwargs)
