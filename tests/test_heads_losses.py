"""L->V heads, mask losses, the weighted total and Hungarian matching, checked against hand computations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sparrow.model.heads import LanguageToVisionHead
from sparrow.model.losses import LossWeights, mask_bce_loss, mask_dice_loss, weighted_total
from sparrow.model.matching import box_match_cost, focal_class_cost, hungarian_match


def _bce(x: float, y: float) -> float:
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


# ---------------------------------------------------------------- heads


def test_head_is_linear_relu_linear():
    torch.manual_seed(0)
    head = LanguageToVisionHead(8, 4)
    h = torch.randn(2, 3, 8)
    out = head(h)
    assert out.shape == (2, 3, 4)
    expected = torch.relu(h @ head.fc1.weight.T + head.fc1.bias) @ head.fc2.weight.T + head.fc2.bias
    torch.testing.assert_close(out, expected)
    assert head.fc1.weight.shape == (8, 8)
    with pytest.raises(ValueError, match="last dim 8"):
        head(torch.randn(2, 7))


# ---------------------------------------------------------------- mask BCE


def test_mask_bce_matches_hand_computation_and_skips_padded_slots():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 0.0]], [[9.0, 9.0], [9.0, 9.0]]])
    targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    first = (_bce(0, 1) + _bce(2, 0) + _bce(-1, 0) + _bce(0, 1)) / 4  # 0.95662...
    second = _bce(9, 0)
    assert mask_bce_loss(logits[:1], targets[:1]).item() == pytest.approx(first, rel=1e-6)
    assert mask_bce_loss(logits, targets).item() == pytest.approx((first + second) / 2, rel=1e-6)
    valid = torch.tensor([True, False])
    assert mask_bce_loss(logits, targets, valid).item() == pytest.approx(first, rel=1e-6)
    # ignored pixels add 0 but still count in H*W
    ignore = torch.zeros_like(targets, dtype=torch.bool)
    ignore[0, 0, 1] = True
    expected = (_bce(0, 1) + _bce(-1, 0) + _bce(0, 1)) / 4
    assert mask_bce_loss(logits[:1], targets[:1], ignore=ignore[:1]).item() == pytest.approx(expected, rel=1e-6)


def test_mask_losses_without_valid_slot_are_zero_and_differentiable():
    logits = torch.randn(2, 3, 3, requires_grad=True)
    targets = torch.ones(2, 3, 3)
    valid = torch.tensor([False, False])
    for fn in (mask_bce_loss, mask_dice_loss):
        loss = fn(logits, targets, valid)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.equal(logits.grad, torch.zeros_like(logits))
        logits.grad = None


def test_mask_loss_shape_errors():
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        mask_bce_loss(torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="valid"):
        mask_dice_loss(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4), torch.ones(3, dtype=torch.bool))


# ---------------------------------------------------------------- Dice


def test_mask_dice_matches_hand_computation():
    logits = torch.zeros(1, 2, 2)  # p = 0.5 everywhere
    targets = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    # sum(p*y) = 0.5, sum(p) = 2, sum(y) = 1
    expected = 1 - (2 * 0.5 / 1000 + 1e-6) / (2 / 1000 + 1 / 1000 + 1e-6)
    assert mask_dice_loss(logits, targets).item() == pytest.approx(expected, rel=1e-5)
    # a second mask, all wrong: p ~ 1 where y = 0 -> loss ~ 1; the mean covers both
    logits2 = torch.cat([logits, torch.full((1, 2, 2), 30.0)])
    targets2 = torch.cat([targets, torch.zeros(1, 2, 2)])
    wrong = 1 - (0 + 1e-6) / (4 / 1000 + 1e-6)
    assert mask_dice_loss(logits2, targets2).item() == pytest.approx((expected + wrong) / 2, rel=1e-5)


def test_mask_dice_both_empty_and_all_correct_are_zero():
    empty = mask_dice_loss(torch.full((1, 4, 4), -100.0), torch.zeros(1, 4, 4))
    assert empty.item() == pytest.approx(0.0, abs=1e-6)
    targets = torch.zeros(2, 4, 4)
    targets[0, 1:3, 1:3] = 1
    targets[1, 0, :] = 1
    logits = torch.where(targets > 0, 30.0, -30.0)
    assert mask_dice_loss(logits, targets).item() == pytest.approx(0.0, abs=1e-6)
    # and a prediction on an empty target is penalised almost fully
    assert mask_dice_loss(torch.full((1, 4, 4), 30.0), torch.zeros(1, 4, 4)).item() > 0.99


# ---------------------------------------------------------------- weighted total


def test_weighted_total_uses_weights_and_skips_other_keys():
    losses = {
        k: torch.tensor(v)
        for k, v in {
            "ce": 1.0,
            "mask_bce": 2.0,
            "mask_dice": 3.0,
            "selection": 4.0,
            "box": 5.0,
            "logged": 100.0,
        }.items()
    }
    w = LossWeights()
    assert (w.ce, w.mask_bce, w.mask_dice, w.selection, w.box) == (1.0, 2.0, 0.5, 1.0, 2.0)
    assert weighted_total(losses, w).item() == pytest.approx(1 * 1 + 2 * 2 + 0.5 * 3 + 1 * 4 + 2 * 5)
    partial = {"ce": torch.tensor(1.5), "mask_dice": torch.tensor(2.0)}
    assert weighted_total(partial, LossWeights(ce=2.0)).item() == pytest.approx(2 * 1.5 + 0.5 * 2)
    assert weighted_total({}, w).item() == 0.0


# ---------------------------------------------------------------- Hungarian matching


def test_hungarian_known_optimum_where_greedy_differs():
    cost = torch.tensor([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    qi, ti = hungarian_match(cost)
    assert qi.tolist() == [0, 1, 2] and ti.tolist() == [1, 0, 2]
    assert cost[qi, ti].sum().item() == 5.0
    # greedy (cheapest entry first) takes (1,1)=0, then (2,2)=2, then (0,0)=4: total 6
    c, used_q, used_t, greedy = cost.clone(), set(), set(), 0.0
    for _ in range(3):
        flat = [(c[q, t].item(), q, t) for q in range(3) for t in range(3) if q not in used_q and t not in used_t]
        v, q, t = min(flat)
        greedy += v
        used_q.add(q)
        used_t.add(t)
    assert greedy == 6.0 > cost[qi, ti].sum().item()


def test_hungarian_matches_brute_force_on_rectangular_costs():
    g = torch.Generator().manual_seed(1)
    for q, n in [(5, 5), (6, 3), (4, 4), (7, 2)]:
        cost = torch.rand(q, n, generator=g)
        qi, ti = hungarian_match(cost)
        assert len(qi) == min(q, n) and len(set(qi.tolist())) == len(qi) and sorted(ti.tolist()) == list(range(n))
        best = min(sum(cost[p[j], j].item() for j in range(n)) for p in itertools.permutations(range(q), n))
        assert cost[qi, ti].sum().item() == pytest.approx(best, abs=1e-6)


def test_hungarian_empty_and_bad_input():
    qi, ti = hungarian_match(torch.zeros(4, 0))
    assert qi.numel() == 0 and ti.numel() == 0 and qi.dtype == torch.int64
    with pytest.raises(ValueError, match="NaN"):
        hungarian_match(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"\[Q, N\]"):
        hungarian_match(torch.zeros(3))


def test_box_match_cost_terms():
    pred = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.7, 0.7]])
    tgt = torch.tensor([[0.3, 0.3, 0.7, 0.7]])
    logits = torch.tensor([0.0, 0.0])
    l1 = box_match_cost(pred, logits, tgt, w_class=0.0, w_l1=1.0, w_giou=0.0)
    torch.testing.assert_close(l1, torch.tensor([[0.8], [0.0]]))
    giou = box_match_cost(pred, logits, tgt, w_class=0.0, w_l1=0.0, w_giou=1.0)
    # IoU = 0.04 / 0.28 = 1/7, enclosing area 0.36: GIoU = 1/7 - 0.08/0.36
    torch.testing.assert_close(giou, torch.tensor([[-(1 / 7 - 0.08 / 0.36)], [-1.0]]))
    # the class cost prefers confident queries and is the focal form
    cls = focal_class_cost(torch.tensor([-2.0, 0.0, 3.0]))
    assert cls[2] < cls[1] < cls[0]
    p = 1 / (1 + math.exp(-3.0))
    assert cls[2].item() == pytest.approx(0.25 * (1 - p) ** 2 * -math.log(p) - 0.75 * p**2 * -math.log(1 - p), rel=1e-4)
    full = box_match_cost(pred, logits, tgt)
    torch.testing.assert_close(full, 2 * focal_class_cost(logits)[:, None] + 5 * l1 + 2 * giou)
