"""The dual-prompt pixel decoder: SAM2's image encoder, prompt encoder and mask decoder.

Sparse prompt tokens, per sample (``C`` = SAM2 hidden width, 256 for the real checkpoints):

- box and ``[SEG]``: ``[PE(corner 1) + label-2 embedding, PE(corner 2) + label-3 embedding, e_SEG]``
  -> ``[B, 1, 3, C]``;
- ``[SEG]`` only: ``[e_SEG]`` -> ``[B, 1, 1, C]``;
- box only: SAM2's own box prompt ``[corner 1, corner 2, not-a-point padding]`` -> ``[B, 1, 3, C]``, token for token
  what HF ``Sam2Model`` builds from ``input_boxes`` (so a pretrained SAM2 sees the prompt it was trained on).

Corners come from SAM2's prompt encoder as points with labels 2 and 3 (coordinates scaled to the ``S x S`` input,
shifted by +0.5 to the pixel centre inside the encoder). The dense prompt is SAM2's no-mask embedding; one mask is
output (token 0) and the stability-based multimask fallback is off while decoding.

Box as a mask prompt (SAM2 configs with ``sparrow_box_mask_prompt = True``, set by
:func:`~sparrow.model.sam2_backbone.tiny_sam2_config`): a box is also rasterised onto SAM2's mask-input grid
(``S/4 x S/4``, +10 inside, -10 outside) and fed through the prompt encoder's ``mask_embed`` as the dense prompt,
exactly what HF ``Sam2Model`` does with ``input_masks``. A SAM2 trained from random weights with corner tokens alone
learns a prompt-independent "every object" mask (docs/architecture.md §6 item 11): the corner
tokens reach the pixels only through learned attention on positional encodings, which loses to the image-only
shortcut; the rasterised box gives every pixel "inside / outside" at once. Pretrained checkpoints lack the flag and
keep SAM2's own box prompt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import Sam2VideoModel


@dataclass
class ImageFeatures:
    """SAM2 features of a batch of frames.

    ``embedding``: ``[B, C, S/16, S/16]`` with SAM2's no-memory embedding added (as the image predictor does);
    ``high_res``: ``[[B, C/8, S/4, S/4], [B, C/4, S/8, S/8]]`` (already through the decoder's ``conv_s0``/``conv_s1``),
    the skip features SAM2's mask decoder takes.
    """

    embedding: Tensor
    high_res: list[Tensor]


@dataclass
class DecoderOutput:
    """Single-mask decoder output: ``mask_logits [B, S/4, S/4]``, ``iou_scores [B]``, ``object_score_logits [B]``."""

    mask_logits: Tensor
    iou_scores: Tensor
    object_score_logits: Tensor


BOX_MASK_LOGIT = 10.0


def box_mask_logits(boxes: Tensor, size: int) -> Tensor:
    """Normalised xyxy boxes ``[B, 4]`` -> mask-prompt logits ``[B, 1, size, size]``: ``+BOX_MASK_LOGIT`` on every
    grid cell the box overlaps (at least one cell), ``-BOX_MASK_LOGIT`` elsewhere."""
    edges = torch.arange(size, device=boxes.device, dtype=boxes.dtype) / size  # left/top edge of each cell
    x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
    cols = (edges[None] + 1.0 / size > x1) & (edges[None] < x2.clamp(min=x1 + 1e-6))  # [B, size]
    rows = (edges[None] + 1.0 / size > y1) & (edges[None] < y2.clamp(min=y1 + 1e-6))
    inside = rows[:, :, None] & cols[:, None, :]
    return (inside.to(boxes.dtype) * 2.0 - 1.0)[:, None] * BOX_MASK_LOGIT


@contextmanager
def _single_mask_only(decoder: nn.Module) -> Iterator[None]:
    """Switch off ``dynamic_multimask_via_stability`` for one call, then restore it."""
    before = decoder.dynamic_multimask_via_stability
    decoder.dynamic_multimask_via_stability = False
    try:
        yield
    finally:
        decoder.dynamic_multimask_via_stability = before


class PixelDecoder(nn.Module):
    """Mask decoding from SAM2 features with a box and/or a ``[SEG]`` embedding as prompts.

    Holds ``sam`` as a submodule: the one copy of SAM2 in the model (the propagator uses the same object).
    """

    def __init__(self, sam: Sam2VideoModel) -> None:
        super().__init__()
        self.sam = sam
        self.hidden_size: int = int(sam.config.vision_config.fpn_hidden_size)
        self.image_size: int = int(sam.config.image_size)
        self.box_mask_prompt: bool = bool(getattr(sam.config, "sparrow_box_mask_prompt", False))

    def encode(self, pixel_values: Tensor) -> ImageFeatures:
        """``[B, 3, S, S]`` normalised pixels -> :class:`ImageFeatures`.

        Calls the vision encoder directly (``get_image_embeddings`` runs under ``no_grad``), so the encoder trains
        when it is unfrozen and grad is enabled.
        """
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, self.image_size, self.image_size):
            size = self.image_size
            raise ValueError(f"pixel_values must be [B, 3, {size}, {size}], got {list(pixel_values.shape)}")
        batch = pixel_values.shape[0]
        maps = list(self.sam.get_image_features(pixel_values, return_dict=True).fpn_hidden_states)  # each [HW, B, C_l]
        maps[-1] = maps[-1] + self.sam.no_memory_embedding
        sizes = self.sam.config.vision_config.backbone_feature_sizes
        feats = [m.permute(1, 2, 0).reshape(batch, -1, *size) for m, size in zip(maps, sizes)]
        return ImageFeatures(embedding=feats[-1], high_res=feats[:-1])

    def sparse_prompt(self, seg_embeddings: Tensor | None, boxes: Tensor | None) -> Tensor:
        """Sparse prompt tokens ``[B, 1, N, C]`` (N = 3 with a box, 1 with ``[SEG]`` only); see the module docstring.

        ``seg_embeddings``: ``[B, C]`` or None; ``boxes``: ``[B, 4]`` normalised xyxy in ``[0, 1]`` or None.
        """
        if seg_embeddings is None and boxes is None:
            raise ValueError("decode needs a [SEG] embedding, a box, or both")
        if seg_embeddings is not None and (seg_embeddings.ndim != 2 or seg_embeddings.shape[1] != self.hidden_size):
            raise ValueError(f"seg_embeddings must be [B, {self.hidden_size}], got {list(seg_embeddings.shape)}")
        if boxes is not None and (boxes.ndim != 2 or boxes.shape[1] != 4):
            raise ValueError(f"boxes must be [B, 4] normalised xyxy, got {list(boxes.shape)}")
        if seg_embeddings is not None and boxes is not None and seg_embeddings.shape[0] != boxes.shape[0]:
            raise ValueError(f"batch sizes differ: {seg_embeddings.shape[0]} [SEG] embeddings, {boxes.shape[0]} boxes")
        dtype = self.sam.prompt_encoder.point_embed.weight.dtype
        seg = None if seg_embeddings is None else seg_embeddings.to(dtype)[:, None, None, :]
        if boxes is None:
            return seg
        batch = boxes.shape[0]
        corners = (boxes.to(dtype) * self.image_size).view(batch, 1, 2, 2)  # pixels of the S x S input
        labels = torch.tensor([2, 3], dtype=torch.int32, device=boxes.device).expand(batch, 1, 2)
        # points without boxes: the encoder appends SAM2's "not a point" padding token -> [c1, c2, pad]
        sparse, _ = self.sam.prompt_encoder(
            input_points=corners, input_labels=labels, input_boxes=None, input_masks=None
        )
        if seg is None:
            return sparse
        return torch.cat([sparse[:, :, :2], seg], dim=2)

    def dense_prompt(self, batch: int, boxes: Tensor | None = None) -> Tensor:
        """The dense prompt ``[B, C, S/16, S/16]``: SAM2's no-mask embedding, or, when ``boxes`` ``[B, 4]`` are given
        and :attr:`box_mask_prompt` is on, the prompt encoder's embedding of :func:`box_mask_logits`."""
        enc = self.sam.prompt_encoder
        if boxes is not None and self.box_mask_prompt:
            size = 4 * int(enc.image_embedding_size[0])
            return enc.mask_embed(box_mask_logits(boxes.to(enc.no_mask_embed.weight.dtype), size))
        return enc.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *enc.image_embedding_size)

    def decode(self, features: ImageFeatures, seg_embeddings: Tensor | None, boxes: Tensor | None) -> DecoderOutput:
        """Single-mask SAM2 decoding with the sparse layout of :meth:`sparse_prompt` and :meth:`dense_prompt`.

        Returns raw logits (no "object absent" clamping), so mask losses reach ``seg_embeddings`` and, when they
        require grad, SAM2's weights.
        """
        sparse = self.sparse_prompt(seg_embeddings, boxes)
        batch = features.embedding.shape[0]
        if sparse.shape[0] != batch:
            raise ValueError(f"{sparse.shape[0]} prompts for {batch} images")
        position = self.sam.get_image_wide_positional_embeddings().repeat(batch, 1, 1, 1)
        decoder = self.sam.mask_decoder
        with _single_mask_only(decoder):
            masks, iou, _, object_scores = decoder(
                image_embeddings=features.embedding,
                image_positional_embeddings=position,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=self.dense_prompt(batch, boxes).to(features.embedding.dtype),
                multimask_output=False,
                high_resolution_features=features.high_res,
            )
        # masks [B, 1, 1, S/4, S/4], iou [B, 1, 1], object_scores [B, 1, 1]
        return DecoderOutput(
            mask_logits=masks[:, 0, 0], iou_scores=iou[:, 0, 0], object_score_logits=object_scores[:, 0, 0]
        )

    @staticmethod
    def upsample(mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
        """Bilinear resize of logits ``[B, h, w]`` -> ``[B, H, W]`` (valid because frames were squashed to S x S)."""
        return F.interpolate(mask_logits[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
