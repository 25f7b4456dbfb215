"""SAM2 backbone: tiny config, offline loading errors, preprocessing parity with the HF image processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparrow.errors import SparrowError
from sparrow.model.sam2_backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Sam2Preprocessor,
    build_sam2,
    load_sam2,
    tiny_sam2_config,
)

ONE_LEVEL = 1.0 / 255.0 / min(IMAGENET_STD)  # one uint8 step after normalisation


def test_tiny_config_builds_and_runs_the_encoder() -> None:
    cfg = tiny_sam2_config(64)
    assert cfg.memory_encoder_output_channels == 64 and cfg.vision_config.fpn_hidden_size == 128
    torch.manual_seed(0)
    sam = build_sam2(cfg)
    assert not sam.training
    assert 1_000_000 < sum(p.numel() for p in sam.parameters()) < 2_000_000
    with torch.no_grad():
        maps = sam.get_image_features(torch.zeros(1, 3, 64, 64), return_dict=True).fpn_hidden_states
    assert [tuple(m.shape) for m in maps] == [(256, 1, 16), (64, 1, 32), (16, 1, 128)]


def test_tiny_config_rejects_bad_size() -> None:
    with pytest.raises(SparrowError, match="multiple of 64"):
        tiny_sam2_config(100)


def test_load_missing_checkpoint_names_the_download() -> None:
    with pytest.raises(SparrowError) as info:
        load_sam2("facebook/sam2.1-hiera-base-plus-not-here")
    text = str(info.value)
    assert "\n" not in text and "hf download facebook/sam2.1-hiera-base-plus-not-here" in text


def test_load_folder_without_weights(tmp_path) -> None:
    with pytest.raises(SparrowError, match="no loadable SAM2 checkpoint") as info:
        load_sam2(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_save_and_load_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    sam = build_sam2(tiny_sam2_config(64))
    sam.save_pretrained(tmp_path)
    loaded = load_sam2(str(tmp_path))
    assert not loaded.training
    ref, got = sam.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    # the box-mask-prompt switch travels with the checkpoint; a config without it (real SAM2) keeps it off
    assert sam.config.sparrow_box_mask_prompt is True and loaded.config.sparrow_box_mask_prompt is True


def test_preprocessor_matches_hf_image_processor() -> None:
    pytest.importorskip("torchvision")
    from transformers import Sam2ImageProcessor

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 90, 160, 3), dtype=np.uint8)
    frames[:, 20:60, 30:90] = (200, 30, 30)  # some flat regions and edges, like real frames
    for size in (64, 256):
        hf = Sam2ImageProcessor(size={"height": size, "width": size})
        ref = hf(images=list(frames), return_tensors="pt").pixel_values
        got = Sam2Preprocessor(size)(frames)
        assert got.shape == ref.shape == (2, 3, size, size) and got.dtype == torch.float32
        diff = (got - ref).abs()
        # HF resizes uint8 with torchvision's fixed-point kernel: at most one grey level apart, rarely
        assert diff.max().item() <= ONE_LEVEL + 1e-5
        assert diff.mean().item() < 0.2 * ONE_LEVEL


def test_preprocessor_values_and_inputs() -> None:
    pre = Sam2Preprocessor(32)
    frame = np.full((32, 32, 3), 255, dtype=np.uint8)
    out = pre(frame)  # a single frame, no resize needed
    expected = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out[0, :, 5, 7], expected)
    clip = np.random.default_rng(1).integers(0, 256, size=(3, 40, 50, 3), dtype=np.uint8)
    assert torch.equal(pre(clip), pre(torch.from_numpy(clip)))
    with pytest.raises(SparrowError, match="uint8"):
        pre(clip.astype(np.float32))
    with pytest.raises(SparrowError, match="shape"):
        pre(clip[..., :2])


def test_load_missing_local_folder(tmp_path) -> None:
    with pytest.raises(SparrowError, match="no such SAM2 checkpoint folder"):
        load_sam2(tmp_path / "absent")
