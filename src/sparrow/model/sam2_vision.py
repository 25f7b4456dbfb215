"""The VLM's vision tokens from the model's own SAM2 image encoder through a trainable projector (``vlm_vision: sam2``).

:class:`Sam2VisionTower` replaces Qwen2.5-VL's ``visual`` module (``Qwen2_5_VLModel.visual``) with the same call
signature and return type (``forward(hidden_states [N, 3*tp*p*p], grid_thw [K, 3]) -> BaseModelOutputWithPooling``,
``pooler_output [N / merge**2, d_llm]``), so batching, generation, TSF crops and M-RoPE positions are unchanged.
Per grid item (a video or one TSF crop) it:

1. un-patchifies the Qwen patches (the layout of :func:`sparrow.model.vlm_qwen2_5.patchify`) back to frames
   ``[gt*tp, 3, h, w]`` and undoes the CLIP normalisation;
2. resizes every frame to SAM2's ``S x S`` input (ImageNet-normalised) and runs SAM2's image encoder, frozen and
   without grad: the SAME ``Sam2VideoModel`` the :class:`~sparrow.model.sparrow_model.SparrowModel` owns, held by
   reference (not a submodule, so its weights are neither duplicated in the state dict nor trained by the VLM);
3. pools SAM2's stride-16 embedding ``[C, S/16, S/16]`` and stride-8 map ``[C/4, S/8, S/8]`` to twice the merged
   token grid and folds each 2 x 2 block into channels (``pixel_unshuffle``): ``5C`` features per merged cell and
   frame, keeping where in the cell the object lies;
4. concatenates the ``tp`` frames of a temporal group (Qwen merges 2 frames into one token: the LM sees the motion
   inside a pair), projects with a LLaVA-style MLP (LayerNorm, Linear, GELU, Linear) to the LM width, and adds a
   learned linear map of a Fourier encoding of the cell centre (M-RoPE gives the LM positions too, but a token's
   content then also says where it is, as it says what is there).

Only the projector's and the position map's parameters belong to the tower (``vlm.model.model.visual.*``): the
``vlm`` stage trains them as it trains Qwen's own tower. :func:`set_vlm_vision` swaps the tower of a built model (``"qwen"`` gets a fresh random
Qwen tower back).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

from sparrow.errors import SparrowError
from sparrow.model.config import VISIONS
from sparrow.model.pixel_decoder import PixelDecoder
from sparrow.model.sam2_backbone import IMAGENET_MEAN, IMAGENET_STD
from sparrow.model.vlm_qwen2_5 import CLIP_MEAN, CLIP_STD, QwenVLAdapter

SUBCELLS = 2  # each merged token keeps a SUBCELLS x SUBCELLS layout of SAM2 features
FOURIER_BANDS = 4  # sin/cos of (y, x) of the cell centre at 1, 2, 4, 8 periods over the frame
ENCODE_CHUNK = 16  # frames per SAM2 encoder call


def unpatchify(patches: Tensor, grid: Tensor, patch: int, merge: int, temporal: int) -> Tensor:
    """Inverse of :func:`~sparrow.model.vlm_qwen2_5.patchify`: ``[gt*gh*gw, 3*tp*p*p]`` and ``grid`` ``(gt, gh, gw)``
    -> frames ``[gt*tp, 3, gh*p, gw*p]`` (the padded last frame included)."""
    gt, gh, gw = (int(v) for v in grid)
    x = patches.reshape(gt, gh // merge, gw // merge, merge, merge, 3, temporal, patch, patch)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)  # (gt, tp, c, hb, m, p, wb, m, p)
    return x.reshape(gt * temporal, 3, gh * patch, gw * patch)


def cell_positions(rows: int, cols: int, device: torch.device) -> Tensor:
    """Fourier encoding of the centres of a ``rows x cols`` grid in ``[0, 1]`` -> ``[rows, cols, 4*FOURIER_BANDS]``."""
    y = (torch.arange(rows, device=device, dtype=torch.float32) + 0.5) / rows
    x = (torch.arange(cols, device=device, dtype=torch.float32) + 0.5) / cols
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    freqs = math.pi * 2.0 ** torch.arange(FOURIER_BANDS, device=device, dtype=torch.float32)
    angles = torch.cat([yy[..., None] * freqs, xx[..., None] * freqs], dim=-1)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Sam2VisionTower(nn.Module):
    """Drop-in for Qwen2.5-VL's vision tower reading SAM2's frozen features (module docstring)."""

    def __init__(self, pixel_decoder: PixelDecoder, patch: int, merge: int, temporal: int, out_dim: int) -> None:
        super().__init__()
        self.patch_size, self.spatial_merge_size, self.temporal_patch_size = patch, merge, temporal
        self._sam: tuple[PixelDecoder] = (pixel_decoder,)  # a reference: not a submodule (no second copy, no training)
        channels = pixel_decoder.hidden_size
        self.feature_dim = SUBCELLS * SUBCELLS * (channels + channels // 4)  # stride-16 + stride-8 maps
        in_dim = temporal * self.feature_dim
        hidden = max(out_dim, 256)
        self.projector = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
        )
        self.position = nn.Linear(4 * FOURIER_BANDS, out_dim)
        self.register_buffer("_clip_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_clip_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_sam_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_sam_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def pixel_decoder(self) -> PixelDecoder:
        return self._sam[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.projector[1].weight.dtype

    def sam_inputs(self, frames: Tensor) -> Tensor:
        """CLIP-normalised frames ``[F, 3, h, w]`` -> SAM2 inputs ``[F, 3, S, S]`` (ImageNet-normalised)."""
        size = self.pixel_decoder.image_size
        x = (frames.float() * self._clip_std + self._clip_mean).clamp(0, 1)
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self._sam_mean) / self._sam_std

    @torch.no_grad()
    def sam_features(self, pixels: Tensor) -> list[Tensor]:
        """SAM2 inputs ``[F, 3, S, S]`` -> maps ``[[F, C, S/16, S/16], [F, C/4, S/8, S/8]]`` (frozen, no grad)."""
        decoder = self.pixel_decoder
        dtype = decoder.sam.no_memory_embedding.dtype
        out: list[list[Tensor]] = [[], []]
        for start in range(0, pixels.shape[0], ENCODE_CHUNK):
            feats = decoder.encode(pixels[start : start + ENCODE_CHUNK].to(dtype))
            out[0].append(feats.embedding)
            out[1].append(feats.high_res[-1])
        return [torch.cat(maps) for maps in out]

    def cells(self, maps: list[Tensor], grid: Tensor) -> Tensor:
        """SAM2 maps of one grid item's ``gt*tp`` frames -> cell features ``[gt, gh', gw', tp*feature_dim]``."""
        gt, gh, gw = (int(v) for v in grid)
        rows, cols = gh // self.spatial_merge_size, gw // self.spatial_merge_size
        size = (rows * SUBCELLS, cols * SUBCELLS)
        cells = torch.cat([F.pixel_unshuffle(F.adaptive_avg_pool2d(m, size), SUBCELLS) for m in maps], dim=1)
        cells = cells.reshape(gt, self.temporal_patch_size, self.feature_dim, rows, cols).permute(0, 3, 4, 1, 2)
        return cells.reshape(gt, rows, cols, -1).to(self.dtype)

    def project(self, cells: Tensor) -> Tensor:
        """Cell features ``[gt, gh', gw', tp*feature_dim]`` -> tokens ``[gt, gh', gw', d_llm]`` (with positions)."""
        pos = cell_positions(cells.shape[1], cells.shape[2], cells.device).to(self.dtype)
        return self.projector(cells) + self.position(pos)

    def forward(self, hidden_states: Tensor, grid_thw: Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """Qwen patches ``[N, 3*tp*p*p]`` of ``grid_thw`` ``[K, 3]`` items -> ``pooler_output`` ``[N / merge**2, d_llm]``
        (``last_hidden_state``: the SAM2 cell features ``[N / merge**2, tp*feature_dim]`` before the projector)."""
        sizes = grid_thw.prod(-1).tolist()
        if sum(sizes) != hidden_states.shape[0]:
            raise ValueError(f"{hidden_states.shape[0]} patches for grids {grid_thw.tolist()}")
        frames = [
            unpatchify(p, g, self.patch_size, self.spatial_merge_size, self.temporal_patch_size)
            for p, g in zip(hidden_states.split(sizes), grid_thw)
        ]
        maps = self.sam_features(torch.cat([self.sam_inputs(f) for f in frames]))  # videos and crops in one pass
        cells, offset = [], 0
        for f, g in zip(frames, grid_thw):
            cells.append(self.cells([m[offset : offset + f.shape[0]] for m in maps], g))
            offset += f.shape[0]
        tokens = torch.cat([self.project(c).flatten(0, 2) for c in cells])
        return BaseModelOutputWithPooling(
            last_hidden_state=torch.cat([c.flatten(0, 2) for c in cells]), pooler_output=tokens
        )


def _core(vlm: QwenVLAdapter) -> nn.Module:
    """The ``Qwen2_5_VLModel`` inside the adapter's model (through peft's wrapper when LoRA is attached)."""
    model = vlm.model
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model.model


def vision_tower(vlm: QwenVLAdapter) -> nn.Module:
    """The VLM's vision tower (Qwen's or a :class:`Sam2VisionTower`), through peft's wrapper when LoRA is attached."""
    return _core(vlm).visual


def attach_sam2_tower(vlm: QwenVLAdapter, pixel_decoder: PixelDecoder) -> Sam2VisionTower:
    """Replace the VLM's vision tower by a fresh :class:`Sam2VisionTower` on ``pixel_decoder`` (seeded by the caller's
    RNG state), placed on the VLM's device and dtype."""
    core = _core(vlm)
    ref = core.language_model.embed_tokens.weight
    tower = Sam2VisionTower(pixel_decoder, vlm.patch, vlm.merge, vlm.temporal, vlm.hidden_size)
    core.visual = tower.to(device=ref.device, dtype=ref.dtype)
    return tower


def set_vlm_vision(vlm: QwenVLAdapter, pixel_decoder: PixelDecoder, vision: str) -> None:
    """Give the VLM the tower ``vision`` names (``"sam2"``: a fresh projector; ``"qwen"``: a fresh random Qwen tower
    of its config); a VLM that already has that kind of tower keeps it."""
    if vision not in VISIONS:
        raise SparrowError(f"vlm_vision must be one of {list(VISIONS)}, got {vision!r}")
    core = _core(vlm)
    if isinstance(core.visual, Sam2VisionTower) and vision == "sam2":
        core.visual._sam = (pixel_decoder,)  # the same tower on this model's SAM2
        return
    if not isinstance(core.visual, Sam2VisionTower) and vision == "qwen":
        return
    if vision == "sam2":
        attach_sam2_tower(vlm, pixel_decoder)
        return
    ref = core.language_model.embed_tokens.weight
    tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(core.config.vision_config)
    core.visual = tower.to(device=ref.device, dtype=ref.dtype)
