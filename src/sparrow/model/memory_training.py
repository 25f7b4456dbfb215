"""A differentiable unroll of SAM2's memory over a short clip, for training the memory path.

HF ``Sam2VideoModel.forward`` and ``propagate_in_video_iterator`` run under ``torch.inference_mode``, so nothing
behind them can learn. The methods they call per frame are plain, though, and this module drives them itself,
frame by frame, with autograd on:

- frame 0 is the conditioning frame, prompted with a mask (``Sam2VideoModel._run_single_frame_inference`` with
  ``mask_inputs``: SAM2 takes the mask as its output and derives the object pointer from it);
- each later frame ``t`` is a tracked frame: ``_run_single_frame_inference`` fuses the frame's features with the
  memory of the conditioning frame and of the ``num_maskmem - 1`` previous frames plus their object pointers
  (memory attention, temporal encodings), then runs the mask decoder without prompts;
- after each frame ``Sam2VideoModel._encode_new_memory`` (memory encoder) turns the frame's features and its
  predicted high-resolution mask into the memory that later frames read.

The session is an HF :class:`~transformers.Sam2VideoInferenceSession` (the project's
:class:`~sparrow.model.propagator.BoundedInferenceSession`, reporting the clip length); the vision features of all
frames are computed in one batch with ``get_image_features`` and handed to the session's feature cache one frame at a
time. The only step of ``forward`` redone here is its bookkeeping (store the output, encode and store the memory,
mark the frame tracked), a few lines. The memory encoder is called directly rather than through
``_batch_encode_memories``, which reads the features back from the cache.

So in ``eval()`` mode under ``no_grad`` the logits equal those of :class:`~sparrow.model.propagator.MaskPropagator`
(and HF's own propagation) on the same clip (tests/test_memory_training.py); in training mode HF's training-time
rules apply (a mask prompt enters memory through a sigmoid instead of being binarised; memory-attention dropout).

The raw mask-decoder outputs of each tracked frame (before SAM2 replaces the masks of a frame judged "object absent"
by -1024, which has no gradient) are read with a forward hook on ``sam.mask_decoder``, so a mask loss reaches the
decoder's inputs on every frame. Clips are unrolled one at a time: HF's choice of the best of several masks indexes
the batch in a way that is only right for one clip (with two clips it returns ``[2, 2, h, w]`` masks).

Training a memory path that was never trained (the tiny chain's) also needs :func:`set_single_mask_tracking` (the
decoder's multimask outputs are untrained), :func:`reinit_memory_path` (HF's ``N(0, 0.02)`` init keeps memory
attention uniform) and :func:`calibrate_memory_output` (the memory output's scale differs from the image features the
decoder was trained on); docs/architecture.md §6 item 15 has the measurements.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import Sam2VideoModel

from sparrow.model.propagator import OBJ_ID, BoundedInferenceSession, prompt_mask

__all__ = [
    "MEMORY_INITS",
    "MEMORY_MODULES",
    "MemoryUnroll",
    "calibrate_memory_output",
    "prompt_mask",
    "reinit_memory_path",
    "set_single_mask_tracking",
    "unroll_memory",
]

# SAM2's rule for a mask prompt taken as output (``_use_mask_as_output``): object score +10 if the mask is non-empty
_MASK_SCORE_SCALE, _MASK_SCORE_BIAS = 20.0, -10.0


@dataclass
class MemoryUnroll:
    """SAM2's outputs over one clip of ``T`` frames (``h = w = S/4``, ``M`` candidate masks per tracked frame: 1, or 3
    with SAM2's multimask tracking).

    - ``pred_masks`` ``[T, h, w]``: the low-res logits SAM2 outputs (what the propagator yields with
      ``logits=True``): frame 0 from the mask prompt, tracked frames with ``-1024`` where the object is judged absent;
    - ``mask_logits`` ``[T-1, M, h, w]``: raw decoder logits of the tracked frames ``1..T-1`` (no "absent" clamp);
    - ``iou_scores`` ``[T-1, M]``: predicted IoU of each candidate; ``chosen`` ``[T-1]``: the candidate SAM2 kept;
    - ``object_score_logits`` ``[T-1]``: the decoder's object-presence logit of each tracked frame.
    """

    pred_masks: Tensor
    mask_logits: Tensor
    iou_scores: Tensor
    chosen: Tensor
    object_score_logits: Tensor


def set_single_mask_tracking(sam: Sam2VideoModel, single: bool = True) -> None:
    """Make tracked frames use the decoder's single-mask output (token 0, the one box/point prompting trains) instead
    of the best of its 3 multimask outputs, and switch off the stability-based swap to them. Written into
    ``sam.config`` so that a saved model keeps it."""
    sam.config.multimask_output_for_tracking = not single
    sam.config.mask_decoder_config.dynamic_multimask_via_stability = not single
    sam.mask_decoder.dynamic_multimask_via_stability = not single


@contextmanager
def _decoder_tap(sam: Sam2VideoModel) -> Iterator[list]:
    """Record every output of ``sam.mask_decoder`` (``masks, iou, tokens, object scores``) while the block runs."""
    calls: list = []
    handle = sam.mask_decoder.register_forward_hook(lambda _m, _i, out: calls.append(out))
    try:
        yield calls
    finally:
        handle.remove()


def unroll_memory(sam: Sam2VideoModel, pixel_values: Tensor, prompt: Tensor) -> MemoryUnroll:
    """Run SAM2 over one clip with memory, frame 0 prompted by a mask; differentiable wherever grad is enabled.

    ``pixel_values`` ``[T, 3, S, S]`` SAM2-normalised frames; ``prompt`` ``[S, S]`` float in {0, 1} (see
    :func:`prompt_mask`). The vision encoder runs with grad only if one of its parameters requires it.
    """
    size = int(sam.config.image_size)
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, size, size) or len(pixel_values) < 2:
        raise ValueError(f"pixel_values must be [T >= 2, 3, {size}, {size}], got {list(pixel_values.shape)}")
    if tuple(prompt.shape) != (size, size):
        raise ValueError(f"prompt must be [{size}, {size}], got {list(prompt.shape)}")
    num_frames, device, dtype = len(pixel_values), pixel_values.device, pixel_values.dtype
    encoder_grad = torch.is_grad_enabled() and any(p.requires_grad for p in sam.vision_encoder.parameters())
    with torch.set_grad_enabled(encoder_grad):
        vision = sam.get_image_features(pixel_values, return_dict=True)
    feats, pos = vision.fpn_hidden_states, vision.fpn_position_encoding  # each [HW_l, T, C_l]
    session = BoundedInferenceSession(
        total_frames=num_frames,
        video_height=size,
        video_width=size,
        inference_device=device,
        inference_state_device=device,
        video_storage_device=device,
        dtype=dtype,
    )
    obj = session.obj_id_to_idx(OBJ_ID)
    mask_input = prompt.to(dtype)[None, None]
    pred, raw, iou, chosen, scores = [], [], [], [], []
    for t in range(num_frames):
        key = t == 0
        frame_feats = [f[:, t : t + 1] for f in feats]
        session.cache.cache_vision_features(
            t, {"vision_feats": frame_feats, "vision_pos_embeds": [p[:, t : t + 1] for p in pos]}
        )
        with _decoder_tap(sam) as calls:
            out = sam._run_single_frame_inference(
                inference_session=session,
                frame_idx=t,
                obj_idx=obj,
                batch_size=1,
                is_init_cond_frame=key,
                point_inputs=None,
                mask_inputs=mask_input if key else None,
                reverse=False,
            )
        session.store_output(obj, t, output_value=out, is_conditioning_frame=key)
        if key:  # the mask is the output; its object score is SAM2's rule (eval-mode outputs carry it too)
            score = out.get("object_score_logits")
            if score is None:
                present = (mask_input.flatten(1) > 0).any(1).to(dtype)
                score = (_MASK_SCORE_SCALE * present + _MASK_SCORE_BIAS)[:, None, None]
        else:
            masks, ious, _, score = calls[-1]  # [1, 1, M, h, w], [1, 1, M], _, [1, 1, 1]
            raw.append(masks[0, 0])
            iou.append(ious[0, 0])
            chosen.append(ious[0, 0].argmax() if masks.shape[2] > 1 else torch.zeros((), dtype=torch.long))
            scores.append(score.reshape(()))
            session.frames_tracked_per_obj[obj][t] = {"reverse": False}
        memory, memory_pos = sam._encode_new_memory(
            current_vision_feats=frame_feats[-1],
            pred_masks_high_res=out["high_res_masks"],
            object_score_logits=score,
            is_mask_from_pts=key,
        )
        stored = session.output_dict_per_obj[obj]["cond_frame_outputs" if key else "non_cond_frame_outputs"][t]
        stored["maskmem_features"], stored["maskmem_pos_enc"] = memory, memory_pos
        pred.append(out["pred_masks"][0, 0])
    return MemoryUnroll(
        pred_masks=torch.stack(pred),
        mask_logits=torch.stack(raw),
        iou_scores=torch.stack(iou),
        chosen=torch.stack(chosen).to(device),
        object_score_logits=torch.stack(scores),
    )


@torch.no_grad()
def calibrate_memory_output(sam: Sam2VideoModel, pixel_values: Tensor) -> None:
    """Match the scale of memory-conditioned features to the image features the mask decoder was trained on.

    The mask decoder reads ``fpn[-1] + no_memory_embedding`` on a prompted frame and the memory attention's output on
    a tracked one. That output ends in a LayerNorm (unit scale per token); a decoder trained on the image path alone
    sees features of a much smaller scale (std 0.23 vs 1.0 for the tiny chain). This sets the LayerNorm's weight and
    bias to the per-channel std and mean of the image features of ``pixel_values`` ``[N, 3, S, S]``, so that the
    untrained memory path starts from features on the decoder's scale.
    """
    feats = sam.get_image_features(pixel_values, return_dict=True).fpn_hidden_states[-1] + sam.no_memory_embedding
    flat = feats.flatten(0, 1)  # [HW * N, C]
    norm = sam.memory_attention.layer_norm
    norm.weight.copy_(flat.std(0))
    norm.bias.copy_(flat.mean(0))


MEMORY_MODULES = (
    "memory_encoder",
    "memory_attention",
    "object_pointer_proj",
    "temporal_positional_encoding_projection_layer",
    "mask_downsample",
)
MEMORY_INITS = ("keep", "reset", "xavier")


@torch.no_grad()
def reinit_memory_path(sam: Sam2VideoModel, scheme: str) -> None:
    """Re-initialise the modules of SAM2's memory path (:data:`MEMORY_MODULES`) before training them from scratch.

    HF initialises every linear and convolution layer with ``N(0, 0.02)``; in the memory attention that makes the
    attention logits nearly constant (std 0.02 on the tiny chain), so attention stays uniform over all memory tokens
    for hundreds of steps and no position can be told from another. ``"reset"`` restores PyTorch's default
    initialisation (``reset_parameters()``, what SAM2's reference code leaves in place); ``"xavier"`` uses
    Xavier-uniform weights and zero biases for linear layers (and the default for the rest); ``"keep"`` changes nothing.
    """
    if scheme not in MEMORY_INITS:
        raise ValueError(f"memory init must be one of {MEMORY_INITS}, got {scheme!r}")
    if scheme == "keep":
        return
    for name in MEMORY_MODULES:
        for module in getattr(sam, name).modules():
            if scheme == "xavier" and isinstance(module, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                torch.nn.init.zeros_(module.bias)
            elif hasattr(module, "reset_parameters") and not list(module.children()):
                module.reset_parameters()
