"""``vlm_vision: sam2``: the VLM's vision tokens from the model's SAM2 encoder through a projector (issue 10 item 2)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers_train import ToyClips, toy_config
from safetensors.torch import load_file

from sparrow.data.mevis import read_mevis
from sparrow.data.synthref.generate import SynthConfig, generate_split
from sparrow.diagnostics.extract import extract_clip
from sparrow.diagnostics.grounding import attribute_report
from sparrow.errors import SparrowError
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import build_tiny, from_pretrained, save_pretrained
from sparrow.model.sam2_vision import Sam2VisionTower, cell_positions, set_vlm_vision, unpatchify
from sparrow.model.vlm_qwen2_5 import VLMSample, patchify
from sparrow.train.config import LoraSettings, ModelInit, StageConfig
from sparrow.train.loop import train
from sparrow.train.model_init import build_initial_model
from sparrow.train.stages import apply_stage

SMALL = {"vlm_frames": 4, "vlm_max_frame_pixels": 56 * 56, "proposer_queries": 8, "proposer_hidden": 64}


def _config(vision: str) -> SparrowConfig:
    return SparrowConfig(base_vlm="tiny", base_sam2="tiny", vlm_vision=vision, **SMALL)


@pytest.fixture(scope="module")
def models() -> dict[str, object]:
    return {v: build_tiny(seed=0, config=_config(v), sam_image_size=64).eval() for v in ("qwen", "sam2")}


def _sample(seed: int = 0, crops: bool = False) -> VLMSample:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(4, 64, 80, 3), dtype=np.uint8)
    return VLMSample(
        frames,
        "Can you segment the red circle?",
        "Sure, [BOX] [SEG].",
        tsf_crops=frames[:2, :40, :40] if crops else None,
    )


def test_unpatchify_inverts_patchify_and_positions_are_bounded() -> None:
    frames = torch.randn(3, 3, 56, 84)
    patches, grid = patchify(frames, 14, 2, 2)
    back = unpatchify(patches, grid[0], 14, 2, 2)
    assert back.shape == (4, 3, 56, 84) and torch.equal(back[:3], frames) and torch.equal(back[3], frames[2])
    pos = cell_positions(2, 3, torch.device("cpu"))
    assert pos.shape == (2, 3, 16) and float(pos.abs().max()) <= 1.0
    assert not torch.allclose(pos[0, 0], pos[1, 0]) and not torch.allclose(pos[0, 0], pos[0, 1])


def test_tower_gives_the_token_count_qwen_expects(models) -> None:
    qwen, sam2 = models["qwen"], models["sam2"]
    tower = sam2.vlm.model.model.visual
    assert isinstance(tower, Sam2VisionTower) and not isinstance(qwen.vlm.model.model.visual, Sam2VisionTower)
    assert tower.pixel_decoder is sam2.pixel_decoder  # the model's own SAM2, by reference
    batch = sam2.vlm.collate([_sample(0, crops=True), _sample(1)])
    for pix, grid, token in (
        (batch.pixel_values_videos, batch.video_grid_thw, sam2.vlm.video_token_id),
        (batch.pixel_values, batch.image_grid_thw, sam2.vlm.image_token_id),
    ):
        out = tower(pix, grid_thw=grid)
        assert out.pooler_output.shape == (int(grid.prod(-1).sum()) // 4, 64)
        assert out.pooler_output.dtype == torch.float32
        assert int((batch.input_ids == token).sum()) == out.pooler_output.shape[0]
        reference = qwen.vlm.model.model.visual(pix, grid_thw=grid).pooler_output
        assert reference.shape == out.pooler_output.shape
    # the HF entry point the probe uses splits per video
    split = sam2.vlm.model.get_video_features(batch.pixel_values_videos, batch.video_grid_thw).pooler_output
    assert [s.shape[0] for s in split] == [int(g.prod()) // 4 for g in batch.video_grid_thw]
    # a video's tokens depend on its own frames only (items batched through SAM2 together)
    alone = sam2.vlm.collate([_sample(1)])
    single = tower(alone.pixel_values_videos, grid_thw=alone.video_grid_thw).pooler_output
    assert torch.allclose(split[1], single, atol=1e-5)
    generated = sam2.vlm.generate(sam2.vlm.collate([_sample(0, crops=True)], padding_side="left"), max_new_tokens=3)
    assert len(generated) == 1 and generated[0].states.shape[-1] == 64


def test_gradient_reaches_the_projector_but_not_sam2(models) -> None:
    model = models["sam2"]
    model.zero_grad()
    loss, _ = model.vlm(model.vlm.collate([_sample(0, crops=True)]))
    loss.backward()
    tower = model.vlm.model.model.visual
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in tower.parameters())
    assert all(p.grad is None for p in model.sam.parameters())
    model.zero_grad()


def test_save_load_round_trip_without_a_second_sam2(models, tmp_path) -> None:
    model = models["sam2"]
    path = save_pretrained(model, tmp_path / "m")
    saved = load_file(str(path / "model.safetensors"))
    visual = sorted(k for k in saved if ".visual." in k)
    assert visual and all(
        k.startswith(("vlm.model.model.visual.projector.", "vlm.model.model.visual.position.")) for k in visual
    )
    assert sum(k.startswith("pixel_decoder.sam.vision_encoder.") for k in saved) == len(
        [k for k in model.state_dict() if k.startswith("pixel_decoder.sam.vision_encoder.")]
    )
    loaded = from_pretrained(path)
    assert loaded.config.vlm_vision == "sam2" and loaded.vlm.model.model.visual.pixel_decoder is loaded.pixel_decoder
    batch = model.vlm.collate([_sample(2, crops=True)])
    with torch.no_grad():
        assert torch.equal(model.vlm(batch)[1], loaded.vlm(batch)[1])
    twin = copy.deepcopy(loaded)  # a copy's tower reads the copy's SAM2
    assert twin.vlm.model.model.visual.pixel_decoder is twin.pixel_decoder


def test_default_path_is_unchanged(models) -> None:
    assert SparrowConfig().vlm_vision == "qwen"
    assert SparrowConfig.from_dict({}).vlm_vision == "qwen"  # configs saved before the field load with Qwen's tower
    with pytest.raises(SparrowError, match="vlm_vision"):
        SparrowConfig(vlm_vision="clip")
    qwen, sam2 = (models[v].state_dict() for v in ("qwen", "sam2"))
    shared = [k for k in qwen if ".visual." not in k]
    assert shared == [k for k in sam2 if ".visual." not in k]
    assert all(torch.equal(qwen[k], sam2[k]) for k in shared)  # the new tower is built last: same seeded parts


def test_vlm_stage_trains_the_projector(models, tmp_path) -> None:
    config = toy_config(tmp_path / "run", stage="vlm", steps=2, batch_size=1)
    config.model.config["vlm_vision"] = "sam2"
    result = train(config, sources=[ToyClips()], progress=False)
    projector = [n for n in result.plan.trainable if ".visual." in n]
    assert {n.split(".visual.")[1].split(".")[0] for n in projector} == {"projector", "position"}
    assert not any(n.startswith("pixel_decoder.") for n in result.plan.trainable)
    model = from_pretrained(result.final_dir)
    assert isinstance(model.vlm.model.model.visual, Sam2VisionTower)
    # a saved model may switch towers: the run starts with a fresh one of the other kind, the rest as saved
    back = build_initial_model(ModelInit(init=str(result.final_dir), config={"vlm_vision": "qwen"}))
    assert back.config.vlm_vision == "qwen" and not isinstance(back.vlm.model.model.visual, Sam2VisionTower)
    saved = save_pretrained(models["qwen"], tmp_path / "qwen")
    switched = build_initial_model(ModelInit(init=str(saved), config={"vlm_vision": "sam2", "mode": "perframe"}))
    tower = switched.vlm.model.model.visual
    assert isinstance(tower, Sam2VisionTower) and tower.pixel_decoder is switched.pixel_decoder
    before = models["qwen"].state_dict()
    assert all(torch.equal(before[k], v) for k, v in switched.state_dict().items() if ".visual." not in k)
    with pytest.raises(SparrowError, match="architecture"):
        build_initial_model(ModelInit(init=str(saved), config={"proposer_hidden": 32}))


def test_lora_stage_with_the_sam2_tower(models) -> None:
    model = build_tiny(seed=0, config=_config("qwen"), sam_image_size=64)
    lora = LoraSettings(r=2, alpha=4, dropout=0.0, target_modules=["q_proj"])
    apply_stage(model, StageConfig(name="vlm", lora=lora))  # peft wraps the VLM first
    set_vlm_vision(model.vlm, model.pixel_decoder, "sam2")  # the tower is found through peft's wrapper
    plan = apply_stage(model, StageConfig(name="vlm", train=["vlm.model.model.visual"], lora=lora))
    assert any(".visual.projector." in n for n in plan.trainable) and not any(
        "vision_encoder" in n for n in plan.trainable
    )
    loss, _ = model.vlm(model.vlm.collate([_sample(3)]))
    assert torch.isfinite(loss)


def test_probe_reads_the_tower_and_its_input(models, tmp_path) -> None:
    generate_split(tmp_path, videos=4, seed=0, split="test", config=SynthConfig(size=64, num_frames=8), progress=False)
    records = read_mevis(tmp_path / "test")
    clips = {v: [extract_clip(models[v], r) for r in records] for v in ("qwen", "sam2")}
    clip = clips["sam2"][0]
    assert clip.vision_tokens.shape == (2, 2, 2, 64) and clip.lm_tokens.shape == (2, 2, 2, 64)  # 4 frames, 56 px
    assert clip.vision_input.shape == (2, 2, 2, 2 * 4 * (128 + 32)) and clips["qwen"][0].vision_input is None
    tower = models["sam2"].vlm.model.model.visual
    assert torch.allclose(tower.project(clip.vision_input), clip.vision_tokens, atol=1e-5)
    report = attribute_report(clips["sam2"][:2], clips["sam2"][2:])
    assert (
        set(report["vlm vision input"])
        == set(report["vlm vision"])
        == {"colour", "shape", "identity", "quadrant", "direction"}
    )
    assert "vlm vision input" not in attribute_report(clips["qwen"][:2], clips["qwen"][2:])
