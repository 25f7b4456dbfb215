"""The segmenter stage's prompt boxes: noise (``stage.box_jitter``) that is seeded, bounded and valid."""

from __future__ import annotations

import pytest
import torch

from sparrow.errors import SparrowError
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
