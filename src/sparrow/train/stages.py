"""Which parameters train in each stage, and freezing that is checked (design.md, method.md §6.2).

=============  ==========================================================================================
stage          trains (module prefixes of :class:`~sparrow.model.sparrow_model.SparrowModel`)
=============  ==========================================================================================
segmenter      SAM2's image encoder, prompt encoder and mask decoder, as a promptable segmenter (box and
               point prompts), and the learned identity prompts when the model has them. The memory path (memory encoder/attention, object pointers) is not trained:
               HF ``Sam2VideoModel.forward`` and ``propagate_in_video_iterator`` run under
               ``torch.inference_mode``, so propagation cannot be trained through the public API.
proposer       the class-agnostic proposer (SAM2 frozen: features come from the frozen encoder)
vlm            the VLM (full fine-tuning, or LoRA adapters when ``stage.lora`` is set) and the two L->V heads;
               SAM2, proposer and selector frozen (the TSF stage; ``seg_only`` drops ``[BOX]``)
selection      the ``[BOX]`` selector and the box head (filtration-head stage); everything else frozen
=============  ==========================================================================================

``stage.train`` adds prefixes, ``stage.freeze`` removes them (a frozen prefix wins). Frozen modules are put in
``eval()`` whenever the model is in training mode, so their dropout never fires.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sparrow.errors import SparrowError
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
    "vlm": ("vlm", "box_head", "seg_head"),
    "selection": ("selector", "box_head"),
}


@dataclass
class StagePlan:
    """The outcome of :func:`apply_stage`: parameter names that train and those that stay frozen."""

    stage: str
    trainable: list[str]
    frozen: list[str]
    frozen_modules: list[str]  # maximal submodules with no trainable parameter (kept in eval mode)


def _matches(name: str, prefixes: list[str] | tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def add_lora(model: nn.Module, settings: LoraSettings) -> None:
    """Wrap the VLM's language model in peft LoRA adapters (in place: ``model.vlm.model`` becomes a PeftModel)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=rf".*language_model.*\.({'|'.join(settings.target_modules)})",
    )
    model.vlm.model = get_peft_model(model.vlm.model, config)


def merge_lora(model: nn.Module) -> None:
    """Fold LoRA adapters back into the base weights (export keeps the plain model's parameter names)."""
    from peft import PeftModel

    if isinstance(model.vlm.model, PeftModel):
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
    allowed = list(STAGE_TRAINABLE[stage.name]) + list(stage.train)
    names = [n for n, _ in model.named_parameters()]
    for prefix in stage.train + stage.freeze:
        if not any(_matches(n, [prefix]) for n in names):
            raise SparrowError(f"stage prefix {prefix!r} matches no parameter of the model")
    for name, param in model.named_parameters():
        train = _matches(name, allowed) and not _matches(name, stage.freeze)
        if lora and _matches(name, ["vlm"]):
            train = train and "lora_" in name
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
