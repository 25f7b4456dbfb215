"""The training loop, on ``accelerate``: one CPU, several GPUs (DDP) or an accelerate config, with no code change.

Read top to bottom: build the model from ``model.init``, freeze it for the stage, build AdamW + warmup/decay,
resume from the newest checkpoint if asked, then for each optimiser step run ``grad_accum`` micro-steps (each a
batch of ``batch_size`` samples per process from the seeded mixture stream), clip, step, log (TensorBoard +
``losses.jsonl`` + a tqdm bar on the main process), checkpoint every ``checkpoint_every`` steps, and at the end
export the model with ``save_pretrained`` to ``<output_dir>/final``.

Determinism: the data stream is a function of ``(seed, micro-step)`` and torch's RNG is reseeded from
``(seed, micro-step, process)`` before each micro-step, so a run stopped at a checkpoint and resumed reproduces
the uninterrupted run's losses exactly. Random prompt draws (the segmenter's points) use one seed per global
sample, ``(seed, sample)``, so P processes with batch b draw what one process with batch P*b draws.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from sparrow.errors import SparrowError
from sparrow.model.batching import make_batch
from sparrow.model.loading import save_pretrained
from sparrow.model.memory_training import calibrate_memory_output
from sparrow.train.checkpoint import latest_checkpoint, load_checkpoint, params_hash, save_checkpoint
from sparrow.train.config import OptimizerConfig, StageConfig, TrainConfig
from sparrow.train.data import MixtureStream, build_sources, micro_batch_loader
from sparrow.train.model_init import build_initial_model
from sparrow.train.objectives import stage_loss
from sparrow.train.stages import StagePlan, apply_stage, merge_lora, set_train_mode

LOG_KEYS = (
    "loss",
    "ce",
    "mask_bce",
    "mask_dice",
    "selection",
    "box",
    "selection_rank",
    "prompt_identity",
    "track_selection",
    "proposer",
    "point_mask_bce",
    "point_mask_dice",
    "object_score",
    "iou_l1",
    "track_iou",
    "image_mask_bce",
    "image_mask_dice",
    "identity_mask_bce",
    "identity_mask_dice",
    "identity_cls",
)


@dataclass
class TrainResult:
    """What a run did: the steps it reached, its logged records and the exported model folder (if it finished)."""

    output_dir: Path
    step: int
    records: list[dict[str, float]] = field(default_factory=list)
    final_dir: Path | None = None
    plan: StagePlan | None = None
    is_main_process: bool = True


class StageModule(nn.Module):
    """Wraps the model so that DDP sees one ``forward(batch) -> losses`` per stage."""

    def __init__(self, model: nn.Module, stage: StageConfig) -> None:
        super().__init__()
        self.model = model
        self.stage = stage

    def forward(self, batch: Any, sample_seeds: list[int] | None = None) -> dict[str, torch.Tensor]:
        return stage_loss(self.stage, self.model, batch, sample_seeds)


def lr_factor(config: OptimizerConfig, total_steps: int):
    """Multiplier of the base lr after ``step`` optimiser steps: linear warmup, then constant/linear/cosine to 0."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        span = max(1, total_steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        if config.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def step_seed(seed: int, micro_step: int, process: int) -> int:
    return int(np.random.SeedSequence([seed, micro_step, process]).generate_state(1)[0])


def sample_seeds(seed: int, micro_step: int, batch_size: int, num_processes: int, process: int) -> list[int]:
    """One seed per sample of this process's micro-batch, from the sample's global position (as in
    :class:`~sparrow.train.data.MixtureStream`): independent of how the global batch is split over processes."""
    first = (micro_step * num_processes + process) * batch_size
    return [int(np.random.SeedSequence([seed, 1, g]).generate_state(1)[0]) for g in range(first, first + batch_size)]


def prepare_samples(samples: list[Any], seg_only: bool) -> list[Any]:
    """The ``[SEG]``-only ablation: drop ``[BOX]`` from each answer (copies; the sources are untouched)."""
    if not seg_only:
        return samples
    out = []
    for s in samples:
        s = copy.copy(s)
        s.answer = " ".join(s.answer.replace("[BOX]", " ").split())
        out.append(s)
    return out


def _reduce_record(accelerator, sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    """Mean of each logged loss over micro-steps and processes (keys absent everywhere are left out)."""
    t = torch.tensor(
        [[sums.get(k, 0.0), counts.get(k, 0)] for k in LOG_KEYS], dtype=torch.float64, device=accelerator.device
    )
    t = accelerator.reduce(t, reduction="sum")
    return {k: float(t[i, 0] / t[i, 1]) for i, k in enumerate(LOG_KEYS) if t[i, 1] > 0}


def _log_file(out: Path, keep_until: int) -> Path:
    """``losses.jsonl``, trimmed to the records of steps ``<= keep_until`` (a resumed run rewrites the rest)."""
    path = out / "losses.jsonl"
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= keep_until]
        path.write_text("".join(ln + "\n" for ln in lines))
    return path


def train(
    config: TrainConfig,
    sources: list[Dataset] | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Run (or resume) one training stage; see the module docstring. ``sources`` overrides ``data.sources``."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    from tqdm.auto import tqdm

    out = Path(config.output_dir)
    ckpt_dir = out / "checkpoints"
    checkpoint = latest_checkpoint(ckpt_dir) if resume else None
    if not resume and (ckpt_dir / "latest.json").exists():
        raise SparrowError(
            "output folder already holds checkpoints; pass --resume to continue or choose another --out", out
        )
    end = min(config.steps, max_steps) if max_steps is not None else config.steps

    # Built before the process group exists: transformers' save/load of the tiny backbones is rank-aware.
    torch.manual_seed(config.seed)
    model = build_initial_model(config.model, config.source)
    plan = apply_stage(model, config.stage)
    frozen_hash = params_hash(model, plan.frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = config.optimizer
    optimizer = torch.optim.AdamW(params, lr=opt.lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(opt, config.steps))
    start = 0
    if checkpoint is not None:
        start = load_checkpoint(checkpoint, model, plan.trainable, optimizer, scheduler, frozen_hash).step

    identity = config.stage.identity_prompts
    if identity and (config.stage.name not in ("segmenter", "vlm") or model.identity_prompts is None):
        raise SparrowError(
            "stage.identity_prompts needs the segmenter or vlm stage of a model with identity prompts "
            "(model.config.identity_prompts: 36 for SynthRef)",
            config.source,
        )
    if sources is None:
        d = config.data
        if d.num_vlm_frames != model.config.vlm_frames:
            raise SparrowError(
                f"data.num_vlm_frames ({d.num_vlm_frames}) differs from the model's vlm_frames ({model.config.vlm_frames}); "
                "training and inference would show the VLM different frame counts (set model.config.vlm_frames)",
                config.source,
            )
        if d.with_tsf and model.config.tsf == "off":
            raise SparrowError(
                "data.with_tsf is on but the model's tsf is 'off' (set model.config.tsf: train)", config.source
            )
        sources = build_sources(
            d.sources,
            d.num_vlm_frames,
            d.num_sam_frames,
            d.sampling,
            config.seed,
            tsf_crop_size=model.config.tsf_crop_size,
            identity=identity,
        )
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    main = accelerator.is_main_process
    weights = (
        [s.weight for s in config.data.sources] if len(config.data.sources) == len(sources) else [1.0] * len(sources)
    )
    accum = config.grad_accum
    stream = MixtureStream(
        sources,
        weights,
        config.seed,
        config.batch_size,
        accelerator.num_processes,
        accelerator.process_index,
        num_micro_steps=config.steps * accum,
        epoch_size=config.data.epoch_size,
    )
    if config.stage.name == "memory" and config.stage.calibrate_memory and checkpoint is None:
        first = make_batch(model, stream[0]).to(next(model.parameters()).device)  # micro-step 0: same on every run
        calibrate_memory_output(model.sam, first.sam_pixels.flatten(0, 1))
    wrapper = StageModule(model, config.stage)
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)

    writer, log_path = None, None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        world = {
            "processes": accelerator.num_processes,
            "distributed_type": accelerator.distributed_type.value,
            "mixed_precision": accelerator.mixed_precision,
            "device": str(accelerator.device),
        }
        (out / "train_config.json").write_text(json.dumps({**config.to_dict(), "world": world}, indent=1))
        log_path = _log_file(out, start)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"), purge_step=start)
    records: list[dict[str, float]] = []
    bar = tqdm(
        total=end, initial=start, disable=not (main and progress), desc=f"train {config.stage.name}", unit="step"
    )
    batches = iter(micro_batch_loader(stream, start * accum, config.data.num_workers))
    for step in range(start, end):
        set_train_mode(model, plan)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for a in range(accum):
            micro = step * accum + a
            samples = prepare_samples(next(batches), config.stage.seg_only)
            batch = make_batch(model, samples, with_tsf=config.data.with_tsf).to(accelerator.device)
            torch.manual_seed(step_seed(config.seed, micro, accelerator.process_index))
            seeds = sample_seeds(
                config.seed, micro, config.batch_size, accelerator.num_processes, accelerator.process_index
            )
            sync = contextlib.nullcontext() if a == accum - 1 else accelerator.no_sync(wrapper)
            with sync:
                with accelerator.autocast():
                    losses = wrapper(batch, seeds)
                accelerator.backward(losses["loss"] / accum)
            for k, v in losses.items():
                if k in LOG_KEYS:
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                    counts[k] = counts.get(k, 0) + 1
        if opt.grad_clip > 0:
            accelerator.clip_grad_norm_(params, opt.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step + 1, "lr": scheduler.get_last_lr()[0], **_reduce_record(accelerator, sums, counts)}
        records.append(record)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
        if main and ((step + 1) % config.log_every == 0 or step + 1 == end):
            for k, v in record.items():
                if k != "step":
                    writer.add_scalar(f"train/{k}", v, step + 1)
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if (config.checkpoint_every and (step + 1) % config.checkpoint_every == 0) or step + 1 == end:
            if main:
                save_checkpoint(
                    ckpt_dir,
                    step + 1,
                    (step + 1) * accum,
                    model,
                    plan.trainable,
                    optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                    scheduler,
                    frozen_hash,
                    config.to_dict(),
                    keep=config.keep_checkpoints,
                )
            accelerator.wait_for_everyone()
    bar.close()
    if writer is not None:
        writer.close()
    if params_hash(model, plan.frozen) != frozen_hash:
        raise RuntimeError(f"stage {plan.stage!r} changed frozen parameters")
    result = TrainResult(output_dir=out, step=end, records=records, plan=plan, is_main_process=main)
    if end == config.steps:
        final = out / "final"
        if main:
            export = copy.deepcopy(model).cpu().eval()
            merge_lora(export)
            save_pretrained(export, final)
        accelerator.wait_for_everyone()
        result.final_dir = final
    accelerator.end_training()
    return result
