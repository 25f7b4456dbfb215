"""Training configuration: one YAML file describes one training stage (model init, data, optimiser, schedule).

Layout of a config file (every key optional except ``stage.name``, ``data.sources`` and ``output_dir``)::

    model:     {init: tiny | small | real | <saved model folder>, seed, sam_image_size, segmenter_from,
                config: {SparrowConfig fields}}
    data:      {sources: [{path, weight, format, split, tsf_cache} | {synthref: {seed, size, num_frames, length, balance},
                weight}], num_vlm_frames, num_sam_frames, sampling: uniform | random | clip, with_tsf,
                epoch_size, num_workers}
    stage:     {name: segmenter | proposer | vlm | selection | memory | track_selector, seg_only, train: [...], freeze: [...],
                lora: {r, alpha, dropout, target_modules}, point_prompts, identity_prompts, box_jitter,
                memory_prompt, single_mask_tracking, memory_image_loss, calibrate_memory, memory_init}
    optimizer: {lr, betas, weight_decay, warmup_steps, schedule: constant | linear | cosine, grad_clip}
    steps, batch_size, grad_accum, seed, checkpoint_every, log_every, mixed_precision, output_dir

Relative paths (data sources, ``model.init`` folders, ``model.segmenter_from``, ``output_dir``, and the backbone
folders ``model.config.base_vlm`` / ``base_sam2`` of ``init: real``) are resolved against the config file's folder.
Any problem (unknown key, wrong type, missing data path, unknown stage) is a one-line :class:`SparrowError`
naming the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from sparrow.data.readers import FORMATS
from sparrow.errors import SparrowError

STAGES = ("segmenter", "proposer", "vlm", "selection", "memory", "track_selector")
SAMPLINGS = ("uniform", "random", "clip")
MEMORY_PROMPTS = ("mask", "box")
MEMORY_INITS = ("keep", "reset", "xavier")  # sparrow.model.memory_training.reinit_memory_path
SCHEDULES = ("constant", "linear", "cosine")
PRECISIONS = ("no", "bf16", "fp16")
PRESETS = ("tiny", "small", "real")  # model.init values that build a model rather than load a folder


@dataclass
class ModelInit:
    """Where the weights start: ``tiny`` (random tiny backbones), ``small`` (SmolLM2 transplanted into Qwen2.5-VL,
    tiny SAM2), ``real`` (public checkpoints in the local cache) or a folder written by ``save_pretrained`` (e.g. the
    previous stage's ``final``)."""

    init: str = "tiny"
    seed: int = 0  # seeds the random parts (tiny backbones, new heads)
    sam_image_size: int = 256  # tiny / small presets: SAM2 input side (multiple of 64)
    segmenter_from: str = ""  # small only: a saved model folder whose SAM2, proposer and selector the model takes
    config: dict[str, Any] = field(default_factory=dict)  # SparrowConfig overrides (a folder: runtime fields and
    # vlm_vision only, see train/model_init.py)


@dataclass
class FreshSynthRefSource:
    """SynthRef clips generated on the fly (``sparrow.data.synthref.stream``): new clips every epoch, balanced over
    expression kinds and tags, a function of ``(seed, epoch, sample)`` only."""

    seed: int = 1000  # clip stream; never the seed of a written split (their streams differ anyway)
    size: int = 128  # frame side, px
    num_frames: int = 24
    length: int = 1050  # samples per mixture epoch (a multiple of 21 balances every (kind, tag) pair exactly)
    balance: bool = True  # False: a random expression of a plainly drawn clip


@dataclass
class DataSource:
    """One dataset (a MeViS-layout split folder such as a SynthRef split, or any reader's layout with ``format`` and
    ``split``), or fresh SynthRef clips (``synthref``), and its mixing weight."""

    path: str = ""
    weight: float = 1.0
    format: str = "mevis"  # a sparrow.data.readers format: mevis, refytvos, revos, lasot, got10k, curated, ...
    split: str = ""  # the split of `path` to read ("": the only one present)
    tsf_cache: str = (
        ""  # a `sparrow tsf build` output (file or folder of shards); crops go to samples with data.with_tsf
    )
    synthref: FreshSynthRefSource | None = None  # instead of ``path``: clips generated on the fly


@dataclass
class DataConfig:
    sources: list[DataSource] = field(default_factory=list)
    num_vlm_frames: int = 4
    num_sam_frames: int = 2
    sampling: str = "random"  # frame sampling of ReferringVideoDataset; "clip": consecutive SAM frames (memory stage)
    with_tsf: bool = False  # feed TSF crops to the VLM (samples must carry ``tsf_crops``)
    epoch_size: int = 0  # samples per mixture epoch (0: the sum of the source sizes)
    num_workers: int = 0  # DataLoader worker processes (sampling is the same for any count)


@dataclass
class LoraSettings:
    """LoRA on the VLM through peft (real backbones; optional for tiny ones)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    prompt_tokens: bool = (
        False  # also train the [BOX]/[SEG] embedding rows (peft trainable tokens; tied output rows follow)
    )


@dataclass
class StageConfig:
    """Which parts train (see :mod:`sparrow.train.stages`); ``train``/``freeze`` add or remove module prefixes."""

    name: str = ""
    seg_only: bool = False  # vlm/selection: drop [BOX] from the answers (the [SEG]-only ablation)
    train: list[str] = field(default_factory=list)
    freeze: list[str] = field(default_factory=list)
    lora: LoraSettings | None = None
    point_prompts: bool = True  # segmenter: also train with one positive point per target
    box_jitter: float = 0.0  # segmenter: noise on the prompt boxes' corners, std as a fraction of the box's side
    memory_prompt: str = (
        "mask"  # memory: first-frame prompt, the ground-truth "mask" or the mask decoded from its "box"
    )
    single_mask_tracking: bool = True  # memory: tracked frames use SAM2's single-mask output (saved in its config)
    memory_image_loss: bool = False  # memory: add the box-prompted image-path loss (when the mask decoder trains too)
    calibrate_memory: bool = False  # memory: set memory attention's output norm to the image features' scale first
    memory_init: str = "keep"  # memory: re-initialise the memory path first: keep | reset | xavier
    identity_prompts: bool = False  # segmenter: also learn one prompt per SynthRef (colour, shape) identity; vlm:
    # classify [BOX]/[SEG] against those (frozen) prompts (SparrowModel._prompt_identity_loss)


@dataclass
class OptimizerConfig:
    """AdamW with linear warmup then a constant / linear-to-0 / cosine-to-0 schedule."""

    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "linear"
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    model: ModelInit = field(default_factory=ModelInit)
    data: DataConfig = field(default_factory=DataConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    steps: int = 100  # optimiser steps
    batch_size: int = 1  # samples per process per micro-step
    grad_accum: int = 1  # micro-steps per optimiser step
    seed: int = 0
    checkpoint_every: int = 0  # 0: only the final checkpoint
    keep_checkpoints: int = 2
    log_every: int = 1
    mixed_precision: str = "no"  # "bf16" on GPUs
    output_dir: str = ""
    source: str | None = None  # the YAML file this came from (set by the loader)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, data: Any, where: str, path: Path) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong scalar types."""
    if not isinstance(data, dict):
        raise SparrowError(f"'{where}' must be a mapping, got {type(data).__name__}", path)
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - {"source"}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SparrowError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(where + '.' * bool(where) + u for u in unknown)}",
            path,
        )
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _convert(hints[key], value, f"{where}.{key}" if where else key, path)
    return cls(**kwargs)


def _convert(hint: Any, value: Any, where: str, path: Path) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, path)
    if hint == (LoraSettings | None):
        return None if value is None else _build(LoraSettings, {} if value is True else value, where, path)
    if hint == (FreshSynthRefSource | None):
        return None if value is None else _build(FreshSynthRefSource, {} if value is True else value, where, path)
    if hint == list[DataSource]:
        if not isinstance(value, list):
            raise SparrowError(f"'{where}' must be a list", path)
        return [
            _build(DataSource, {"path": v} if isinstance(v, str) else v, f"{where}[{i}]", path)
            for i, v in enumerate(value)
        ]
    simple = {int: int, float: (int, float), str: str, bool: bool}
    if hint in simple:
        ok = isinstance(value, simple[hint]) and not (hint is not bool and isinstance(value, bool))
        if not ok:
            raise SparrowError(f"'{where}' must be {hint.__name__}, got {value!r}", path)
        return float(value) if hint is float else value
    if hint in (list[str], list[float]):
        item = str if hint == list[str] else (int, float)
        if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
            raise SparrowError(f"'{where}' must be a list of {'strings' if item is str else 'numbers'}", path)
        return list(value)
    if hint == dict[str, Any]:
        if not isinstance(value, dict):
            raise SparrowError(f"'{where}' must be a mapping", path)
        return dict(value)
    raise TypeError(f"no converter for {hint}")


def _resolve(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p))


def validate(config: TrainConfig, path: Path, check_paths: bool = True) -> TrainConfig:
    """Check values and (optionally) that data paths exist; raise a one-line SparrowError naming ``path``."""
    if config.stage.name not in STAGES:
        raise SparrowError(f"stage.name must be one of {', '.join(STAGES)}, got {config.stage.name!r}", path)
    if config.optimizer.schedule not in SCHEDULES:
        raise SparrowError(
            f"optimizer.schedule must be one of {', '.join(SCHEDULES)}, got {config.optimizer.schedule!r}", path
        )
    if config.mixed_precision not in PRECISIONS:
        raise SparrowError(
            f"mixed_precision must be one of {', '.join(PRECISIONS)}, got {config.mixed_precision!r}", path
        )
    if config.data.sampling not in SAMPLINGS:
        raise SparrowError(f"data.sampling must be one of {', '.join(SAMPLINGS)}, got {config.data.sampling!r}", path)
    if config.stage.memory_init not in MEMORY_INITS:
        raise SparrowError(
            f"stage.memory_init must be one of {', '.join(MEMORY_INITS)}, got {config.stage.memory_init!r}", path
        )
    if config.stage.memory_prompt not in MEMORY_PROMPTS:
        raise SparrowError(
            f"stage.memory_prompt must be one of {', '.join(MEMORY_PROMPTS)}, got {config.stage.memory_prompt!r}", path
        )
    if not 0.0 <= config.stage.box_jitter <= 0.5:
        raise SparrowError(f"stage.box_jitter must be in [0, 0.5], got {config.stage.box_jitter}", path)
    if len(config.optimizer.betas) != 2:
        raise SparrowError(f"optimizer.betas must have two values, got {config.optimizer.betas}", path)
    for name in ("steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
        if getattr(config, name) < 1:
            raise SparrowError(f"{name} must be >= 1, got {getattr(config, name)}", path)
    if config.checkpoint_every < 0 or config.optimizer.warmup_steps < 0 or config.optimizer.lr <= 0:
        raise SparrowError("checkpoint_every and optimizer.warmup_steps must be >= 0 and optimizer.lr > 0", path)
    if not config.output_dir:
        raise SparrowError("output_dir is required", path)
    if not config.data.sources:
        raise SparrowError("data.sources must list at least one dataset folder", path)
    for i, src in enumerate(config.data.sources):
        if src.synthref is not None:
            fresh = src.synthref
            if src.path or src.tsf_cache:
                raise SparrowError(f"data.sources[{i}] has both synthref and a path/tsf_cache; give one", path)
            if fresh.seed < 0 or fresh.length < 1 or not 32 <= fresh.size <= 1024 or not 4 <= fresh.num_frames <= 1000:
                raise SparrowError(
                    f"data.sources[{i}].synthref needs seed >= 0, length >= 1, size in [32, 1024] and num_frames in "
                    f"[4, 1000], got {fresh}",
                    path,
                )
        elif not src.path:
            raise SparrowError(f"data.sources[{i}].path (or synthref) is required", path)
        if src.weight <= 0:
            raise SparrowError(f"data.sources[{i}].weight must be > 0, got {src.weight}", path)
        if src.path and src.format not in FORMATS:
            raise SparrowError(
                f"data.sources[{i}].format {src.format!r} is unknown; supported: {', '.join(FORMATS)}", path
            )
        if check_paths and src.path and not Path(src.path).is_dir():
            raise SparrowError(f"data.sources[{i}].path does not exist: {src.path}", path)
        if check_paths and src.tsf_cache and not Path(src.tsf_cache).exists():
            raise SparrowError(f"data.sources[{i}].tsf_cache does not exist: {src.tsf_cache}", path)
    if config.data.with_tsf and not any(src.tsf_cache for src in config.data.sources):
        raise SparrowError("data.with_tsf needs a tsf_cache on at least one data source", path)
    if config.model.init not in PRESETS and check_paths and not Path(config.model.init).is_dir():
        raise SparrowError(
            f"model.init is not 'tiny', 'small', 'real' or an existing model folder: {config.model.init}", path
        )
    if config.model.segmenter_from and config.model.init != "small":
        raise SparrowError("model.segmenter_from applies to model.init: small only", path)
    if config.model.segmenter_from and check_paths and not Path(config.model.segmenter_from).is_dir():
        raise SparrowError(f"model.segmenter_from is not an existing model folder: {config.model.segmenter_from}", path)
    return config


def load_train_config(path: str | Path, check_paths: bool = True) -> TrainConfig:
    """Read and validate a training YAML file; relative paths are taken from the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise SparrowError("no such training config file", path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SparrowError(f"not valid YAML ({str(exc).splitlines()[0]})", path) from exc
    if data is None:
        raise SparrowError("empty training config", path)
    config = _build(TrainConfig, data, "", path)
    base = path.resolve().parent
    for src in config.data.sources:
        if src.path:
            src.path = _resolve(base, src.path)
        if src.tsf_cache:
            src.tsf_cache = _resolve(base, src.tsf_cache)
    if config.model.init not in PRESETS:
        config.model.init = _resolve(base, config.model.init)
    for key in ("base_vlm", "base_sam2"):  # init real: backbone folders (or hub ids in the local cache)
        value = config.model.config.get(key)
        if isinstance(value, str) and (value.startswith((".", "~")) or (base / value).is_dir()):
            config.model.config[key] = _resolve(base, value)
    if config.model.segmenter_from:
        config.model.segmenter_from = _resolve(base, config.model.segmenter_from)
    if config.output_dir:
        config.output_dir = _resolve(base, config.output_dir)
    config.source = str(path)
    return validate(config, path, check_paths)
