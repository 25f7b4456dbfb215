"""Turn dataset samples into a :class:`SparrowBatch` for the model (the VLM-specific part is the adapter's).

A sample is any object with the fields of ``sparrow.data.dataset.ReferringSample``:
``vlm_frames`` uint8 ``[Tv, H, W, 3]``, ``question``, ``answer`` (one ``[BOX] [SEG]`` per target slot),
``sam_frames`` uint8 ``[Ts, H, W, 3]``, ``masks`` bool ``[N, Ts, H, W]``, ``boxes`` float ``[N, Ts, 4]`` pixel xyxy
(NaN where absent); optional ``object_boxes`` (per SAM frame, ``[M, 4]`` pixel boxes of every object),
``tsf_crops`` uint8 ``[K, h, w, 3]``, ``seconds_per_frame``, and ``identity_ids`` ``[M]`` with ``identity_masks``
``[M, Ts, H, W]`` (SynthRef identity targets).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sparrow.errors import SparrowError
from sparrow.model.sparrow_model import SparrowBatch, SparrowModel
from sparrow.model.vlm_qwen2_5 import VLMSample


def make_batch(model: SparrowModel, samples: Sequence[Any], with_tsf: bool = False) -> SparrowBatch:
    """Collate samples of equal frame size and equal SAM-frame/slot counts into one batch."""
    shapes = {tuple(s.masks.shape) for s in samples}
    if len(shapes) != 1:
        raise SparrowError(f"samples in one batch must share mask shape [N, Ts, H, W], got {sorted(shapes)}")
    vlm = model.vlm.collate(
        [
            VLMSample(
                frames=s.vlm_frames,
                question=s.question,
                answer=s.answer,
                seconds_per_frame=float(getattr(s, "seconds_per_frame", 1.0)),
                tsf_crops=getattr(s, "tsf_crops", None) if with_tsf else None,
            )
            for s in samples
        ]
    )
    sam_pixels = torch.stack([model.preprocessor(s.sam_frames) for s in samples])
    h, w = samples[0].masks.shape[-2:]
    scale = np.array([w, h, w, h], dtype=np.float32)
    boxes = torch.from_numpy(np.stack([np.asarray(s.boxes, dtype=np.float32) / scale for s in samples]))
    masks = torch.from_numpy(np.stack([np.asarray(s.masks, dtype=bool) for s in samples])).float()
    object_boxes = None
    if all(getattr(s, "object_boxes", None) is not None for s in samples):
        object_boxes = [
            torch.as_tensor(np.asarray(b, dtype=np.float32).reshape(-1, 4) / scale)
            for s in samples
            for b in s.object_boxes
        ]
    identity_ids, identity_masks = _identities(samples)
    target_identity = None
    if identity_ids is not None:
        target_identity = torch.tensor([int(getattr(s, "target_identity", -1)) for s in samples], dtype=torch.int64)
    track_pixels = track_boxes = None
    if model.track_selector is not None and all(getattr(s, "vlm_boxes", None) is not None for s in samples):
        track_pixels = torch.stack([model.preprocessor(s.vlm_frames) for s in samples])
        track_boxes = torch.from_numpy(np.stack([np.asarray(s.vlm_boxes, dtype=np.float32) / scale for s in samples]))
    return SparrowBatch(
        vlm=vlm,
        sam_pixels=sam_pixels,
        masks=masks,
        boxes=boxes,
        object_boxes=object_boxes,
        identity_ids=identity_ids,
        identity_masks=identity_masks,
        target_identity=target_identity,
        track_pixels=track_pixels,
        track_boxes=track_boxes,
        questions=[s.question for s in samples],
    )


def _identities(samples: Sequence[Any]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Identity targets padded over the batch: ids ``[B, M]`` (-1 padding) and masks ``[B, M, Ts, H, W]`` float, or
    ``(None, None)`` unless every sample carries them (``sparrow.data.synthref.identity.IdentitySample``)."""
    if not samples or any(getattr(s, "identity_ids", None) is None for s in samples):
        return None, None
    m = max(1, max(len(s.identity_ids) for s in samples))
    ts, h, w = samples[0].masks.shape[1:]
    ids = torch.full((len(samples), m), -1, dtype=torch.int64)
    masks = torch.zeros((len(samples), m, ts, h, w))
    for b, s in enumerate(samples):
        n = len(s.identity_ids)
        ids[b, :n] = torch.as_tensor(np.asarray(s.identity_ids, dtype=np.int64))
        masks[b, :n] = torch.from_numpy(np.asarray(s.identity_masks, dtype=bool)).float()
    return ids, masks
