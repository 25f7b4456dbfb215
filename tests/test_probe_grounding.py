"""Grounding diagnostics (issue 10 item 6): labels, probes, feature extraction and the benchmark end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sparrow.data.synthref.generate import SynthConfig, generate_split
from sparrow.diagnostics.extract import extract_clip, pool_tokens
from sparrow.diagnostics.grounding import query_sensitivity
from sparrow.diagnostics.labels import bag_of_words, object_labels, quadrant, vocabulary
from sparrow.diagnostics.probes import SelectionSet, linear_probe_accuracy, listwise_loss, selector_logits, top1_hits
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import build_tiny, save_pretrained
from sparrow.model.proposer import Proposals
from sparrow.model.selector import Selector

ROOT = Path(__file__).resolve().parent.parent


def test_labels_and_words() -> None:
    assert quadrant((10, 10), 128, 128) == "top-left" and quadrant((100, 90), 128, 128) == "bottom-right"
    assert quadrant((64, 10), 128, 128) is None  # on the middle line: a viewer could not say
    vocab = vocabulary(["the red circle", "the zig-zag star"])
    assert list(vocab) == ["circle", "red", "star", "the", "zig-zag"]
    bow = bag_of_words(["the red red circle", "unknown"], vocab)
    assert np.allclose(bow[0], np.array([1, 2, 0, 1, 0]) / np.sqrt(6)) and not bow[1].any()


def test_selector_logits_equal_the_selector_frame_by_frame() -> None:
    torch.manual_seed(0)
    sel = Selector(embed_dim=16, feature_dim=8, key_dim=32, appearance_dim=12)
    n, k = 3, 5
    xy = torch.rand(n, k, 2) * 0.5
    data = SelectionSet(
        torch.randn(n, 16),
        torch.cat([xy, xy + 0.3], -1),
        torch.randn(n, k),
        torch.randn(n, k, 8),
        torch.randn(n, k, 12),
        torch.rand(n, k) > 0.2,
        torch.zeros(n, k),
        torch.zeros(n, k, dtype=torch.bool),
    )
    batched = selector_logits(sel, data)
    for i in range(n):
        one = Proposals(
            data.boxes[i : i + 1],
            data.logits[i : i + 1],
            data.features[i : i + 1],
            data.valid[i : i + 1],
            appearance=data.appearance[i : i + 1],
        )
        assert torch.allclose(batched[i], sel(data.queries[i], one).logits[0], atol=1e-5)
    hits = torch.zeros(n, k, dtype=torch.bool)
    hits[0, 2] = True
    assert top1_hits(torch.eye(k)[[2, 0, 1]], hits).tolist() == [True, False, False]


def test_probe_losses_and_linear_probe() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    assert torch.allclose(listwise_loss(logits, torch.tensor([[False, True, True]])), -torch.log(torch.tensor(0.5)))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 3, generator=gen)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # linearly separable, 4 classes
    assert linear_probe_accuracy(x[:300], y[:300], x[300:], y[300:]) > 0.9
    noise = torch.randint(0, 4, (600,), generator=gen)
    assert linear_probe_accuracy(x[:300], noise[:300], x[300:], noise[300:]) < 0.4


def test_pool_tokens_weights_cells_by_the_objects_pixels() -> None:
    tokens = torch.arange(2 * 2 * 2, dtype=torch.float32).reshape(2, 2, 2, 1)  # gt=2, 2x2 cells, d=1
    masks = np.zeros((3, 8, 8), dtype=bool)  # 3 frames: group 0 = frames 0-1, group 1 = frame 2 (+ padded copy)
    masks[0, :4, :4] = True  # cell (0, 0)
    masks[1, :4, 4:] = True  # cell (0, 1), same area
    pooled, present = pool_tokens(tokens, masks, temporal=2)
    assert present.tolist() == [True, False] and pooled[0, 0] == pytest.approx(0.5) and pooled[1, 0] == 0


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_split(out, videos=4, seed=0, split="test", config=SynthConfig(size=64, num_frames=8), progress=False)
    return out / "test"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    model = build_tiny(
        seed=0, config=SparrowConfig(vlm_frames=4, vlm_max_frame_pixels=56 * 56, proposer_queries=8), sam_image_size=64
    )
    path = tmp_path_factory.mktemp("m") / "model"
    save_pretrained(model, path)
    return path


def test_extract_clip_shapes_and_sensitivity(split, model_dir) -> None:
    from sparrow.data.mevis import read_mevis
    from sparrow.model.loading import from_pretrained

    model = from_pretrained(model_dir)
    record = read_mevis(split)[0]
    clip = extract_clip(model, record)
    e, o = len(record.expressions), len(record.objects)
    assert clip.box.shape == (e, 128) and clip.seg.shape == (e, 128) and clip.box_state.shape == (e, 64)
    assert clip.vision_tokens.shape == (2, 2, 2, 64) and clip.lm_tokens.shape == (2, 2, 2, 64)  # 4 frames, 56 px
    assert clip.object_masks.shape == (o, 4, 64, 64) and clip.sam_objects.shape == (o, 4, 128 + 32 + 16)
    assert clip.proposals.boxes.shape == (4, 8, 4) and clip.proposals.appearance is not None
    assert set(object_labels(record)) == set(clip.obj_ids)
    visible = np.stack([record.target_masks(x, clip.frame_ids).any((1, 2)) for x in record.expressions])
    assert clip.seg_iou.shape == (e, 4) and np.array_equal(~np.isnan(clip.seg_iou), visible)
    assert np.isnan(clip.identity_iou).all()  # this model has no identity prompts
    model.identity_prompts = torch.nn.Embedding(36, 128)
    try:
        with_prompts = extract_clip(model, record)
    finally:
        model.identity_prompts = None
    single = [
        len({(record.objects[o].attributes["colour"], record.objects[o].attributes["shape"]) for o in x.obj_ids}) == 1
        for x in record.expressions
    ]
    assert np.array_equal(~np.isnan(with_prompts.identity_iou), visible & np.array(single)[:, None])
    assert ((with_prompts.identity_iou >= 0) | np.isnan(with_prompts.identity_iou)).all()
    twin = extract_clip(model, record)
    twin.box, twin.seg = clip.box[:1].repeat(2, 1), clip.seg[:1].repeat(2, 1)  # the same query twice
    twin.box_state, twin.seg_state = clip.box_state[:1].repeat(2, 1), clip.seg_state[:1].repeat(2, 1)
    assert query_sensitivity([twin]) == {"box": 0.0, "seg": 0.0, "box_state": 0.0, "seg_state": 0.0}
    assert query_sensitivity([clip])["box"] > 0


def test_benchmark_end_to_end(split, model_dir, tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("probe_grounding", ROOT / "benchmarks" / "probe_grounding.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "figures.json"
    assert (
        bench.main(
            ["--model", str(model_dir), "--data", str(split), "--videos", "4", "--epochs", "1", "--json", str(out)]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "(a) query sensitivity" in text and "objectness argmax" in text and "| sam2 |" in text
    figures = json.loads(out.read_text())
    top1 = figures["selection_top1"]
    assert 0 <= top1["model selector, [BOX]"]["all"] <= top1["oracle (a proposal hits)"]["all"] <= 1
    assert set(figures["attribute_probes"]["sam2"]) == {"colour", "shape", "identity", "quadrant", "direction"}
    assert 0 <= figures["seg_decoding"]["[SEG] only: mean IoU"]["all"] <= 1
    assert bench.main(["--data", str(tmp_path / "missing"), "--model", str(model_dir)]) == 2
    assert bench.main(["--data", str(split), "--model", str(model_dir), "--answer", "Sure."]) == 2
