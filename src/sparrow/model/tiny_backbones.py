"""Build the tiny backbones locally, with no download: an offline BPE tokenizer, a tiny Qwen2.5-VL and a tiny SAM2.

They are written as ordinary Hugging Face folders (``config.json`` + safetensors + tokenizer files), so the
tiny preset goes through exactly the loading code of the public checkpoints. Weights are random (seeded);
the bundled default model is trained from them (see ``sparrow.train``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from sparrow.atomic import atomic_dir

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_WORDS = {
    "colours": "red green blue yellow orange purple pink cyan white black grey brown magenta",
    "shapes": "circle square triangle star diamond hexagon cross ring heart pentagon rectangle ellipse object shape",
    "sizes": "small large big tiny medium little",
    "motion": "moving moves move left right up down static still stops starts bouncing bounces zig zag zigzag fast "
    "slowly quickly slow stop go going coming leaving enters re-enters leaves appears disappears later first last",
    "position": "on at the top bottom start end beginning middle centre center of in video frame near far side",
    "chat": "Sure, it is the segmentation result. Can you segment this video? Please locate What is respond with masks. "
    "Perform spatial segmentation You are a helpful assistant. Target views: system user assistant that which who and",
}


def tiny_corpus() -> list[str]:
    """A fixed corpus for the tiny tokenizer: template sentences over SynthRef's vocabulary."""
    words = " ".join(_WORDS.values()).split()
    lines = [" ".join(_WORDS.values())]
    for i, w in enumerate(words):
        lines.append(f"the {w} {words[(i * 7) % len(words)]} {words[(i * 13) % len(words)]} in this video.")
        lines.append(f"Can you segment the {w}? Sure, it is [BOX] [SEG].")
    return lines


def build_tiny_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on :func:`tiny_corpus` (deterministic); Qwen's special tokens included."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(tiny_corpus(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_qwen_config(tokenizer: PreTrainedTokenizerFast, hidden_size: int = 64, layers: int = 2) -> Qwen2_5_VLConfig:
    """A tiny Qwen2.5-VL: text hidden 64, 2 layers; vision depth 2, hidden 32."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    heads = 4
    head_dim = hidden_size // heads
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": _mrope_section(head_dim),
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies into (temporal, height, width) sections, as Qwen does (16/24/24 of 64)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def write_tiny_vlm(path: str | Path, seed: int = 0, hidden_size: int = 64, layers: int = 2) -> Path:
    """Write a tiny random Qwen2.5-VL and its tokenizer as a Hugging Face folder."""
    tok = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_qwen_config(tok, hidden_size, layers))
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return Path(path)


def write_tiny_sam2(path: str | Path, seed: int = 0, image_size: int = 256) -> Path:
    """Write a tiny random SAM2 video model as a Hugging Face folder."""
    from sparrow.model.sam2_backbone import build_sam2, tiny_sam2_config

    torch.manual_seed(seed)
    sam = build_sam2(tiny_sam2_config(image_size))
    with atomic_dir(path) as tmp:
        sam.save_pretrained(tmp)
    return Path(path)
