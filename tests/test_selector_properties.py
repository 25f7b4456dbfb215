"""Selection labels on their thresholds and the selection rule for several embeddings, against plain definitions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from sparrow.model.proposer import Proposals
from sparrow.model.selector import Selector, SelectorOutput, select_boxes, selection_labels

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def reference_labels(iou: list[float], pos: float, neg: float, inclusive: bool) -> list[float]:
    """The rule as the docstring states it: positive ``> pos`` (``>=`` if inclusive), negative ``< neg``."""
    return [1.0 if (v >= pos if inclusive else v > pos) else 0.0 if v < neg else -1.0 for v in iou]


# target [0, 0, .5, .5] (area 1/4) and boxes [0, 0, .5, h] inside it: IoU = 2h exactly in binary floats
TARGET = torch.tensor([0.0, 0.0, 0.5, 0.5])
HEIGHTS = [0.5, 0.25, 0.1875, 0.125, 0.0625, 0.03125]
IOUS = [1.0, 0.5, 0.375, 0.25, 0.125, 0.0625]


def test_boxes_exactly_on_each_threshold() -> None:
    props = torch.tensor([[0.0, 0.0, 0.5, h] for h in HEIGHTS])
    assert box_iou(props, TARGET[None])[:, 0].tolist() == IOUS
    # a box on the negative threshold is ignored (negative is strictly below), one on the positive threshold too
    assert selection_labels(props, TARGET, pos_iou=0.5, neg_iou=0.25).tolist() == [1, -1, -1, -1, 0, 0]
    assert selection_labels(props, TARGET, pos_iou=0.5, neg_iou=0.25, inclusive_pos=True).tolist() == [1, 1, -1, -1, 0, 0]
    # equal thresholds: the inclusive positive takes the box on them, the strict rule leaves it ignored
    assert selection_labels(props, TARGET, pos_iou=0.375, neg_iou=0.375).tolist() == [1, 1, -1, 0, 0, 0]
    assert selection_labels(props, TARGET, pos_iou=0.375, neg_iou=0.375, inclusive_pos=True).tolist() == [1, 1, 1, 0, 0, 0]
    assert selection_labels(props, TARGET, pos_iou=0.0625, neg_iou=0.0625).tolist() == [1, 1, 1, 1, 1, -1]


@st.composite
def boxes_and_thresholds(draw):
    """Random boxes on a 1/16 grid plus thresholds taken from their own IoUs (so some boxes sit on them)."""
    n = draw(st.integers(1, 8))
    coords = []
    for _ in range(n + 1):
        x0, y0 = draw(st.integers(0, 15)), draw(st.integers(0, 15))
        x1, y1 = draw(st.integers(x0 + 1, 16)), draw(st.integers(y0 + 1, 16))
        coords.append([x0 / 16, y0 / 16, x1 / 16, y1 / 16])
    boxes = torch.tensor(coords[:n])
    target = torch.tensor(coords[n])
    iou = box_iou(boxes, target[None])[:, 0].tolist()
    candidates = sorted(set(iou) | {0.0, 0.2, 0.3, 0.5, 1.0})
    neg = draw(st.sampled_from(candidates))
    pos = draw(st.sampled_from([c for c in candidates if c >= neg]))
    return boxes, target, iou, pos, neg, draw(st.booleans())


@SETTINGS
@given(boxes_and_thresholds())
def test_labels_equal_the_rule_for_boxes_on_and_off_the_thresholds(case) -> None:
    boxes, target, iou, pos, neg, inclusive = case
    got = selection_labels(boxes, target, pos_iou=pos, neg_iou=neg, inclusive_pos=inclusive).tolist()
    assert got == reference_labels(iou, pos, neg, inclusive)


def reference_select(logits: list[list[float]], threshold: float, max_boxes: int | None) -> list[list[int]]:
    """Per row: valid entries with sigmoid >= threshold by decreasing logit (ties: lower index first), else the
    best valid one; capped at ``max_boxes``."""
    out = []
    for row in logits:
        valid = [j for j, v in enumerate(row) if v > -math.inf]
        ranked = sorted(valid, key=lambda j: (-row[j], j))
        passing = [j for j in ranked if 1 / (1 + math.exp(-row[j])) >= threshold]
        chosen = passing or ranked[:1]
        out.append(chosen if max_boxes is None else chosen[:max_boxes])
    return out


@SETTINGS
@given(
    st.integers(1, 5),
    st.integers(1, 7),
    st.integers(0, 2**31 - 1),
    st.sampled_from([0.0, 0.3, 0.4, 0.9]),
    st.sampled_from([None, 1, 2]),
)
def test_every_embedding_selects_by_its_own_row(n, p, seed, threshold, max_boxes) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randint(-4, 5, (n, p), generator=g).float() / 2  # ties happen
    logits[torch.rand(n, p, generator=g) < 0.2] = -math.inf
    refined = torch.rand(n, p, 4, generator=g)  # every embedding has its own refined boxes
    indices, boxes = select_boxes(SelectorOutput(logits, refined), threshold=threshold, max_boxes=max_boxes)
    expected = reference_select(logits.tolist(), threshold, max_boxes)
    assert [i.tolist() for i in indices] == expected
    for i in range(n):
        assert torch.equal(boxes[i], refined[i, expected[i]]), i


def test_several_embeddings_through_a_selector_with_trained_refinement() -> None:
    """Three embeddings that each prefer another proposal get their own index and their own refined box."""
    torch.manual_seed(0)
    sel = Selector(embed_dim=4, feature_dim=4, key_dim=4)
    with torch.no_grad():
        for lin in (sel.w_q, sel.w_k):
            lin.weight.copy_(torch.eye(4))
            lin.bias.zero_()
        sel.refine.layers[-1].weight.normal_(0, 0.5)  # a refinement that depends on the embedding
    boxes = torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.5, 0.1, 0.8, 0.4], [0.2, 0.5, 0.6, 0.9], [0.6, 0.6, 0.9, 0.9]])
    props = Proposals(boxes=boxes, logits=torch.zeros(4), features=torch.eye(4) * 6, valid=torch.ones(4, dtype=torch.bool))
    emb = torch.eye(4)[[2, 0, 3]] * 6
    out = sel(emb, props)
    indices, chosen = select_boxes(out, threshold=0.4, max_boxes=1)
    assert [i.tolist() for i in indices] == [[2], [0], [3]]
    for i, j in enumerate([2, 0, 3]):
        torch.testing.assert_close(chosen[i][0], out.refined_boxes[i, j])
        single = sel(emb[i : i + 1], props)  # a row does not depend on the other embeddings
        torch.testing.assert_close(single.logits[0], out.logits[i])
        torch.testing.assert_close(single.refined_boxes[0], out.refined_boxes[i])
    assert not torch.allclose(out.refined_boxes[0, 2], out.refined_boxes[1, 2])  # per-embedding refinement
    assert not torch.allclose(chosen[1][0], out.refined_boxes[0, 0])


def test_labels_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[P, 4\]"):
        selection_labels(torch.zeros(3, 5), TARGET)
    with pytest.raises(ValueError, match=r"\[P, 4\]"):
        selection_labels(torch.zeros(3, 4), torch.zeros(2, 4))
