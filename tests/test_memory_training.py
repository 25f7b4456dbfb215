"""Training through SAM2's memory: the unroll equals inference propagation, gradients reach the memory modules, the
`memory` stage lowers its loss and keeps everything else frozen, and clip sampling gives consecutive frames."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers_train import ToyClips, toy_config
from safetensors.torch import load_file
from test_propagator import S, hf_reference, moving_square

from sparrow.data.schema import Expression, ObjectTrack, VideoRecord
from sparrow.errors import SparrowError
from sparrow.model.batching import make_batch
from sparrow.model.loading import from_pretrained
from sparrow.model.memory_training import (
    MEMORY_MODULES,
    calibrate_memory_output,
    prompt_mask,
    reinit_memory_path,
    set_single_mask_tracking,
    unroll_memory,
)
from sparrow.model.propagator import MaskPropagator
from sparrow.model.sam2_backbone import Sam2Preprocessor, build_sam2, tiny_sam2_config
from sparrow.train.config import load_train_config
from sparrow.train.data import ClipDataset
from sparrow.train.loop import train
from sparrow.train.model_init import build_initial_model
from sparrow.train.objectives import memory_loss
from sparrow.train.stages import STAGE_TRAINABLE, apply_stage

T = 6
MEMORY_PARTS = (
    "memory_encoder",
    "memory_attention",
    "object_pointer_proj",
    "memory_temporal_positional_encoding",
    "temporal_positional_encoding_projection_layer",
    "mask_downsample",
)


@pytest.fixture(scope="module")
def sam():
    """A tiny random SAM2 whose every parameter is perturbed (HF zero-initialises several memory parameters)."""
    torch.manual_seed(0)
    model = build_sam2(tiny_sam2_config(S))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def clip():
    return moving_square(T, seed=1)


@pytest.mark.parametrize("single_mask", [False, True])
def test_unroll_equals_propagation(sam, clip, single_mask: bool) -> None:
    frames, gt = clip
    set_single_mask_tracking(sam, single_mask)
    try:
        reference = dict(
            MaskPropagator(sam, Sam2Preprocessor(S)).propagate(frames, {0: gt[0]}, direction="forward", logits=True)
        )
        hf = hf_reference(sam, frames, {0: gt[0]})
        sam.eval()
        with torch.no_grad():
            out = unroll_memory(sam, Sam2Preprocessor(S)(frames), prompt_mask(torch.from_numpy(gt[0]), S))
            other = unroll_memory(sam, Sam2Preprocessor(S)(frames), prompt_mask(torch.from_numpy(gt[3]), S))
    finally:
        set_single_mask_tracking(sam, False)
    ours = out.pred_masks.numpy()
    assert ours.shape == (T, S // 4, S // 4)
    assert max(np.abs(ours[t] - reference[t]).max() for t in range(T)) <= 1e-4
    assert max(np.abs(ours[t] - hf[t]).max() for t in range(T)) <= 1e-4
    assert out.mask_logits.shape == (T - 1, 1 if single_mask else 3, S // 4, S // 4)
    kept = out.mask_logits[torch.arange(T - 1), out.chosen]  # the candidate SAM2 keeps, unclamped
    present = out.object_score_logits > 0
    assert torch.equal(kept[present], out.pred_masks[1:][present])
    # the memory carries the prompt: another first-frame mask changes every tracked frame by more than the tolerance
    assert (other.pred_masks[1:] - out.pred_masks[1:]).flatten(1).abs().amax(1).min() > 5e-4


def test_gradients_reach_the_memory_path(sam, clip) -> None:
    frames, gt = clip
    sam.train()
    sam.vision_encoder.requires_grad_(False)
    sam.zero_grad(set_to_none=True)
    try:
        out = unroll_memory(sam, Sam2Preprocessor(S)(frames), prompt_mask(torch.from_numpy(gt[0]), S))
        targets = torch.nn.functional.interpolate(torch.from_numpy(gt[1:]).float()[:, None], size=(S // 4, S // 4))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.mask_logits[:, :1], targets)
        loss = loss + out.object_score_logits.sum() * 0.1
        loss.backward()
        grads = {n: p.grad for n, p in sam.named_parameters()}
    finally:
        sam.vision_encoder.requires_grad_(True)
        sam.zero_grad(set_to_none=True)
        sam.eval()
    for part in MEMORY_PARTS:
        norms = [float(g.abs().sum()) for n, g in grads.items() if n.split(".")[0] == part and g is not None]
        assert norms and max(norms) > 0, part
    assert all(grads[n] is None for n in grads if n.startswith("vision_encoder."))  # frozen encoder: no grad kept


def test_calibration_puts_memory_features_on_the_image_features_scale(sam, clip) -> None:
    frames, gt = clip
    model = copy.deepcopy(sam).eval()
    pixels = Sam2Preprocessor(S)(frames)

    def conditioned_std() -> float:
        outputs = []
        handle = model.memory_attention.register_forward_hook(lambda _m, _i, out: outputs.append(out))
        with torch.no_grad():
            unroll_memory(model, pixels, prompt_mask(torch.from_numpy(gt[0]), S))
        handle.remove()
        return float(torch.cat(outputs).std())

    with torch.no_grad():
        image = (
            model.get_image_features(pixels, return_dict=True).fpn_hidden_states[-1] + model.no_memory_embedding
        ).flatten(0, 1)
    before = conditioned_std()
    calibrate_memory_output(model, pixels)
    assert torch.allclose(model.memory_attention.layer_norm.weight, image.std(0))
    assert torch.allclose(model.memory_attention.layer_norm.bias, image.mean(0))
    after, target = conditioned_std(), float(image.std())
    assert abs(np.log(after / target)) < 0.5 * abs(np.log(before / target))


@pytest.mark.parametrize("scheme", ["keep", "reset", "xavier"])
def test_reinit_touches_only_the_memory_path(scheme: str) -> None:
    torch.manual_seed(0)
    model = build_sam2(tiny_sam2_config(S))
    before = {n: p.clone() for n, p in model.named_parameters()}
    reinit_memory_path(model, scheme)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert all(n.split(".")[0] in MEMORY_MODULES for n in changed)
    q = model.memory_attention.layers[0].cross_attn_image.q_proj.weight  # [128, 128]
    expected = {"keep": 0.02, "reset": (3 * 128) ** -0.5, "xavier": (2 / 256) ** 0.5}[scheme]
    assert abs(float(q.detach().std()) / expected - 1) < 0.1
    if scheme != "keep":
        assert {n.split(".")[0] for n in changed} == set(MEMORY_MODULES)
    with pytest.raises(ValueError, match="memory init"):
        reinit_memory_path(model, "zeros")


def test_memory_stage_lowers_its_loss_and_trains_only_the_memory_path(tmp_path) -> None:
    config = toy_config(tmp_path, stage="memory", steps=24, batch_size=2)
    config.optimizer.lr = 3e-3
    config.data.num_sam_frames = 4
    config.stage.memory_init, config.stage.calibrate_memory = "reset", True
    result = train(config, sources=[ToyClips(n=4, frames=4, sam_frames=4)], progress=False)
    losses = [r["loss"] for r in result.records]
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
    assert {"mask_bce", "mask_dice", "object_score", "track_iou"} <= set(result.records[-1])
    prefixes = tuple(p + "." for p in STAGE_TRAINABLE["memory"]) + STAGE_TRAINABLE["memory"]
    assert result.plan.trainable and all(n.startswith(prefixes) for n in result.plan.trainable)
    initial = build_initial_model(toy_config(tmp_path / "init").model).state_dict()
    final = load_file(str(result.final_dir / "model.safetensors"))
    assert all(torch.equal(final[n], initial[n]) for n in final if n not in result.plan.trainable)
    assert any(not torch.equal(final[n], initial[n]) for n in result.plan.trainable if "memory_attention" in n)
    sam = from_pretrained(result.final_dir).sam  # the exported SAM2 tracks with its single-mask output
    assert not sam.config.multimask_output_for_tracking and not sam.mask_decoder.dynamic_multimask_via_stability


def test_memory_stage_trains_no_parameter_outside_its_prefixes_and_prompts_from_boxes(tmp_path) -> None:
    model = build_initial_model(toy_config(tmp_path).model)
    plan = apply_stage(model, toy_config(tmp_path, stage="memory").stage)
    assert not any(
        n.startswith(("vlm.", "proposer.", "selector.", "pixel_decoder.sam.vision_encoder.")) for n in plan.trainable
    )
    assert "pixel_decoder.sam.mask_decoder.pred_obj_score_head.proj_in.weight" in plan.trainable
    assert "pixel_decoder.sam.mask_decoder.transformer.layers.0.mlp.proj_in.weight" in plan.frozen
    batch = make_batch(model, [ToyClips(frames=3, sam_frames=3)[i] for i in range(2)])
    losses = memory_loss(model, batch, prompt="box", image_loss=True)
    assert {"mask_bce", "mask_dice", "object_score", "image_mask_bce", "image_mask_dice"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    graded = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert graded and graded <= set(plan.trainable)


def test_memory_stage_settings_are_checked(tmp_path) -> None:
    text = (
        "stage: {name: memory, memory_prompt: %s, memory_init: %s}\ndata: {sources: [d], sampling: %s}\n"
        "output_dir: out\n"
    )
    (tmp_path / "d").mkdir()
    path = tmp_path / "run.yaml"
    path.write_text(text % ("box", "reset", "clip"))
    config = load_train_config(path)
    assert (config.stage.memory_prompt, config.stage.memory_init, config.data.sampling) == ("box", "reset", "clip")
    for bad, message in (
        (("edge", "reset", "clip"), "memory_prompt"),
        (("mask", "zeros", "clip"), "memory_init"),
        (("mask", "keep", "consecutive"), "sampling"),
    ):
        path.write_text(text % bad)
        with pytest.raises(SparrowError, match=message):
            load_train_config(path)


def test_clip_sampling_gives_consecutive_frames_from_a_visible_key_frame() -> None:
    size, frames = 8, 10
    masks = [None] * 3 + [np.ones((size, size), dtype=bool)] * 7  # visible from frame 3 on
    track = ObjectTrack.from_masks(1, [m if m is not None else np.zeros((size, size), bool) for m in masks])
    record = VideoRecord(
        video_id="v",
        frames=[f"{i:05d}" for i in range(frames)],
        height=size,
        width=size,
        objects={1: track},
        expressions=[Expression(exp_id="0", text="it", obj_ids=[1])],
    )
    data = ClipDataset([record], num_vlm_frames=2, num_sam_frames=4, seed=3)
    keys = set()
    for epoch in range(12):
        data.set_epoch(epoch)
        _, sam = data.frame_indices(record, record.expressions[0], data._rng(0))
        assert sam == list(range(sam[0], sam[0] + 4)) and 3 <= sam[0] <= frames - 4
        keys.add(sam[0])
    assert len(keys) > 1
    short = ClipDataset([record], num_vlm_frames=2, num_sam_frames=9, seed=0)
    _, sam = short.frame_indices(record, record.expressions[0], short._rng(0))
    assert len(sam) == 9 and sam[0] >= 3 and sam[-1] == frames - 1 and sam == sorted(sam)
