"""The ``real`` architecture at its real widths, on CPU, from local folders (no download).

Qwen2.5-VL-3B widths (text 2048 / 16 heads / 2 KV heads / MLP 11008, 2 layers; vision tower 1280 -> 2048,
depth 2; the tiny tokenizer's vocabulary) and SAM2.1 Hiera base+ widths (112..896, FPN 256, memory 256/64,
blocks (1, 1, 2, 1), 256 px), random weights written as Hugging Face folders and loaded through
``init: real`` with ``model.config.base_vlm`` / ``base_sam2``. Checked: the published parameter counts of the
full configs, one LoRA training step in float32 and in bfloat16 autocast, ``segment()`` through
``SegmentationPipeline`` in both, and a two-process (gloo) training step through ``accelerate launch``. That one
is DDP: accelerate 1.15's FSDP does not run on CPU (FSDP1 stops with "no available devices", FSDP2 falls back to
plain multi-CPU DDP), see docs/gpu.md.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers_train import ToyClips
from safetensors.torch import load_file

import sparrow
from sparrow.data.synthref import SynthConfig, generate_split
from sparrow.model.loading import build_model, real_config
from sparrow.model.real_backbones import (
    parameter_counts,
    qwen25_vl_3b_config,
    sam21_base_plus_config,
    write_real_width_backbones,
)
from sparrow.pipeline import SegmentationPipeline
from sparrow.train.config import (
    DataConfig,
    DataSource,
    LoraSettings,
    ModelInit,
    OptimizerConfig,
    StageConfig,
    TrainConfig,
)
from sparrow.train.loop import train

SMALL_INPUTS = {"vlm_max_frame_pixels": 56 * 56, "vlm_max_crop_pixels": 28 * 28, "vlm_frames": 4, "max_new_tokens": 4}


@pytest.fixture(autouse=True)
def collect_garbage():
    """Models hold reference cycles (forward hooks); free each test's ~1 GB model before the next one builds."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> dict[str, str]:
    vlm, sam2 = write_real_width_backbones(tmp_path_factory.mktemp("real_width"), seed=0)
    return {"base_vlm": str(vlm), "base_sam2": str(sam2)}


def _model(backbones: dict[str, str]):
    config = real_config()
    for key, value in SMALL_INPUTS.items():
        setattr(config, key, value)
    return build_model(config, backbones["base_vlm"], backbones["base_sam2"], seed=0)


def test_full_configs_have_the_published_parameter_counts():
    qwen = parameter_counts(qwen25_vl_3b_config())
    sam = parameter_counts(sam21_base_plus_config())
    assert qwen["total"] == 3_754_622_976  # Qwen2.5-VL-3B-Instruct (tied embeddings counted once)
    assert qwen["model.visual"] == 668_684_288 and qwen["model.language_model"] == 3_085_938_688
    assert sam["total"] == 80_850_178  # SAM2.1 Hiera base+ (HF Sam2VideoModel)
    assert sam["vision_encoder"] == 69_106_816


def test_built_model_has_the_real_widths(backbones):
    model = _model(backbones)
    text = model.vlm.model.config.text_config
    vision = model.vlm.model.config.vision_config
    assert (text.hidden_size, text.num_attention_heads, text.num_key_value_heads, text.intermediate_size) == (
        2048,
        16,
        2,
        11008,
    )
    assert (vision.hidden_size, vision.out_hidden_size, vision.intermediate_size, vision.num_heads) == (
        1280,
        2048,
        3420,
        16,
    )
    layer = model.vlm.model.model.language_model.layers[0]
    assert tuple(layer.mlp.up_proj.weight.shape) == (11008, 2048) and tuple(layer.self_attn.k_proj.weight.shape) == (
        256,
        2048,
    )
    hiera = model.sam.config.vision_config.backbone_config
    assert hiera.embed_dim_per_stage == [112, 224, 448, 896] and hiera.num_attention_heads_per_stage == [2, 4, 8, 16]
    assert (
        model.sam.config.vision_config.fpn_hidden_size == 256 and model.sam.config.memory_attention_hidden_size == 256
    )
    assert model.sam.config.memory_encoder_output_channels == 64 and model.sam.config.num_maskmem == 7
    assert (model.config.proposer_queries, model.config.proposer_layers, model.config.vlm_frames) == (300, 6, 4)
    assert model.box_head is not None and model.seg_head is not None
    counts = parameter_counts(model)
    assert 270e6 < counts["total"] < 285e6, counts  # 2 of 36 text layers, 2 of 32 vision blocks, 5 of 24 Hiera blocks


@pytest.fixture
def fresh_accelerator_state():
    """``train`` makes accelerate's process-wide state, which fixes the mixed precision: start and end clean."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def _train_config(backbones: dict[str, str], out: Path, precision: str) -> TrainConfig:
    return TrainConfig(
        model=ModelInit(init="real", seed=0, config={**backbones, **SMALL_INPUTS}),
        data=DataConfig(sources=[DataSource(path="in-memory")], num_vlm_frames=4, num_sam_frames=2),
        stage=StageConfig(
            name="vlm", lora=LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"])
        ),
        optimizer=OptimizerConfig(lr=1e-3, warmup_steps=0, schedule="constant"),
        steps=2,  # max_steps=1 below: one step, a checkpoint, and no 1 GB final export
        batch_size=1,
        mixed_precision=precision,
        output_dir=str(out),
    )


def test_lora_training_step_in_float32_and_bfloat16_autocast(backbones, tmp_path, fresh_accelerator_state):
    from accelerate.state import AcceleratorState

    losses = {}
    for precision in ("no", "bf16"):
        AcceleratorState._reset_state()
        out = tmp_path / precision
        result = train(_train_config(backbones, out, precision), sources=[ToyClips(n=2)], max_steps=1, progress=False)
        record = result.records[0]
        assert record["step"] == 1 and all(np.isfinite(v) for v in record.values())
        assert {"ce", "mask_bce", "mask_dice", "selection", "box"} <= set(record)
        names = result.plan.trainable
        vlm = [n for n in names if n.startswith("vlm.")]
        assert vlm and all("lora_" in n for n in vlm)  # the VLM trains only its adapters
        assert {n.split(".")[0] for n in names} == {"vlm", "box_head", "seg_head"}
        assert len(vlm) == 2 * 2 * 2  # q_proj and v_proj (A, B) in each of the 2 text layers
        saved = load_file(str(out / "checkpoints" / "step_00000001" / "trainable.safetensors"))
        lora_b = [v for n, v in saved.items() if "lora_B" in n]
        assert lora_b and all(float(v.abs().max()) > 0 for v in lora_b)  # zero-initialised B moved in the step
        world = json.loads((out / "train_config.json").read_text())["world"]
        assert world["processes"] == 1 and world["mixed_precision"] == precision
        losses[precision] = record["loss"]
    # the same sample and weights: bf16 autocast changes the numbers a little, not the result
    assert losses["bf16"] != losses["no"]
    assert losses["bf16"] == pytest.approx(losses["no"], rel=0.05)


def _frames() -> np.ndarray:
    frames = np.full((6, 64, 80, 3), 30, dtype=np.uint8)
    for t in range(6):
        frames[t, 20:40, 8 + 6 * t : 28 + 6 * t] = (220, 40, 40)
    return frames


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_segment_through_the_pipeline(backbones, precision):
    pipeline = SegmentationPipeline(_model(backbones))
    dtypes = []
    down = pipeline.model.vlm.model.model.language_model.layers[0].mlp.down_proj
    hook = down.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")
    with autocast:
        result = pipeline.segment(_frames(), "the red square moving right", mode="track", max_new_tokens=4)
    hook.remove()
    assert set(dtypes) == {getattr(torch, precision)}
    masks = result.masks
    assert masks.shape == (6, 64, 80) and masks.dtype == bool
    target = result.targets[0]
    assert len(target.rles) == len(target.boxes) == 6
    assert target.key_frame in result.vlm_frame_indices and len(result.vlm_frame_indices) == 4
    assert isinstance(result.answer, str) and result.mode == "track"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training_step_through_accelerate_launch(backbones, tmp_path):
    data = tmp_path / "synth"
    generate_split(
        data,
        videos=2,
        seed=0,
        split="train",
        config=SynthConfig(size=64, num_frames=4, expressions_per_video=1),
        progress=False,
    )
    config = {
        "model": {"init": "real", "seed": 0, "config": {**backbones, **SMALL_INPUTS}},
        "data": {"sources": [{"path": str(data / "train")}], "num_vlm_frames": 4, "num_sam_frames": 2},
        "stage": {"name": "vlm", "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}},
        "optimizer": {"lr": 1.0e-3, "warmup_steps": 0, "schedule": "constant"},
        "steps": 2,
        "batch_size": 1,
        "mixed_precision": "bf16",
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "real_vlm.yaml"
    path.write_text(yaml.safe_dump(config))
    src = str(Path(sparrow.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "bf16",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "sparrow",
        "train",
        "--config",
        str(path),
        "--max-steps",
        "1",
        "--quiet",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage vlm: step 1/2" in done.stdout
    run = tmp_path / "run"
    world = json.loads((run / "train_config.json").read_text())["world"]
    assert (world["processes"], world["distributed_type"], world["mixed_precision"]) == (2, "MULTI_CPU", "bf16")
    (record,) = [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]
    assert record["step"] == 1 and np.isfinite(record["loss"]) and "ce" in record
    saved = load_file(str(run / "checkpoints" / "step_00000001" / "trainable.safetensors"))
    assert any("lora_B" in n and float(v.abs().max()) > 0 for n, v in saved.items())
