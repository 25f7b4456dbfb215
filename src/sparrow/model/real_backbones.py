"""The ``real`` preset's architectures in code: Qwen2.5-VL-3B-Instruct and SAM2.1 Hiera base+ configs.

The public checkpoints bring their own ``config.json``; these builders reproduce them (values from the released
``Qwen/Qwen2.5-VL-3B-Instruct`` config and the Hiera base+ settings of ``facebook/sam2.1-hiera-base-plus``) so
that the full-size model can be sized and checked without a download:

- :func:`qwen25_vl_3b_config` and :func:`sam21_base_plus_config` give the full configs, or the same widths at a
  reduced depth (``text_layers``, ``vision_depth``, ``blocks_per_stage``) and a smaller vocabulary or image size;
- :func:`write_real_width_backbones` writes random weights at those widths as ordinary Hugging Face folders (the
  tiny tokenizer, so no download), which :func:`sparrow.model.loading.build_model` then loads like the public
  checkpoints (the full-width CPU tests and ``benchmarks/real_model_size.py``);
- :func:`parameter_counts` counts the parameters of a configuration on the ``meta`` device (no memory).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Sam2VideoConfig

from sparrow.atomic import atomic_dir
from sparrow.errors import SparrowError

# Qwen2.5-VL-3B-Instruct: vocabulary and special-token ids of the released tokenizer
QWEN3B_VOCAB = 151936
QWEN3B_TOKEN_IDS = {
    "<|endoftext|>": 151643,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
QWEN3B_TEXT_LAYERS = 36
QWEN3B_VISION_DEPTH = 32
SAM2_BASE_PLUS_BLOCKS = (2, 3, 16, 3)
SAM2_BASE_PLUS_GLOBAL = (12, 16, 20)


def qwen25_vl_3b_config(
    tokenizer: PreTrainedTokenizerBase | None = None,
    text_layers: int = QWEN3B_TEXT_LAYERS,
    vision_depth: int = QWEN3B_VISION_DEPTH,
) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL-3B-Instruct: text hidden 2048, 16 heads, 2 KV heads, MLP 11008, 36 layers, tied embeddings,
    M-RoPE sections (16, 24, 24), rope theta 1e6; vision tower width 1280, 16 heads, MLP 3420, depth 32 with full
    attention in blocks 7/15/23/31 (windows of 112 px elsewhere), merger to 2048.

    ``tokenizer`` None: the released vocabulary (151,936) and token ids; else its size and ids (a small vocabulary
    for random CPU builds). ``text_layers`` / ``vision_depth`` reduce the depth at the same widths; full attention
    stays on every 8th vision block and on the last one.
    """
    if text_layers < 1 or vision_depth < 1:
        raise SparrowError(f"depths must be >= 1, got text_layers={text_layers}, vision_depth={vision_depth}")
    if tokenizer is None:
        vocab, ids = QWEN3B_VOCAB, dict(QWEN3B_TOKEN_IDS)
    else:
        vocab, ids = len(tokenizer), {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN3B_TOKEN_IDS}
    full_attention = sorted({b for b in range(7, vision_depth, 8)} | {vision_depth - 1})
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": text_layers,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-6,
            "use_sliding_window": False,
            "sliding_window": 32768,
            "max_window_layers": 70,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "tokens_per_second": 2,
            "fullatt_block_indexes": full_attention,
            "hidden_act": "silu",
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def sam21_base_plus_config(
    image_size: int = 1024,
    blocks_per_stage: Sequence[int] = SAM2_BASE_PLUS_BLOCKS,
    global_attention_blocks: Sequence[int] | None = None,
) -> Sam2VideoConfig:
    """SAM2.1 Hiera base+: trunk width 112 doubling per stage (112/224/448/896), heads 2/4/8/16, windows
    8/4/14/7, background positional size 14x14, blocks (2, 3, 16, 3) with global attention in blocks 12/16/20;
    FPN 256; prompt encoder and mask decoder 256; memory attention 256 x 4 layers (FFN 2048), memory encoder
    output 64, 7 memory slots, 16 object pointers (the Hugging Face defaults, as the converted checkpoint).

    ``image_size`` (a multiple of 64) and ``blocks_per_stage`` reduce the cost at the same widths; with fewer
    blocks, ``global_attention_blocks`` defaults to the second block of stage 3 onwards, one in four (never the
    first, query-pooled, block of a stage).
    """
    if image_size < 64 or image_size % 64:
        raise SparrowError(f"SAM2 image_size must be a multiple of 64 and at least 64, got {image_size}")
    blocks = [int(b) for b in blocks_per_stage]
    if len(blocks) != 4 or min(blocks) < 1:
        raise SparrowError(f"blocks_per_stage needs 4 positive counts, got {list(blocks_per_stage)}")
    if global_attention_blocks is None:
        if tuple(blocks) == SAM2_BASE_PLUS_BLOCKS:
            global_attention_blocks = SAM2_BASE_PLUS_GLOBAL
        else:
            first = blocks[0] + blocks[1]
            global_attention_blocks = list(range(first + 1, first + blocks[2], 4)) or [first]
    s = image_size
    dims = [112, 224, 448, 896]
    vision = {
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": 112,
            "num_attention_heads": 2,
            "image_size": [s, s],
            "blocks_per_stage": blocks,
            "embed_dim_per_stage": dims,
            "num_attention_heads_per_stage": [2, 4, 8, 16],
            "window_size_per_stage": [8, 4, 14, 7],
            "global_attention_blocks": list(global_attention_blocks),
            "window_positional_embedding_background_size": [14, 14],
        },
        "backbone_channel_list": dims[::-1],
        "backbone_feature_sizes": [[s // 4] * 2, [s // 8] * 2, [s // 16] * 2],
        "fpn_hidden_size": 256,
    }
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config={"hidden_size": 256, "image_size": s, "patch_size": 16, "mask_input_channels": 16},
        mask_decoder_config={
            "hidden_size": 256,
            "mlp_dim": 2048,
            "num_hidden_layers": 2,
            "num_attention_heads": 8,
            "iou_head_hidden_dim": 256,
        },
        image_size=s,
        memory_attention_rope_feat_sizes=[s // 16, s // 16],
    )


def write_real_width_backbones(
    folder: str | Path,
    seed: int = 0,
    text_layers: int = 2,
    vision_depth: int = 2,
    sam_image_size: int = 256,
    sam_blocks: Sequence[int] = (1, 1, 2, 1),
) -> tuple[Path, Path]:
    """Write random Qwen2.5-VL-3B-width and SAM2.1-base+-width backbones (reduced depth, the tiny tokenizer's
    vocabulary) as Hugging Face folders ``folder/vlm`` and ``folder/sam2``; returns both paths.

    At the defaults: about 234M (VLM) + 19M (SAM2) parameters, 1 GB of float32 safetensors.
    """
    from sparrow.model.sam2_backbone import build_sam2
    from sparrow.model.tiny_backbones import build_tiny_tokenizer

    folder = Path(folder)
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    vlm = Qwen2_5_VLForConditionalGeneration(qwen25_vl_3b_config(tokenizer, text_layers, vision_depth))
    with atomic_dir(folder / "vlm") as tmp:
        vlm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    del vlm
    gc.collect()  # free the ~1 GB text tower before SAM2 is built
    torch.manual_seed(seed)
    sam = build_sam2(sam21_base_plus_config(sam_image_size, sam_blocks))
    with atomic_dir(folder / "sam2") as tmp:
        sam.save_pretrained(tmp)
    return folder / "vlm", folder / "sam2"


def parameter_counts(module_or_config: torch.nn.Module | Qwen2_5_VLConfig | Sam2VideoConfig) -> dict[str, int]:
    """Parameters per top-level submodule (``model.visual``, ``model.language_model``, ``vision_encoder``, ...)
    and ``"total"``; a config is built on the ``meta`` device (no memory). Tied weights count once."""
    if isinstance(module_or_config, torch.nn.Module):
        module = module_or_config
    else:
        from transformers import Sam2VideoModel

        cls = Sam2VideoModel if isinstance(module_or_config, Sam2VideoConfig) else Qwen2_5_VLForConditionalGeneration
        with torch.device("meta"):
            module = cls(module_or_config)
        if hasattr(module, "tie_weights"):
            module.tie_weights()
    counts: dict[str, int] = {}
    seen: set[int] = set()
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "model" and len(parts) > 2 else parts[0]
        counts[key] = counts.get(key, 0) + param.numel()
    counts["total"] = sum(v for k, v in counts.items())
    return counts
