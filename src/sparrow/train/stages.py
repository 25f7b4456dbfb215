"""Which parameters train in each stage, and freezing that is checked (docs/architecture.md §4).

=============  ==========================================================================================
stage          trains (module prefixes of :class:`~sparrow.model.sparrow_model.SparrowModel`)
=============  ==========================================================================================
segmenter      SAM2's image encoder, prompt encoder and mask decoder, as a promptable segmenter (box and
               point prompts), and the learned identity prompts when the model has them. The memory path (memory encoder/attention, object pointers) is not trained:
               HF ``Sam2VideoModel.forward`` and ``propagate_in_video_iterator`` run under
               ``torch.inference_mode``, so propagation cannot be trained through the public API.
proposer       the class-agnostic proposer (SAM2 frozen: features come from the frozen encoder)
vlm            the VLM (full fine-tuning, or LoRA adapters when ``stage.lora`` is set) and the two L->V heads,
               and the track selector when the model has one; SAM2, proposer and per-frame selector frozen (the
               TSF stage; ``seg_only`` drops ``[BOX]``)
selection      the ``[BOX]`` selector, the track selector (if any) and the box head (filtration-head stage);
               everything else frozen
memory         SAM2's memory path: memory encoder, memory attention, object-pointer projection, the temporal
               encodings of memories and pointers, the no-object pointer and occlusion embedding, the
               mask-prompt downsampler, and the decoder's object-presence head (a head on its own token: the
               masks of the image path do not change). Trained through
               :func:`~sparrow.model.memory_training.unroll_memory`; with ``stage.single_mask_tracking`` (the
               default) tracked frames use the decoder's single-mask output, which the segmenter stage trains,
               and the saved SAM2 config keeps that setting. ``stage.train: [pixel_decoder.sam.mask_decoder]``
               adds the whole mask decoder; ``stage.memory_image_loss`` then keeps box prompting trained too
=============  ==========================================================================================

``stage.train`` adds prefixes, ``stage.freeze`` removes them (a frozen prefix wins). Prefixes are matched against
parameter names without peft's wrapper levels (``vlm.model.model.visual`` names the vision tower with or without
LoRA). With ``stage.lora`` the VLM trains only its adapters (LoRA, and the ``[BOX]``/``[SEG]`` rows when
``lora.prompt_tokens``) plus the VLM submodules ``stage.train`` names explicitly. Frozen modules are put in
``eval()`` whenever the model is in training mode, so their dropout never fires.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sparrow.errors import SparrowError
from sparrow.model.base_delta import canonical
from sparrow.model.memory_training import reinit_memory_path, set_single_mask_tracking
from sparrow.train.config import LoraSettings, StageConfig

STAGE_TRAINABLE: dict[str, tuple[str, ...]] = {
    "segmenter": (
        "pixel_decoder.sam.vision_encoder",
        "pixel_decoder.sam.prompt_encoder",
        "pixel_decoder.sam.mask_decoder",
        "pixel_decoder.sam.no_memory_embedding",
        "identity_prompts",  # only when the model has them (model.config.identity_prompts)
    ),
    "proposer": ("proposer",),
    "vlm": ("vlm", "box_head", "seg_head", "track_selector"),
    "selection": ("selector", "box_head", "track_selector"),
    "track_selector": ("track_selector",),  # VLM-free: train/selector_pretraining.py
    "memory": tuple(
        f"pixel_decoder.sam.{name}"
        for name in (
            "memory_encoder",
            "memory_attention",
            "object_pointer_proj",
            "memory_temporal_positional_encoding",
            "temporal_positional_encoding_projection_layer",
            "no_object_pointer",
            "occlusion_spatial_embedding_parameter",
            "mask_downsample",
            "mask_decoder.pred_obj_score_head",
        )
    ),
}


@dataclass
class StagePlan:
    """The outcome of :func:`apply_stage`: parameter names that train and those that stay frozen."""

    stage: str
    trainable: list[str]
    frozen: list[str]
    frozen_modules: list[str]  # maximal submodules with no trainable parameter (kept in eval mode)


def _matches(name: str, prefixes: list[str] | tuple[str, ...]) -> bool:
    name = canonical(name)
    return any(name == p or name.startswith(p + ".") for p in prefixes)


ADAPTER_MARKS = ("lora_", "trainable_tokens_")  # peft's LoRA matrices and trainable token rows


def add_lora(model: nn.Module, settings: LoraSettings) -> None:
    """Wrap the VLM's language model in peft LoRA adapters (in place: ``model.vlm.model`` becomes a PeftModel).

    A VLM that already carries adapters (a saved small-preset stage) keeps them and trains them further.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(model.vlm.model, PeftModel):
        return
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=rf".*language_model.*\.({'|'.join(settings.target_modules)})",
        trainable_token_indices=[model.vlm.box_token_id, model.vlm.seg_token_id] if settings.prompt_tokens else None,
    )
    model.vlm.model = get_peft_model(model.vlm.model, config)


def merge_lora(model: nn.Module) -> None:
    """Fold LoRA adapters back into the base weights (export keeps the plain model's parameter names).

    A model on an external base (the small preset) keeps its adapters: its folder stores only them, not the
    merged base-sized matrices (model/loading.py).
    """
    from peft import PeftModel

    if isinstance(model.vlm.model, PeftModel) and getattr(model.vlm, "base", None) is None:
        model.vlm.model = model.vlm.model.merge_and_unload()


def apply_stage(model: nn.Module, stage: StageConfig) -> StagePlan:
    """Set ``requires_grad`` for ``stage`` (adding LoRA first when configured) and verify the result."""
    if stage.name not in STAGE_TRAINABLE:
        raise SparrowError(f"unknown stage {stage.name!r}; known: {', '.join(STAGE_TRAINABLE)}")
    lora = (
        stage.lora is not None
        and stage.name in ("vlm", "selection")
        and _matches("vlm", list(STAGE_TRAINABLE[stage.name]) + stage.train)
    )
    if stage.lora is not None and not lora:
        raise SparrowError(f"stage.lora applies to a stage that trains the VLM ('vlm'), not {stage.name!r}")
    if lora:
        add_lora(model, stage.lora)
    if stage.name == "memory":
        set_single_mask_tracking(model.sam, stage.single_mask_tracking)
        reinit_memory_path(model.sam, stage.memory_init)
    allowed = list(STAGE_TRAINABLE[stage.name]) + list(stage.train)
    names = [n for n, _ in model.named_parameters()]
    for prefix in stage.train + stage.freeze:
        if not any(_matches(n, [prefix]) for n in names):
            raise SparrowError(f"stage prefix {prefix!r} matches no parameter of the model")
    for name, param in model.named_parameters():
        train = _matches(name, allowed) and not _matches(name, stage.freeze)
        if lora and _matches(name, ["vlm"]):
            explicit = [p for p in stage.train if p != "vlm" and p.startswith("vlm.")]
            train = train and (any(mark in name for mark in ADAPTER_MARKS) or _matches(name, explicit))
        param.requires_grad_(train)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    if not trainable:
        raise SparrowError(f"stage {stage.name!r} leaves no parameter to train (check stage.freeze)")
    stray = [n for n in trainable if not _matches(n, allowed) or _matches(n, stage.freeze)]
    if stray:  # a programming error, not a user error
        raise AssertionError(f"parameters outside the stage train: {stray[:5]}")
    return StagePlan(stage.name, trainable, frozen, _frozen_modules(model))


def _frozen_modules(model: nn.Module) -> list[str]:
    """Names of the largest submodules whose parameters are all frozen (and that have parameters)."""
    out: list[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            params = list(child.parameters())
            if params and not any(p.requires_grad for p in params):
                out.append(full)
            elif params:
                visit(child, full + ".")

    visit(model, "")
    return out


def set_train_mode(model: nn.Module, plan: StagePlan) -> None:
    """``model.train()`` with every fully frozen submodule in ``eval()`` (no dropout in frozen parts)."""
    model.train()
    modules = dict(model.named_modules())
    for name in plan.frozen_modules:
        modules[name].eval()
