"""Building, saving and loading SPARROW models (config.json + one safetensors file + backbone configs).

Folder layout written by :func:`save_pretrained`::

    <dir>/config.json            SparrowConfig
    <dir>/vlm/config.json        the VLM's Hugging Face config, and its tokenizer files
    <dir>/sam2/config.json       the SAM2 video config
    <dir>/model.safetensors      every weight of the model (strictly loaded: missing/unexpected keys are errors)

A model built on an external base (the ``small`` preset: SmolLM2-135M-Instruct, resolved by
:func:`sparrow.model.small_backbones.resolve_base`) saves only what differs from that base
(:mod:`sparrow.model.base_delta`); its ``vlm/`` holds no tokenizer files (the tokenizer is rebuilt from the base,
:func:`sparrow.model.small_backbones.small_tokenizer`, and checked against the saved token list) but adds::

    <dir>/vlm/base.json            the base (repo, source, fingerprint), the tokens added to its vocabulary and the
                                   row offsets of partly saved tensors
    <dir>/vlm/adapter_config.json  the peft LoRA config when the VLM carries (unmerged) adapters

Presets: ``tiny`` builds random tiny backbones locally (no download) and goes through :func:`build_model`, the same
path as ``real`` (``Qwen/Qwen2.5-VL-3B-Instruct`` + ``facebook/sam2.1-hiera-base-plus`` from the local Hugging
Face cache). ``small`` transplants SmolLM2-135M-Instruct into Qwen2.5-VL with a small random vision tower and the
tiny SAM2. ``default`` is the bundled trained model in ``sparrow/assets/default`` when it exists.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Sam2VideoConfig,
    Sam2VideoModel,
)

from sparrow.atomic import atomic_dir, atomic_path
from sparrow.errors import SparrowError
from sparrow.model.base_delta import fill_adapters, fill_plain, split_from_base
from sparrow.model.config import SparrowConfig
from sparrow.model.sam2_backbone import load_sam2
from sparrow.model.small_backbones import (
    BASE_REPO,
    BaseWeights,
    base_language_state,
    build_small_vlm,
    load_base_state,
    resolve_base,
    small_tokenizer,
)
from sparrow.model.sparrow_model import SparrowModel
from sparrow.model.tiny_backbones import write_tiny_sam2, write_tiny_vlm
from sparrow.model.vlm_qwen2_5 import QwenVLAdapter

REAL_VLM = "Qwen/Qwen2.5-VL-3B-Instruct"
REAL_SAM2 = "facebook/sam2.1-hiera-base-plus"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets" / "default"
WEIGHTS_NAME = "model.safetensors"
BASE_FILE = "base.json"  # in <dir>/vlm/: marks a folder saved as the difference from an external base
ADAPTER_FILE = "adapter_config.json"


def real_config() -> SparrowConfig:
    """Settings for the public backbones (the authors' release: 16 frames, 100 proposals, 300 queries, 6 layers)."""
    return SparrowConfig(
        vlm_max_frame_pixels=448 * 448,
        vlm_max_crop_pixels=224 * 224,
        vlm_frames=16,
        max_new_tokens=64,
        proposer_hidden=256,
        proposer_queries=300,
        proposer_layers=6,
        proposer_heads=8,
        base_vlm=REAL_VLM,
        base_sam2=REAL_SAM2,
    )


def tiny_config() -> SparrowConfig:
    return SparrowConfig(base_vlm="tiny", base_sam2="tiny", proposer_fine=True)


def small_config() -> SparrowConfig:
    """The small preset: SmolLM2-135M-Instruct as the language model, the tiny SAM2 at SynthRef's 128 px."""
    return SparrowConfig(base_vlm=BASE_REPO, base_sam2="tiny", proposer_fine=True)


def compose(config: SparrowConfig, vlm: QwenVLAdapter, sam: torch.nn.Module, seed: int = 0) -> SparrowModel:
    """Put backbones and seeded new parts (heads, proposer, selector) together."""
    torch.manual_seed(seed)
    return SparrowModel(config, vlm, sam)


def build_model(config: SparrowConfig, vlm_path: str | Path, sam2_path: str | Path, seed: int = 0) -> SparrowModel:
    """Compose a model from pretrained backbone folders (or hub ids in the local cache); new parts are seeded."""
    vlm = QwenVLAdapter.from_pretrained(
        vlm_path, max_frame_pixels=config.vlm_max_frame_pixels, max_crop_pixels=config.vlm_max_crop_pixels
    )
    return compose(config, vlm, load_sam2(str(sam2_path)), seed)


def build_small(
    seed: int = 0,
    config: SparrowConfig | None = None,
    sam_image_size: int = 128,
    workdir: str | Path | None = None,
    segmenter_from: SparrowModel | None = None,
) -> SparrowModel:
    """The small preset: transplanted SmolLM2 VLM (vision tower random, seeded) + tiny SAM2 written locally.

    ``segmenter_from``: a trained (tiny-chain) model whose SAM2, proposer and selector replace the random ones
    (their architecture fields come from its config; ``config`` is then ignored for them).
    """
    config = config or small_config()
    qwen, tokenizer, reference = build_small_vlm(resolve_base(), seed)
    vlm = QwenVLAdapter(
        qwen, tokenizer, max_frame_pixels=config.vlm_max_frame_pixels, max_crop_pixels=config.vlm_max_crop_pixels
    )
    vlm.base = reference
    if segmenter_from is not None:
        return graft_segmenter(config, vlm, segmenter_from, seed)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        sam = load_sam2(str(write_tiny_sam2(Path(tmp) / "sam2", seed=seed, image_size=sam_image_size)))
    return compose(config, vlm, sam, seed)


ARCHITECTURE_FROM_SEGMENTER = (
    "proposer_hidden",
    "proposer_queries",
    "proposer_layers",
    "proposer_heads",
    "proposer_two_stage",
    "proposer_fine",
    "selector_appearance",
    "selector_appearance_grid",
    "base_sam2",
    "identity_prompts",
)


def graft_segmenter(config: SparrowConfig, vlm: QwenVLAdapter, donor: SparrowModel, seed: int) -> SparrowModel:
    """A model with ``vlm`` and fresh L->V heads around ``donor``'s SAM2, proposer, selector and identity prompts
    (strict copies), and the donor's track selector when both select tracklets the same way."""
    data = config.to_dict()
    data.update({k: getattr(donor.config, k) for k in ARCHITECTURE_FROM_SEGMENTER})
    data["selection"] = {**data["selection"], "top_k": donor.config.selection.top_k}
    model = compose(SparrowConfig.from_dict(data), vlm, donor.sam, seed)
    for part in ("pixel_decoder", "proposer", "selector", "identity_prompts"):
        if getattr(donor, part) is not None:
            getattr(model, part).load_state_dict(getattr(donor, part).state_dict())
    mine, theirs = model.track_selector, donor.track_selector
    if mine is not None and theirs is not None and mine.trajectory_dim == theirs.trajectory_dim:
        mine.load_state_dict(theirs.state_dict())
    return model


def build_tiny(
    seed: int = 0, config: SparrowConfig | None = None, sam_image_size: int = 256, workdir: str | Path | None = None
) -> SparrowModel:
    """The tiny preset: random tiny backbones written locally, then loaded like real ones."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        vlm_dir = write_tiny_vlm(Path(tmp) / "vlm", seed=seed)
        sam_dir = write_tiny_sam2(Path(tmp) / "sam2", seed=seed, image_size=sam_image_size)
        return build_model(config or tiny_config(), vlm_dir, sam_dir, seed=seed)


def _base_tensors(reference: dict, folder: Path | None = None) -> tuple[BaseWeights, dict[str, torch.Tensor]]:
    """The base a model refers to and its weights by canonical SparrowModel name; the fingerprint must match."""
    base = resolve_base(prefer=reference["source"])
    config, state, fingerprint = load_base_state(base)
    if fingerprint != reference["fingerprint"]:
        raise SparrowError(
            f"the {reference['repo']} weights found in {base.path} ({base.source}, fingerprint {fingerprint}) are not "
            f"the base this model was built on ({reference['source']}, fingerprint {reference['fingerprint']})",
            folder,
        )
    return base, {"vlm.model." + k: v for k, v in base_language_state(state, config.num_hidden_layers).items()}


def _added_tokens(tokenizer: PreTrainedTokenizerBase, base_vocab: int) -> list[str]:
    return tokenizer.convert_ids_to_tokens(list(range(base_vocab, len(tokenizer))))


def save_pretrained(model: SparrowModel, path: str | Path) -> Path:
    """Write the model folder atomically (an existing folder is replaced only once the new one is complete).

    A model on an external base (``model.vlm.base`` set) stores only what differs from it (module docstring).
    """
    from peft import PeftModel

    reference = getattr(model.vlm, "base", None)
    with atomic_dir(path) as tmp:
        model.config.save(tmp / "config.json")
        model.vlm.model.config.save_pretrained(tmp / "vlm")
        model.sam.config.save_pretrained(tmp / "sam2")
        if reference is None:
            model.vlm.tokenizer.save_pretrained(tmp / "vlm")
            with atomic_path(tmp / WEIGHTS_NAME) as weights:  # safetensors alone leaves the file owner-only (0600)
                save_safetensors_model(model, str(weights))
            return Path(path)
        base, base_state = _base_tensors(reference)
        tensors, offsets = split_from_base(model, base_state)
        if isinstance(model.vlm.model, PeftModel):
            model.vlm.model.peft_config["default"].save_pretrained(tmp / "vlm")
        added = _added_tokens(model.vlm.tokenizer, LlamaConfig.from_pretrained(str(base.path)).vocab_size)
        (tmp / "vlm" / BASE_FILE).write_text(
            json.dumps({**reference, "added_tokens": added, "row_offsets": offsets}, indent=1)
        )
        with atomic_path(tmp / WEIGHTS_NAME) as weights:
            save_file(tensors, str(weights), metadata={"format": "pt"})
    return Path(path)


def from_pretrained(path: str | Path, device: str | torch.device = "cpu") -> SparrowModel:
    """Load a folder written by :func:`save_pretrained`; every weight must match (strict)."""
    path = Path(path)
    if not path.is_dir():
        raise SparrowError("no such model folder", path)
    weights = path / WEIGHTS_NAME
    if not weights.exists():
        raise SparrowError(f"model folder has no weights ({WEIGHTS_NAME})", path)
    config = SparrowConfig.load(path / "config.json")
    for sub in ("vlm", "sam2"):
        if not (path / sub / "config.json").exists():
            raise SparrowError(f"model folder lacks {sub}/config.json", path)
    if (path / "vlm" / BASE_FILE).exists():
        return _from_pretrained_on_base(path, config).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path / "vlm"), local_files_only=True)
    vlm_model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig.from_pretrained(str(path / "vlm")))
    vlm = QwenVLAdapter(
        vlm_model, tokenizer, max_frame_pixels=config.vlm_max_frame_pixels, max_crop_pixels=config.vlm_max_crop_pixels
    )
    sam = Sam2VideoModel(Sam2VideoConfig.from_pretrained(str(path / "sam2")))
    model = SparrowModel(config, vlm, sam)
    try:
        missing, unexpected = load_safetensors_model(model, str(weights), strict=False)
    except Exception as exc:  # safetensors raises on a truncated/corrupt file or a shape mismatch
        raise SparrowError(f"cannot load weights: {str(exc).splitlines()[0]}", weights) from exc
    if missing or unexpected:
        raise SparrowError(
            f"weights do not match the config: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}",
            weights,
        )
    return model.to(device).eval()


def _from_pretrained_on_base(path: Path, config: SparrowConfig) -> SparrowModel:
    """Load a folder saved as the difference from its base: skeleton, base + saved tensors, adapters (strict)."""
    from peft import LoraConfig, get_peft_model
    from transformers.initialization import no_init_weights

    weights = path / WEIGHTS_NAME
    try:
        reference = json.loads((path / "vlm" / BASE_FILE).read_text())
        offsets = {k: int(v) for k, v in reference["row_offsets"].items()}
        added = list(reference["added_tokens"])
        saved = load_file(str(weights))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SparrowError(f"not a valid base reference ({exc})", path / "vlm" / BASE_FILE) from exc
    except Exception as exc:  # safetensors raises its own error type on a truncated/corrupt file
        raise SparrowError(f"cannot load weights: {str(exc).splitlines()[0]}", weights) from exc
    base, base_state = _base_tensors(reference, path)
    tokenizer = small_tokenizer(base)
    if _added_tokens(tokenizer, len(tokenizer) - len(added)) != added:
        raise SparrowError(
            f"the model's added tokens {added} differ from the small preset's tokenizer", path / "vlm" / BASE_FILE
        )
    with no_init_weights():  # every tensor is filled below (and checked), so skip the random init
        vlm_model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig.from_pretrained(str(path / "vlm")))
    vlm_model.tie_weights()  # the output layer shares the input embedding (tie_word_embeddings)
    vlm = QwenVLAdapter(
        vlm_model, tokenizer, max_frame_pixels=config.vlm_max_frame_pixels, max_crop_pixels=config.vlm_max_crop_pixels
    )
    vlm.base = {k: reference[k] for k in ("repo", "source", "fingerprint")}
    model = SparrowModel(config, vlm, Sam2VideoModel(Sam2VideoConfig.from_pretrained(str(path / "sam2"))))
    filled = fill_plain(model, saved, offsets, base_state, weights)
    if (path / "vlm" / ADAPTER_FILE).exists():
        model.vlm.model = get_peft_model(model.vlm.model, LoraConfig.from_pretrained(str(path / "vlm")))
    fill_adapters(model, saved, offsets, base_state, filled, weights)
    return model


def load_model(name_or_path: str = "default", device: str | torch.device | None = None) -> SparrowModel:
    """``"default"`` (bundled), ``"tiny"`` (random tiny preset), ``"small"`` (SmolLM2 language model, random vision
    tower and tiny SAM2), ``"real"`` (public backbones, untrained new parts) or a folder."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name_or_path == "tiny":
        return build_tiny().to(device).eval()
    if name_or_path == "small":
        return build_small().to(device).eval()
    if name_or_path == "real":
        return build_model(real_config(), REAL_VLM, REAL_SAM2).to(device).eval()
    if name_or_path == "default":
        if not (BUNDLED_DIR / WEIGHTS_NAME).exists():
            raise SparrowError(
                "no bundled default model is installed yet (train one with `sparrow train`); use --model tiny for the untrained tiny preset"
            )
        return from_pretrained(BUNDLED_DIR, device)
    return from_pretrained(os.fspath(name_or_path), device)
