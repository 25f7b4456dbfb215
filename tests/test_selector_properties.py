"""Selection labels on their thresholds and the selection rule for several embeddings, against plain definitions."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision.ops import box_convert, box_iou

from sparrow.model.proposer import Proposals, cxcywh_to_unit_xyxy, inverse_sigmoid, sine_embedding
from sparrow.model.selector import (
    Selector,
    SelectorOutput,
    refinement_loss,
    select_boxes,
    selection_labels,
    selection_loss,
)

SETTINGS = settings(
    max_examples=120, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


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
    assert selection_labels(props, TARGET, pos_iou=0.5, neg_iou=0.25, inclusive_pos=True).tolist() == [
        1,
        1,
        -1,
        -1,
        0,
        0,
    ]
    # equal thresholds: the inclusive positive takes the box on them, the strict rule leaves it ignored
    assert selection_labels(props, TARGET, pos_iou=0.375, neg_iou=0.375).tolist() == [1, 1, -1, 0, 0, 0]
    assert selection_labels(props, TARGET, pos_iou=0.375, neg_iou=0.375, inclusive_pos=True).tolist() == [
        1,
        1,
        1,
        0,
        0,
        0,
    ]
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
    props = Proposals(
        boxes=boxes, logits=torch.zeros(4), features=torch.eye(4) * 6, valid=torch.ones(4, dtype=torch.bool)
    )
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


# ---------------------------------------------------------------- the forward formula, dtypes and layouts


def _props(p: int = 5, feature_dim: int = 5, appearance_dim: int = 3, dtype=torch.float32) -> Proposals:
    g = torch.Generator().manual_seed(7)
    xy = torch.rand(p, 2, generator=g) * 0.6
    boxes = torch.cat([xy, xy + 0.1 + torch.rand(p, 2, generator=g) * 0.3], dim=-1)
    valid = torch.ones(p, dtype=torch.bool)
    valid[1] = False
    return Proposals(
        boxes=boxes[None].to(dtype),
        logits=torch.randn(1, p, generator=g).to(dtype),
        features=torch.randn(1, p, feature_dim, generator=g).to(dtype),
        valid=valid[None],
        appearance=torch.randn(1, p, appearance_dim, generator=g).to(dtype),
    )


def _trained_selector() -> Selector:
    torch.manual_seed(0)
    sel = Selector(embed_dim=6, feature_dim=5, key_dim=8, appearance_dim=3)
    with torch.no_grad():  # a refinement that is not the identity, and a LayerNorm that is not one
        sel.refine.layers[-1].weight.normal_(0, 0.3)
        sel.refine.layers[-1].bias.normal_(0, 0.3)
        sel.w_a[0].weight.uniform_(0.5, 1.5)
    return sel


def test_forward_equals_the_formula_with_appearance_geometry_and_refinement() -> None:
    sel, props = _trained_selector(), _props()
    emb = torch.randn(2, 6)
    out = sel(emb, props)
    boxes, feats, app = props.boxes[0], props.features[0], props.appearance[0]
    q = sel.w_q(emb)
    norm = (app - app.mean(-1, keepdim=True)) / (app.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    k = sel.w_k(feats) + sel.w_a[1](norm * sel.w_a[0].weight + sel.w_a[0].bias) + sel.w_geo(sine_embedding(boxes, 32))
    expected = q @ k.T / math.sqrt(8) + torch.log(torch.sigmoid(props.logits[0]).clamp(min=1e-6))
    expected[:, 1] = -math.inf
    torch.testing.assert_close(out.logits, expected)
    pair = torch.cat([q[:, None].expand(2, 5, 8), k[None].expand(2, 5, 8)], dim=-1)
    base = inverse_sigmoid(box_convert(boxes, "xyxy", "cxcywh"))
    torch.testing.assert_close(out.refined_boxes, cxcywh_to_unit_xyxy((base[None] + sel.refine(pair)).sigmoid()))
    assert (out.refined_boxes - boxes[None]).abs().max() > 1e-2  # the refinement moved the boxes


def test_layouts_and_input_dtypes_give_the_same_float32_output() -> None:
    sel, props = _trained_selector(), _props()
    emb = torch.randn(6)
    ref = sel(emb[None], props)
    one = sel(emb, props)  # a single [embed_dim] embedding is N = 1
    torch.testing.assert_close(one.logits, ref.logits)
    squeezed = Proposals(
        props.boxes[0], props.logits[0], props.features[0], props.valid[0], appearance=props.appearance[0]
    )
    torch.testing.assert_close(sel(emb, squeezed).logits, ref.logits)  # 2-D appearance too
    wide = _props(dtype=torch.float64)  # proposals in another dtype are cast to the selector's
    wide.valid = wide.valid.to(torch.uint8)  # and 0/1 integers count as a validity mask
    out = sel(emb, wide)
    assert out.logits.dtype == torch.float32 and out.refined_boxes.dtype == torch.float32
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(out.refined_boxes, ref.refined_boxes)


def test_architecture_is_the_one_the_bundled_weights_have() -> None:
    from safetensors.torch import load_file

    from sparrow.model.loading import BUNDLED_DIR

    weights = {
        k.removeprefix("selector."): v
        for k, v in load_file(str(BUNDLED_DIR / "model.safetensors")).items()
        if k.startswith("selector.")
    }
    sel = Selector(embed_dim=128, feature_dim=128, appearance_dim=176)  # key_dim defaults to the release's 256
    assert sel.key_dim == 256
    sel.load_state_dict(weights, strict=True)
    assert {k: tuple(v.shape) for k, v in sel.state_dict().items()} == {k: tuple(v.shape) for k, v in weights.items()}


@pytest.mark.parametrize(
    "boxes, logits, features, message",
    [
        (
            torch.zeros(2, 3, 4),
            torch.zeros(2, 3),
            torch.zeros(2, 3, 5),
            r"^Selector takes the proposals of ONE image, got a batch of 2$",
        ),
        (torch.zeros(3, 5), torch.zeros(3), torch.zeros(3, 5), r"boxes \(3, 5\), logits \(3,\), features \(3, 5\)$"),
        (torch.zeros(3, 4), torch.zeros(2), torch.zeros(3, 5), r"boxes \(3, 4\), logits \(2,\), features \(3, 5\)$"),
        (torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, 5), r"boxes \(3, 4\), logits \(3,\), features \(2, 5\)$"),
        (torch.zeros(4), torch.zeros(4), torch.zeros(4, 5), r"boxes \(4,\), logits \(4,\), features \(4, 5\)$"),
    ],
)
def test_inconsistent_proposals_are_named(boxes, logits, features, message) -> None:
    sel = Selector(embed_dim=6, feature_dim=5, key_dim=8)
    valid = torch.ones(logits.shape, dtype=torch.bool)
    with pytest.raises(ValueError, match=message):
        sel(torch.randn(1, 6), Proposals(boxes, logits, features, valid))


def test_bad_embeddings_and_missing_appearance_are_named() -> None:
    sel = _trained_selector()
    with pytest.raises(ValueError, match=r"^Selector expects \[N, embed_dim\] box embeddings, got \(1, 2, 6\)$"):
        sel(torch.randn(1, 2, 6), _props())
    props = _props()
    props.appearance = None
    with pytest.raises(ValueError, match=r"^Selector uses proposal appearance, but the proposals carry none \(Sparrow"):
        sel(torch.randn(1, 6), props)


def test_selection_rule_thresholds_by_default_and_on_the_boundary() -> None:
    out = SelectorOutput(torch.tensor([[0.0, -0.3, -0.5, 2.0]]), torch.rand(1, 4, 4))
    assert select_boxes(out, max_boxes=None)[0][0].tolist() == [3, 0, 1]  # default 0.4: sigmoid(-0.5) = 0.38 fails
    assert select_boxes(out, threshold=0.5, max_boxes=None)[0][0].tolist() == [3, 0]  # sigmoid(0) = 0.5 passes 0.5


def test_losses_take_integer_labels_and_any_target_dtype() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    as_int = selection_loss(logits, torch.tensor([1, 0, -1]))
    assert as_int.dtype == torch.float32
    torch.testing.assert_close(as_int, selection_loss(logits, torch.tensor([1.0, 0.0, -1.0])))
    refined = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.7, 0.7]])
    labels = torch.tensor([1.0, 0.0])
    loss = refinement_loss(refined, labels, torch.tensor([0.3, 0.3, 0.7, 0.7], dtype=torch.float64))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(refinement_loss(refined, labels, torch.tensor([0.3, 0.3, 0.7, 0.7])).item())


@pytest.mark.parametrize(
    "refined, labels, target, shapes",
    [
        (torch.zeros(4), torch.zeros(1), torch.zeros(4), "refined (4,), labels (1,), target (4,)"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 2), torch.zeros(2, 4), "refined (2, 3, 4), labels (2, 2), target (2, 4)"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 3), torch.zeros(3, 4), "refined (2, 3, 4), labels (2, 3), target (3, 4)"),
    ],
)
def test_refinement_loss_names_disagreeing_shapes(refined, labels, target, shapes) -> None:
    with pytest.raises(ValueError, match=rf"^refinement_loss: shapes {re.escape(shapes)} do not agree$"):
        refinement_loss(refined, labels, target)
