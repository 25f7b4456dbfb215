"""Each stage trains exactly its parameters: frozen ones stay bit-identical, trainable ones move; LoRA exports merged."""

from __future__ import annotations

import hashlib

import pytest
import torch
from helpers_train import ToyClips, toy_config
from safetensors.torch import load_file

from sparrow.errors import SparrowError
from sparrow.model.loading import from_pretrained
from sparrow.train.config import LoraSettings, StageConfig
from sparrow.train.loop import prepare_samples, train
from sparrow.train.model_init import build_initial_model
from sparrow.train.stages import apply_stage


def _digest(tensors: dict[str, torch.Tensor], names: list[str]) -> str:
    h = hashlib.sha256()
    for n in names:
        h.update(n.encode() + tensors[n].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def initial(tmp_path_factory):
    config = toy_config(tmp_path_factory.mktemp("init"))
    model = build_initial_model(config.model)
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


@pytest.mark.parametrize("stage", ["segmenter", "proposer", "vlm", "selection"])
def test_frozen_parameters_stay_bit_identical(tmp_path, initial, stage):
    result = train(toy_config(tmp_path, stage=stage, steps=2, batch_size=1), sources=[ToyClips()], progress=False)
    final = load_file(str(result.final_dir / "model.safetensors"))
    plan = result.plan
    assert set(final) == set(initial) and set(plan.trainable) | set(plan.frozen) <= set(final)
    untouched = sorted(set(final) - set(plan.trainable))  # frozen parameters and buffers
    assert set(plan.frozen) <= set(untouched) and len(plan.frozen) > 10
    assert _digest(final, untouched) == _digest(initial, untouched)
    moved = [n for n in plan.trainable if not torch.equal(final[n], initial[n])]
    assert len(moved) >= 0.5 * len(plan.trainable), (stage, len(moved), len(plan.trainable))
    owners = {"segmenter": "pixel_decoder.sam.", "proposer": "proposer.", "vlm": "vlm.", "selection": "selector."}
    assert any(n.startswith(owners[stage]) for n in moved)
    if stage != "segmenter":
        assert not any(n.startswith("pixel_decoder.") for n in plan.trainable)
    if stage == "vlm":
        assert not any(n.startswith(("proposer.", "selector.")) for n in plan.trainable)


def test_lora_stage_trains_adapters_and_exports_a_merged_model(tmp_path, initial):
    config = toy_config(tmp_path, stage="vlm", steps=2, batch_size=1)
    config.stage.lora = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    result = train(config, sources=[ToyClips()], progress=False)
    vlm_trainable = [n for n in result.plan.trainable if n.startswith("vlm.")]
    assert vlm_trainable and all("lora_" in n for n in vlm_trainable)
    model = from_pretrained(result.final_dir)  # strict: merged LoRA keeps the plain parameter names
    state = model.state_dict()
    assert set(state) == set(initial)
    merged = [n for n in state if not torch.equal(state[n], initial[n])]
    assert merged and all(n.startswith(("box_head.", "seg_head.")) or ("q_proj" in n or "v_proj" in n) for n in merged)


def test_seg_only_drops_box_tokens_and_stage_errors(initial):
    samples = prepare_samples([ToyClips()[0]], seg_only=True)
    assert samples[0].answer == "Sure, it is [SEG]." and "[BOX]" in ToyClips()[0].answer
    config = toy_config("unused")
    model = build_initial_model(config.model)
    with pytest.raises(SparrowError, match="matches no parameter"):
        apply_stage(model, StageConfig(name="vlm", freeze=["no_such_module"]))
    with pytest.raises(SparrowError, match="no parameter to train"):
        apply_stage(model, StageConfig(name="selection", freeze=["selector", "box_head"]))
    with pytest.raises(SparrowError, match="lora"):
        apply_stage(model, StageConfig(name="proposer", lora=LoraSettings()))


def test_segmenter_point_prompts_fall_inside_their_masks():
    from sparrow.train.objectives import random_points

    masks = torch.zeros(3, 20, 40)
    masks[0, 2:5, 30:33] = 1
    masks[1, 10:20, 0:4] = 1
    masks[2, 7, 9] = 1
    torch.manual_seed(0)
    for _ in range(5):
        pts = random_points(masks, size=64)  # pixel centres, scaled to the 64 x 64 SAM input
        xs = (pts[:, 0] / 64 * 40 - 0.5).round().long()
        ys = (pts[:, 1] / 64 * 20 - 0.5).round().long()
        assert all(masks[i, ys[i], xs[i]] == 1 for i in range(3)), pts
    assert pts[2].tolist() == pytest.approx([9.5 / 40 * 64, 7.5 / 20 * 64])


def test_tiny_init_ties_the_prompt_and_image_positional_bases(initial):
    from sparrow.model.sam2_backbone import build_sam2, tiny_sam2_config

    image = initial["pixel_decoder.sam.shared_image_embedding.positional_embedding"]
    prompt = initial["pixel_decoder.sam.prompt_encoder.shared_embedding.positional_embedding"]
    assert torch.equal(image, prompt)
    from transformers import Sam2VideoModel

    torch.manual_seed(0)
    raw = Sam2VideoModel(tiny_sam2_config(64))  # what HF draws: two independent bases
    assert not torch.equal(
        raw.shared_image_embedding.positional_embedding, raw.prompt_encoder.shared_embedding.positional_embedding
    )
    torch.manual_seed(0)
    tied = build_sam2(tiny_sam2_config(64))
    assert torch.equal(
        tied.shared_image_embedding.positional_embedding, tied.prompt_encoder.shared_embedding.positional_embedding
    )
