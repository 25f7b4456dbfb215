"""Sizes of the real model (Qwen2.5-VL-3B-Instruct + SAM2.1 Hiera base+) for the estimates in docs/gpu.md.

Run from the repository root (CPU, no download; about 3 CPU minutes and 5 GB)::

    PYTHONPATH=src python benchmarks/real_model_size.py [--frames 16] [--height 720] [--width 1280] [--skip-measure]

Prints, in this order:

1. parameters of the full configs (built on the ``meta`` device: no memory), per part, and the trainable
   parameters of each stage of ``configs/real_stage_*.yaml`` (plus a full fine-tune of the VLM);
2. tokens per training sample, from the adapter's own sizing rules (``fit_to_patches``, 2x2 merge, temporal 2);
3. MEASURED on CPU at the real widths with a reduced depth and random weights (``--skip-measure`` skips it):
   bytes saved for backward (``torch.autograd.graph.saved_tensors_hooks``, unique storages, parameters excluded)
   by one LM decoder layer in a LoRA step under bf16 autocast, split into the bf16 copies of the layer's frozen
   weights and a per-token part; by one vision block (full fine-tune); by the rest of a ``vlm``-stage step (mask
   decoder, selector, heads, at 8 SAM frames of 1024 px); by the LM head + CE loss at the full vocabulary; by the
   proposer per 1024-px frame; and the peak allocation (``torch.profiler``) of a no-grad SAM2 encoder pass per
   1024-px frame;
4. FLOPs per sample of each stage (matmuls and attention, counted from the configs).

docs/gpu.md turns these into per-stage memory and time estimates; the arithmetic is written out there.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from transformers import Qwen2_5_VLForConditionalGeneration, Sam2VideoModel

from sparrow.model.batching import make_batch
from sparrow.model.loading import real_config
from sparrow.model.pixel_decoder import PixelDecoder
from sparrow.model.proposer import Proposer, ProposerConfig, proposer_loss
from sparrow.model.real_backbones import (
    QWEN3B_TEXT_LAYERS,
    parameter_counts,
    qwen25_vl_3b_config,
    sam21_base_plus_config,
)
from sparrow.model.sam2_backbone import build_sam2
from sparrow.model.sparrow_model import SparrowModel
from sparrow.model.tiny_backbones import build_tiny_tokenizer
from sparrow.model.vlm_qwen2_5 import QwenVLAdapter, fit_to_patches
from sparrow.train.config import LoraSettings, StageConfig, load_train_config
from sparrow.train.stages import apply_stage

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
GB = 1e9
TEXT_TOKENS = 64  # system prompt + question + answer with the real tokenizer (an estimate; not measured here)


# ----------------------------------------------------------------------------------------------- 1. parameters
def meta_model(tokenizer, text_layers: int = QWEN3B_TEXT_LAYERS) -> SparrowModel:
    """The full SPARROW model on the meta device (real_config, full Qwen2.5-VL-3B and SAM2.1 base+ configs)."""
    cfg = real_config()
    with torch.device("meta"):
        qwen = Qwen2_5_VLForConditionalGeneration(qwen25_vl_3b_config(text_layers=text_layers))
        qwen.tie_weights()
        vlm = QwenVLAdapter(
            qwen, tokenizer, max_frame_pixels=cfg.vlm_max_frame_pixels, max_crop_pixels=cfg.vlm_max_crop_pixels
        )
        return SparrowModel(cfg, vlm, Sam2VideoModel(sam21_base_plus_config()))


def print_parameters(tokenizer) -> dict[str, int]:
    qwen = parameter_counts(qwen25_vl_3b_config())
    sam = parameter_counts(sam21_base_plus_config())
    model = meta_model(tokenizer)
    parts = parameter_counts(model)
    embed = 151936 * 2048
    print("== 1. parameters (full configs, meta device)")
    print(
        f"Qwen2.5-VL-3B      {qwen['total']:>14,}  (vision tower {qwen['model.visual']:,}; language model "
        f"{qwen['model.language_model']:,} of which tied embedding {embed:,})"
    )
    print(
        f"SAM2.1 base+       {sam['total']:>14,}  (image encoder {sam['vision_encoder']:,}; mask decoder "
        f"{sam['mask_decoder']:,}; memory attention {sam['memory_attention']:,}; memory encoder {sam['memory_encoder']:,})"
    )
    new = parts["box_head"] + parts["seg_head"] + parts["proposer"] + parts["selector"]
    print(
        f"SPARROW new parts  {new:>14,}  (L->V heads {parts['box_head'] + parts['seg_head']:,}; proposer "
        f"{parts['proposer']:,}; selector {parts['selector']:,})"
    )
    print(
        f"whole model        {parts['total']:>14,}  = {parts['total'] * 4 / GB:.1f} GB in float32, {parts['total'] * 2 / GB:.1f} GB in bf16"
    )
    stages = {}
    for name in ("proposer", "vlm", "selection"):
        stage = load_train_config(CONFIGS / f"real_stage_{name}.yaml", check_paths=False).stage
        stages[name] = _trainable(meta_model(tokenizer), stage)
    stages["vlm (full fine-tune)"] = _trainable(meta_model(tokenizer), StageConfig(name="vlm"))
    stages["vlm (LoRA r8 on all 7 projections)"] = _trainable(
        meta_model(tokenizer),
        StageConfig(
            name="vlm",
            lora=LoraSettings(
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            ),
        ),
    )
    for name, count in stages.items():
        print(f"trainable, {name:<36} {count:>14,}")
    return {
        "total": parts["total"],
        "lm": qwen["model.language_model"] - embed,
        "vision": qwen["model.visual"],
        **{f"train_{k}": v for k, v in stages.items()},
    }


def _trainable(model: SparrowModel, stage: StageConfig) -> int:
    plan = apply_stage(model, stage)
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in plan.trainable)


# ----------------------------------------------------------------------------------------------- 2. tokens
def print_tokens(frames: int, height: int, width: int) -> dict[str, int]:
    cfg = real_config()
    h, w = fit_to_patches(height, width, cfg.vlm_max_frame_pixels, 28)
    patches = (h // 14) * (w // 14)
    groups = -(-frames // 2)
    video_tokens = groups * patches // 4
    ch, cw = fit_to_patches(cfg.tsf_crop_size, cfg.tsf_crop_size, cfg.vlm_max_crop_pixels, 28)
    crop_tokens = cfg.tsf_k * (ch // 14) * (cw // 14) // 4
    total = video_tokens + crop_tokens + TEXT_TOKENS
    print("\n== 2. tokens per sample")
    print(
        f"{frames} frames of {width}x{height} -> {w}x{h} px ({patches} patches each) -> vision tower "
        f"{groups * patches} patches -> {video_tokens} video tokens"
    )
    print(
        f"TSF: {cfg.tsf_k} crops of {cfg.tsf_crop_size} px -> {crop_tokens} tokens; text about {TEXT_TOKENS} "
        f"(estimate) -> {total} LM tokens per sample"
    )
    return {"patches": groups * patches, "lm_tokens": total, "video_tokens": video_tokens}


# ----------------------------------------------------------------------------------------------- 3. measurements
class SavedBytes:
    """Bytes of the tensors autograd saves for backward (unique storages; parameters and their views excluded)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: set[int] = set()
        self.total = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.params and ptr not in self.seen and t.device.type != "meta":
            self.seen.add(ptr)
            self.total += storage.nbytes()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


def peak_allocated(fn) -> tuple[int, object]:
    """Peak bytes allocated by torch's CPU allocator while ``fn()`` runs, above what was allocated before
    (``torch.profiler`` with ``profile_memory``: allocations are charged to the op that makes them, frees to
    ``[memory]`` events; the running sum in time order peaks at the answer), and ``fn``'s result."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak, out


def reduced_model(tokenizer, text_layers: int = 2, vision_depth: int = 1) -> SparrowModel:
    """Real widths, reduced depth, random weights, SAM2 at 1024 px with blocks (1, 1, 2, 1)."""
    torch.manual_seed(0)
    qwen = Qwen2_5_VLForConditionalGeneration(qwen25_vl_3b_config(tokenizer, text_layers, vision_depth))
    cfg = real_config()
    vlm = QwenVLAdapter(
        qwen, tokenizer, max_frame_pixels=cfg.vlm_max_frame_pixels, max_crop_pixels=cfg.vlm_max_crop_pixels
    )
    sam = build_sam2(sam21_base_plus_config(1024, (1, 1, 2, 1)))
    cfg.tsf = "train"
    return SparrowModel(cfg, vlm, sam)


def sample(frames: int, height: int, width: int, sam_frames: int = 8, tsf: bool = True) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8)
    masks = np.zeros((1, sam_frames, height, width), dtype=bool)
    masks[:, :, height // 4 : height // 2, width // 4 : width // 2] = True
    box = np.array([width // 4, height // 4, width // 2, height // 2], dtype=np.float32)
    return SimpleNamespace(
        vlm_frames=video,
        question="Can you segment the red car that drives past the bakery in this video?",
        answer="Sure, it is [BOX] [SEG].",
        sam_frames=video[:sam_frames],
        masks=masks,
        boxes=np.tile(box, (1, sam_frames, 1)),
        object_boxes=[box[None]] * sam_frames,
        tsf_crops=rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8) if tsf else None,
    )


def measure_vlm_step(tokenizer, args) -> dict[str, float]:
    """One vlm-stage LoRA step (bf16 autocast) at the real input sizes: saved bytes per LM layer and elsewhere."""
    model = reduced_model(tokenizer)
    apply_stage(model, load_train_config(CONFIGS / "real_stage_vlm.yaml", check_paths=False).stage)
    model.train()
    batch = make_batch(model, [sample(args.frames, args.height, args.width)], with_tsf=True)
    tokens = int(batch.vlm.input_ids.shape[1])
    layers = model.vlm.model.base_model.model.model.language_model.layers
    counter = SavedBytes(model)
    marks: list[int] = []
    handles = [layer.register_forward_pre_hook(lambda m, a: marks.append(counter.total)) for layer in layers]
    handles.append(layers[-1].register_forward_hook(lambda m, a, o: marks.append(counter.total)))

    def step():
        with counter.hooks(), torch.autocast("cpu", dtype=torch.bfloat16):
            losses = model(batch)
        losses["loss"].backward()
        return losses

    start = time.process_time()
    peak, _ = peak_allocated(step)
    cpu = time.process_time() - start
    for h in handles:
        h.remove()
    per_layer = (marks[-1] - marks[0]) / len(layers)
    frozen = sum(p.numel() for n, p in layers[0].named_parameters() if p.ndim == 2 and not p.requires_grad)
    weights_bf16 = 2 * frozen
    out = {
        "tokens": tokens,
        "per_layer": per_layer,
        "weights_bf16": weights_bf16,
        "per_token": (per_layer - weights_bf16) / tokens,
        "rest": counter.total - (marks[-1] - marks[0]),
        "cpu_s": cpu,
        "peak": peak,
    }
    print(
        f"vlm LoRA step, {tokens} LM tokens, bf16 autocast: {per_layer / GB:.3f} GB saved per LM layer = "
        f"{weights_bf16 / GB:.3f} GB bf16 copies of its frozen weights + {out['per_token'] / 1e3:.1f} kB per token; "
        f"{out['rest'] / GB:.3f} GB saved outside the LM layers (embeddings, LM head + loss at the tiny vocabulary, "
        f"mask decoder x 8 frames at 1024 px, selector, heads); peak allocation of the step {peak / GB:.2f} GB "
        f"above the weights; forward + backward {cpu:.0f} CPU s"
    )
    return out


def measure_lm_head(tokens: int) -> float:
    """Saved bytes of the LM head and the CE loss at the full 151,936-token vocabulary, per token (bf16 autocast)."""
    torch.manual_seed(0)
    qwen = Qwen2_5_VLForConditionalGeneration(qwen25_vl_3b_config(None, 1, 1)).train()
    for p in qwen.parameters():
        p.requires_grad_(False)
    layer = qwen.model.language_model.layers[0]
    layer.self_attn.q_proj.weight.requires_grad_(True)  # something below the head trains, as with LoRA
    ids = torch.randint(0, 150000, (1, tokens))
    counter = SavedBytes(qwen)
    marks: list[int] = []
    layer.register_forward_hook(lambda m, a, o: marks.append(counter.total))
    with counter.hooks(), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = qwen(input_ids=ids, labels=ids).loss
    head = counter.total - marks[0]
    grow, _ = peak_allocated(loss.backward)
    print(
        f"LM head + CE, {tokens} tokens, vocabulary 151,936: {head / GB:.2f} GB saved ({head / tokens / 1e3:.0f} kB "
        f"per token); the backward pass allocates up to {grow / GB:.2f} GB more"
    )
    del qwen, loss
    gc.collect()
    return head / tokens


def measure_vision_block(tokenizer, patches: int) -> float:
    """Saved bytes per vision block and patch when the vision tower trains (full fine-tune), bf16 autocast."""
    torch.manual_seed(0)
    qwen = Qwen2_5_VLForConditionalGeneration(qwen25_vl_3b_config(tokenizer, 1, 2))
    visual = qwen.model.visual.train()
    side = int(np.sqrt(patches // 8)) // 2 * 2  # an even square grid (2x2 merge) of about the same size
    grid = torch.tensor([[8, side, side]])
    pixels = torch.randn(8 * side * side, 3 * 2 * 14 * 14)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        frozen_peak, _ = peak_allocated(lambda: visual(pixels, grid_thw=grid))
    print(f"vision tower frozen (no grad), {8 * side * side} patches: peak allocation {frozen_peak / GB:.2f} GB")
    counter = SavedBytes(visual)
    marks: list[int] = []
    visual.blocks[0].register_forward_pre_hook(lambda m, a: marks.append(counter.total))
    visual.blocks[1].register_forward_hook(lambda m, a, o: marks.append(counter.total))
    with counter.hooks(), torch.autocast("cpu", dtype=torch.bfloat16):
        visual(pixels, grid_thw=grid)
    per_block = (marks[1] - marks[0]) / 2
    block_weights = 2 * sum(p.numel() for p in visual.blocks[0].parameters() if p.ndim == 2)
    per_patch = (per_block - block_weights) / (8 * side * side)
    print(
        f"vision block (trained), {8 * side * side} patches: {per_block / GB:.3f} GB saved per block = "
        f"{block_weights / GB:.3f} GB bf16 weight copies + {per_patch / 1e3:.1f} kB per patch"
    )
    return per_patch


def measure_sam_and_proposer() -> dict[str, float]:
    """Peak RSS growth of a no-grad SAM2 encoder pass per 1024-px frame (1 and 2 frames), and the proposer's
    saved bytes per frame in a proposer-stage step (fp32 and bf16 autocast)."""
    torch.manual_seed(0)
    decoder = PixelDecoder(build_sam2(sam21_base_plus_config(1024, (1, 1, 2, 1))))
    cfg = real_config()
    proposer = Proposer(
        ProposerConfig(
            in_channels=256,
            hidden_size=cfg.proposer_hidden,
            num_queries=cfg.proposer_queries,
            num_layers=cfg.proposer_layers,
            num_heads=cfg.proposer_heads,
            top_k=cfg.selection.top_k,
            two_stage=cfg.proposer_two_stage,
        )
    )
    out = {}
    for n in (1, 2):
        pixels = torch.randn(n, 3, 1024, 1024)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out[f"sam_peak_{n}"], _ = peak_allocated(lambda x=pixels: decoder.encode(x))
    per_frame = out["sam_peak_2"] - out["sam_peak_1"]
    print(
        f"SAM2 encoder, no grad, bf16 autocast, 1024 px: peak allocation {out['sam_peak_1'] / GB:.2f} GB for one "
        f"frame, {out['sam_peak_2'] / GB:.2f} GB for two ({per_frame / GB:.2f} GB per extra frame)"
    )
    proposer.train()
    for n in (1, 2):
        embedding = torch.randn(n, 256, 64, 64)
        targets = [torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.2, 0.9, 0.8]])] * n
        counter = SavedBytes(proposer)
        with counter.hooks(), torch.autocast("cpu", dtype=torch.bfloat16):
            proposer_loss(proposer(embedding, None), targets)["total"].backward()
        out[f"proposer_{n}"] = counter.total
    out["proposer_per_frame"] = out["proposer_2"] - out["proposer_1"]
    out["sam_per_frame"] = per_frame
    print(f"proposer stage, bf16 autocast: {out['proposer_per_frame'] / GB:.3f} GB saved per 1024-px frame")
    return out


# ----------------------------------------------------------------------------------------------- 4. FLOPs
def hiera_flops(size: int = 1024) -> float:
    """Forward FLOPs of the SAM2.1 base+ image encoder at ``size`` px (matmuls + attention, 2 FLOPs per MAC)."""
    blocks, dims, windows = (2, 3, 16, 3), (112, 224, 448, 896), (8, 4, 14, 7)
    global_blocks = {12, 16, 20}
    flops, index = 0.0, 0
    for stage, (count, c, win) in enumerate(zip(blocks, dims, windows)):
        side = size // 4 // 2**stage
        tokens = side * side
        for _ in range(count):
            span = tokens if index in global_blocks else win * win
            flops += 2 * 12 * c * c * tokens + 4 * tokens * span * c
            index += 1
    neck = 2 * 256 * sum(d * (size // 4 // 2**s) ** 2 for s, d in enumerate(dims))
    return flops + neck


def print_flops(params: dict[str, int], tokens: dict[str, int]) -> None:
    n_lm, n_vis, lm_t, patches = params["lm"], params["vision"], tokens["lm_tokens"], tokens["patches"]
    attn_lm = 36 * 4 * lm_t * lm_t * 2048  # QK^T and AV, causal not discounted
    lm_fwd = 2 * n_lm * lm_t + attn_lm + 2 * 151936 * 2048 * lm_t
    vis_fwd = (
        2 * n_vis * patches + 32 * 4 * patches * 1280 * 64
    )  # windows of 8x8 patches (4 full-attention blocks ~ x16)
    sam = hiera_flops(1024)
    print("\n== 4. FLOPs per sample (forward; training multiplies as noted)")
    print(
        f"LM forward {lm_fwd / 1e12:.1f} TFLOP ({lm_t} tokens); vision tower forward {vis_fwd / 1e12:.1f} TFLOP "
        f"({patches} patches); SAM2 encoder {sam / 1e12:.2f} TFLOP per 1024-px frame"
    )
    vlm_lora = 2 * lm_fwd + vis_fwd + 8 * sam  # frozen weights: backward = input grads only (~1x forward)
    vlm_full = 3 * lm_fwd + 3 * vis_fwd + 8 * sam
    selection = lm_fwd + vis_fwd + 8 * sam
    proposer = 4 * sam
    print(
        f"per sample: proposer stage {proposer / 1e12:.1f} TFLOP (4 frames); vlm LoRA {vlm_lora / 1e12:.1f}; "
        f"vlm full fine-tune {vlm_full / 1e12:.1f}; selection {selection / 1e12:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--skip-measure", action="store_true", help="only counts (no model is built)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = build_tiny_tokenizer()
    params = print_parameters(tokenizer)
    tokens = print_tokens(args.frames, args.height, args.width)
    if not args.skip_measure:
        print("\n== 3. measured on CPU (real widths, reduced depth, random weights)")
        measure_vlm_step(tokenizer, args)
        gc.collect()  # the reduced model goes before the next one is built
        measure_vision_block(tokenizer, tokens["patches"])
        measure_lm_head(tokens["lm_tokens"])
        measure_sam_and_proposer()
    print_flops(params, tokens)


if __name__ == "__main__":
    main()
