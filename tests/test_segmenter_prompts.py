"""The segmenter stage's prompt boxes: noise (``stage.box_jitter``) that is seeded, bounded and valid; and the
benchmark that scores box-prompted masks under that noise."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from sparrow.data.synthref.generate import SynthConfig, generate_split
from sparrow.errors import SparrowError
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import build_tiny, save_pretrained
from sparrow.train.config import load_train_config
from sparrow.train.objectives import jitter_boxes


def _boxes() -> tuple[torch.Tensor, torch.Tensor]:
    boxes = torch.tensor([[0.2, 0.2, 0.4, 0.6], [0.0, 0.5, 0.1, 1.0], [0.5, 0.5, 0.9, 0.7]])
    return boxes, torch.tensor([0, 0, 1])


def test_jitter_boxes_is_seeded_bounded_and_valid() -> None:
    boxes, rows = _boxes()
    assert torch.equal(jitter_boxes(boxes, rows, 0.0, [1, 2]), boxes)
    a = jitter_boxes(boxes, rows, 0.1, [1, 2])
    assert torch.equal(a, jitter_boxes(boxes, rows, 0.1, [1, 2]))  # same seeds, same noise
    assert not torch.equal(a, jitter_boxes(boxes, rows, 0.1, [1, 3]))
    assert torch.equal(a[:2], jitter_boxes(boxes, rows, 0.1, [1, 3])[:2])  # a sample's noise is its own seed's
    side = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    assert bool(((a - boxes).abs() <= 0.2 * side + 1e-6).all())  # clipped at two std of 10 % of the side
    assert bool((a >= 0).all() and (a <= 1).all())
    assert bool((a[:, 2:] > a[:, :2]).all())
    big = jitter_boxes(boxes, rows, 0.5, [4, 5])
    assert bool((big[:, 2:] > big[:, :2]).all() and (big >= 0).all() and (big <= 1).all())


def test_box_jitter_is_checked(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = tmp_path / "c.yaml"
    path.write_text("stage: {name: segmenter, box_jitter: 0.7}\ndata: {sources: [{path: data}]}\noutput_dir: out\n")
    with pytest.raises(SparrowError, match=r"box_jitter must be in \[0, 0.5\]"):
        load_train_config(path)
    path.write_text("stage: {name: segmenter, box_jitter: 0.1}\ndata: {sources: [{path: data}]}\noutput_dir: out\n")
    assert load_train_config(path).stage.box_jitter == 0.1


def test_box_prompt_benchmark_end_to_end(tmp_path, capsys) -> None:
    """``benchmarks/probe_box_prompts.py`` on a tiny model and 2 generated videos: one line per noise level with
    figures in range; a missing model folder exits with 2."""
    generate_split(tmp_path, videos=2, seed=0, split="test", config=SynthConfig(size=64, num_frames=8), progress=False)
    config = SparrowConfig(vlm_frames=4, vlm_max_frame_pixels=56 * 56, proposer_queries=8)
    save_pretrained(build_tiny(seed=0, config=config, sam_image_size=64), tmp_path / "model")
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "probe_box_prompts.py"
    spec = importlib.util.spec_from_file_location("probe_box_prompts", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--data", str(tmp_path / "test"), "--videos", "2", "--noise", "0", "0.2"]
    assert bench.main(["--model", str(tmp_path / "model"), *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("noise 0.00: mean IoU") and lines[2].startswith("noise 0.20: mean IoU")
    figures = [float(word) for line in lines[1:] for word in line.split()[4::2]]
    assert len(figures) == 6 and all(0.0 <= f <= 1.0 for f in figures)
    assert bench.main(["--model", str(tmp_path / "missing"), *args]) == 2
