"""[BOX]-conditioned selector: scores, selection rule, labels, losses, refinement, gradients, overfit."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou

from sparrow.model.heads import LanguageToVisionHead
from sparrow.model.proposer import Proposals
from sparrow.model.selector import (
    Selector,
    SelectorOutput,
    ranking_loss,
    refinement_loss,
    select_boxes,
    selection_labels,
    selection_loss,
)


def _proposals(p: int, d: int, seed: int = 0, batch_dim: bool = True) -> Proposals:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(p, 2, generator=g) * 0.6
    wh = 0.1 + torch.rand(p, 2, generator=g) * 0.3
    boxes = torch.cat([xy, xy + wh], dim=-1)
    props = Proposals(
        boxes=boxes,
        logits=torch.randn(p, generator=g),
        features=torch.randn(p, d, generator=g),
        valid=torch.ones(p, dtype=torch.bool),
    )
    if batch_dim:
        props = Proposals(props.boxes[None], props.logits[None], props.features[None], props.valid[None])
    return props


# ---------------------------------------------------------------- forward


def test_logits_formula_invalid_and_both_proposal_layouts():
    torch.manual_seed(0)
    sel = Selector(embed_dim=12, feature_dim=10, key_dim=8)
    props = _proposals(5, 10)
    props.valid[0, 2] = False
    props.logits[0, 4] = -50.0  # objectness below 1e-6 is floored at log(1e-6)
    emb = torch.randn(3, 12)
    out = sel(emb, props)
    assert out.logits.shape == (3, 5) and out.refined_boxes.shape == (3, 5, 4)
    q, k = sel.w_q(emb), sel.w_k(props.features[0])
    obj = torch.log(torch.clamp(torch.sigmoid(props.logits[0]), min=1e-6))
    expected = q @ k.T / math.sqrt(8) + obj
    keep = [0, 1, 3, 4]
    torch.testing.assert_close(out.logits[:, keep], expected[:, keep])
    assert torch.isneginf(out.logits[:, 2]).all()
    squeezed = Proposals(props.boxes[0], props.logits[0], props.features[0], props.valid[0])
    torch.testing.assert_close(sel(emb, squeezed).logits, out.logits)
    with pytest.raises(ValueError, match="ONE image"):
        sel(
            emb,
            Proposals(
                props.boxes.repeat(2, 1, 1),
                props.logits.repeat(2, 1),
                props.features.repeat(2, 1, 1),
                props.valid.repeat(2, 1),
            ),
        )


def test_refinement_starts_as_identity():
    torch.manual_seed(0)
    sel = Selector(embed_dim=6, feature_dim=10, key_dim=8)
    props = _proposals(7, 10)
    props.boxes[0, 0] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # full image, edges included
    out = sel(torch.randn(4, 6), props)
    torch.testing.assert_close(out.refined_boxes, props.boxes[0][None].expand(4, -1, -1), atol=2e-5, rtol=0)


# ---------------------------------------------------------------- selection rule


def _output(logits: list[list[float]]) -> SelectorOutput:
    lg = torch.tensor(logits)
    boxes = torch.arange(lg.numel() * 4, dtype=torch.float32).reshape(*lg.shape, 4)
    return SelectorOutput(logits=lg, refined_boxes=boxes)


def test_select_threshold_sorts_caps_and_falls_back():
    inf = float("inf")
    out = _output(
        [
            [0.5, 2.0, -3.0, 1.0, -inf],  # sigmoid: .62 .88 .05 .73 -> three pass
            [-2.0, -1.0, -5.0, -0.5, -inf],  # none passes 0.4 -> argmax (index 3)
            [-inf, -inf, -inf, -inf, -inf],  # nothing valid -> nothing
        ]
    )
    idx, boxes = select_boxes(out, threshold=0.4, max_boxes=None)
    assert [i.tolist() for i in idx] == [[1, 3, 0], [3], []]
    torch.testing.assert_close(boxes[0], out.refined_boxes[0, [1, 3, 0]])
    assert boxes[2].shape == (0, 4)
    idx, _ = select_boxes(out, threshold=0.4, max_boxes=2)
    assert [i.tolist() for i in idx] == [[1, 3], [3], []]
    idx, _ = select_boxes(out)  # defaults: threshold 0.4, one box
    assert [i.tolist() for i in idx] == [[1], [3], []]
    idx, _ = select_boxes(out, threshold=0.0, max_boxes=None)  # sigmoid(-inf) = 0 passes 0, yet never chosen
    assert 4 not in idx[0].tolist() and len(idx[0]) == 4 and idx[2].numel() == 0
    with pytest.raises(ValueError, match="max_boxes"):
        select_boxes(out, max_boxes=0)


def test_invalid_proposal_never_chosen_even_with_the_best_feature():
    torch.manual_seed(0)
    sel = Selector(embed_dim=4, feature_dim=4, key_dim=4)
    with torch.no_grad():
        sel.w_q.weight.copy_(torch.eye(4))
        sel.w_k.weight.copy_(torch.eye(4))
        sel.w_q.bias.zero_()
        sel.w_k.bias.zero_()
    props = _proposals(3, 4)
    emb = torch.tensor([[10.0, 0, 0, 0]])
    props.features[0] = torch.tensor([[10.0, 0, 0, 0], [1.0, 0, 0, 0], [0.0, 1, 0, 0]])
    props.logits[0] = torch.tensor([5.0, 0.0, 0.0])
    props.valid[0, 0] = False
    idx, _ = select_boxes(sel(emb, props), threshold=0.4, max_boxes=3)
    assert 0 not in idx[0].tolist() and idx[0].tolist()[0] == 1


# ---------------------------------------------------------------- labels and losses


def test_selection_labels_paper_and_release_rules():
    target = torch.tensor([0.0, 0.0, 0.5, 0.5])  # area 1/4; heights below give exact binary IoUs
    heights = [0.5, 0.25, 0.15625, 0.125, 0.140625, 0.0625]  # IoU 1, .5, .3125, .25, .28125, .125
    props = torch.tensor([[0.0, 0.0, 0.5, h] for h in heights] + [[0.6, 0.6, 1.0, 1.0]])  # last IoU 0
    iou = box_iou(props, target[None])[:, 0]
    torch.testing.assert_close(iou, torch.tensor([1, 0.5, 0.3125, 0.25, 0.28125, 0.125, 0.0]))
    paper = selection_labels(props, target)  # > 0.5 positive, < 0.2 negative, ignore between
    assert paper.tolist() == [1, -1, -1, -1, -1, 0, 0]
    inclusive = selection_labels(props, target, pos_iou=0.5, neg_iou=0.2, inclusive_pos=True)
    assert inclusive.tolist() == [1, 1, -1, -1, -1, 0, 0]
    release = selection_labels(props, target, pos_iou=0.3, neg_iou=0.3, inclusive_pos=True)
    assert release.tolist() == [1, 1, 1, 0, 0, 0, 0]  # >= 0.3 positive, the rest negative
    at_boundary = selection_labels(props, target, pos_iou=0.25, neg_iou=0.25, inclusive_pos=True)
    assert at_boundary[3].item() == 1.0
    with pytest.raises(ValueError, match="neg_iou"):
        selection_labels(props, target, pos_iou=0.2, neg_iou=0.5)


def _bce(x: float, y: float) -> float:
    return math.log1p(math.exp(-x)) if y == 1 else math.log1p(math.exp(x))


def test_selection_loss_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5, float("-inf")], [0.3, 0.0, 1.0, -2.0]])
    labels = torch.tensor([[1.0, 0.0, -1.0, 0.0], [-1.0, -1.0, -1.0, -1.0]])
    assert selection_loss(logits, labels).item() == pytest.approx((_bce(2, 1) + _bce(-1, 0)) / 2, rel=1e-6)
    # labels of one target broadcast over the embeddings
    row = torch.tensor([1.0, 0.0, -1.0, -1.0])
    expected = (_bce(2, 1) + _bce(-1, 0) + _bce(0.3, 1) + _bce(0.0, 0)) / 4
    assert selection_loss(logits, row).item() == pytest.approx(expected, rel=1e-6)
    none = torch.full((2, 4), -1.0)
    x = logits.clone().requires_grad_(True)
    loss = selection_loss(x, none)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_ranking_loss_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5, float("-inf"), 3.0])
    labels = torch.tensor([1.0, 0.0, 1.0, 1.0, -1.0])  # the -inf positive and the ignored 3.0 leave the sums
    pos = math.log(math.exp(2.0) + math.exp(0.5))
    total = math.log(math.exp(2.0) + math.exp(-1.0) + math.exp(0.5))
    assert ranking_loss(logits, labels).item() == pytest.approx(total - pos, rel=1e-5)
    # a positive far above every negative costs ~0; below them, ~their margin
    assert ranking_loss(torch.tensor([20.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])).item() < 1e-6
    assert ranking_loss(torch.tensor([0.0, 10.0]), torch.tensor([1.0, 0.0])).item() == pytest.approx(10.0, abs=1e-3)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = ranking_loss(x, torch.tensor([0.0, -1.0]))  # no positive: zero, still in the graph
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))
    # rows: the mean over rows with a positive (the second row has none)
    rows = torch.stack([logits, torch.zeros(5)])
    row_labels = torch.stack([labels, torch.zeros(5)])
    assert ranking_loss(rows, row_labels).item() == pytest.approx(total - pos, rel=1e-5)
    with pytest.raises(ValueError, match="ranking_loss"):
        ranking_loss(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1))


def test_refinement_loss_l1_plus_giou_by_hand():
    target = torch.tensor([0.3, 0.3, 0.7, 0.7])
    refined = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.7, 0.7], [0.0, 0.0, 0.1, 0.1]])
    # box 0: L1 = 4 * 0.2; IoU = 0.04 / 0.28 = 1/7; enclosing 0.36 -> GIoU = 1/7 - 0.08/0.36
    first = 0.8 + 1 - (1 / 7 - 0.08 / 0.36)
    labels = torch.tensor([1.0, -1.0, 0.0])
    assert refinement_loss(refined, labels, target).item() == pytest.approx(first, rel=1e-5)
    labels = torch.tensor([1.0, 1.0, 0.0])  # the exact box adds 0; mean over the two positives
    assert refinement_loss(refined, labels, target).item() == pytest.approx(first / 2, rel=1e-5)
    batched = refinement_loss(refined[None].repeat(2, 1, 1), torch.stack([labels, labels]), target[None].repeat(2, 1))
    assert batched.item() == pytest.approx(first / 2, rel=1e-5)
    assert refinement_loss(refined, torch.tensor([0.0, -1.0, 0.0]), target).item() == 0.0


# ---------------------------------------------------------------- gradients and training


def test_gradients_reach_selector_and_box_embedding():
    torch.manual_seed(0)
    head = LanguageToVisionHead(16, 8)
    sel = Selector(embed_dim=8, feature_dim=10, key_dim=8)
    hidden = torch.randn(2, 16, requires_grad=True)  # LLM hidden states at [BOX]
    props = _proposals(6, 10)
    target = props.boxes[0, 2] + torch.tensor([0.02, 0.01, 0.03, 0.0])
    out = sel(head(hidden), props)
    labels = selection_labels(props.boxes[0], target)
    assert labels[2] == 1
    loss = selection_loss(out.logits, labels) + 2.0 * refinement_loss(
        out.refined_boxes, labels[None].expand(2, -1), target[None].expand(2, -1)
    )
    loss.backward()
    for name, p in [
        ("hidden", hidden),
        ("head.fc1", head.fc1.weight),
        ("head.fc2", head.fc2.weight),
        ("w_q", sel.w_q.weight),
        ("w_k", sel.w_k.weight),
        ("refine.last", sel.refine.layers[-1].weight),
    ]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_selector_overfit_picks_the_positive_and_refines_its_box():
    torch.manual_seed(0)
    sel = Selector(embed_dim=8, feature_dim=16, key_dim=16)
    emb = torch.nn.Parameter(torch.randn(1, 8))
    props = _proposals(6, 16, seed=3)
    props.boxes[0] = torch.tensor([[x, y, x + 0.3, y + 0.3] for y in (0.0, 0.5) for x in (0.0, 0.35, 0.7)])
    props.logits[0, 4] = -2.0  # the positive is not the proposer's favourite
    target = torch.tensor([0.37, 0.52, 0.68, 0.84])
    labels = selection_labels(props.boxes[0], target)
    assert labels.tolist() == [0, 0, 0, 0, 1, 0]
    before = select_boxes(sel(emb, props), threshold=0.4, max_boxes=1)[0][0].item()
    opt = torch.optim.Adam([*sel.parameters(), emb], lr=1e-2)
    for _ in range(150):
        out = sel(emb, props)
        loss = selection_loss(out.logits, labels) + 2.0 * refinement_loss(out.refined_boxes[0], labels, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = sel(emb, props)
    idx, boxes = select_boxes(out, threshold=0.4, max_boxes=1)
    assert idx[0].tolist() == [4], (before, idx)
    assert select_boxes(out, threshold=0.4, max_boxes=None)[0][0].tolist() == [4]  # no negative passes
    assert torch.sigmoid(out.logits[0, 4]) > 0.9
    iou_before = box_iou(props.boxes[0, 4:5], target[None]).item()
    iou_after = box_iou(boxes[0], target[None]).item()
    assert iou_after > max(0.95, iou_before + 0.05), (iou_before, iou_after)


def test_appearance_pooling_and_selector_keys_use_it():
    from sparrow.model.proposal_appearance import appearance_dim, proposal_appearance
    from sparrow.model.proposer import Proposals

    fmap = torch.zeros(1, 2, 8, 8)
    fmap[0, 0, :4, :4] = 1.0  # channel 0 lights the top-left quarter
    fmap[0, 1, 4:, 4:] = 3.0  # channel 1 the bottom-right quarter
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.5, 0.0, 1.0, 0.5]]])
    pooled = proposal_appearance([fmap, fmap[:, :1]], boxes)
    assert pooled.shape == (1, 3, 3)
    torch.testing.assert_close(pooled[0, :, :2], torch.tensor([[1.0, 0.0], [0.0, 3.0], [0.0, 0.0]]))
    assert appearance_dim(128) == 128 + 32 + 16
    torch.manual_seed(0)
    selector = Selector(embed_dim=8, feature_dim=4, key_dim=16, appearance_dim=3)
    props = Proposals(
        boxes=boxes, logits=torch.zeros(1, 3), features=torch.zeros(1, 3, 4), valid=torch.ones(1, 3, dtype=torch.bool)
    )
    with pytest.raises(ValueError, match="carry none"):
        selector(torch.randn(1, 8), props)
    embedding = torch.randn(1, 8)
    props.appearance = pooled
    with_app = selector(embedding, props).logits
    props.appearance = torch.zeros_like(pooled)
    without = selector(embedding, props).logits
    # the first two proposals differ in appearance from zeros, the third (all-zero pooled features) does not
    assert not torch.allclose(with_app[0, :2], without[0, :2]) and torch.allclose(with_app[0, 2], without[0, 2])


def test_appearance_grid_keeps_the_layout_inside_the_box():
    from sparrow.model.proposal_appearance import appearance_dim, proposal_appearance

    fmap = torch.zeros(1, 1, 8, 8)
    fmap[0, 0, :, :4] = 1.0  # the left half lit: a left-right layout the average cannot show
    mirrored = fmap.flip(-1)
    whole = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    averaged = [proposal_appearance([m], whole) for m in (fmap, mirrored)]
    torch.testing.assert_close(averaged[0], averaged[1])  # 0.5 either way
    kept = [proposal_appearance([m], whole, grid=2) for m in (fmap, mirrored)]
    assert kept[0].shape == (1, 1, 4)  # channel-major 2 x 2: (top-left, top-right, bottom-left, bottom-right)
    torch.testing.assert_close(kept[0][0, 0], torch.tensor([1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(kept[1][0, 0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert appearance_dim(128, 3) == (128 + 32 + 16) * 9 and appearance_dim(128, 0) == appearance_dim(128)
    with pytest.raises(ValueError, match="grid must be >= 0"):
        proposal_appearance([fmap], whole, grid=-1)


def test_a_model_with_an_appearance_grid_scores_its_proposals(tmp_path):
    from sparrow.errors import SparrowError
    from sparrow.model.config import SparrowConfig
    from sparrow.model.loading import build_tiny, from_pretrained, save_pretrained

    config = SparrowConfig(vlm_frames=2, vlm_max_frame_pixels=56 * 56, proposer_queries=8, selector_appearance_grid=2)
    model = build_tiny(seed=0, config=config, sam_image_size=64)
    features = model.pixel_decoder.encode(torch.randn(2, 3, 64, 64))
    top = model.candidates(features)
    assert top.appearance.shape[-1] == model.selector.appearance_dim == 4 * (128 + 32 + 16)  # hidden 128, 2 x 2
    out = model.select(torch.randn(1, model.pixel_decoder.hidden_size), top, 1)
    assert out.logits.shape == (1, top.boxes.shape[1]) and torch.isfinite(out.logits[top.valid[1:2]]).all()
    save_pretrained(model, tmp_path / "m")
    assert from_pretrained(tmp_path / "m").config.selector_appearance_grid == 2
    with pytest.raises(SparrowError, match="selector_appearance_grid"):
        SparrowConfig(selector_appearance_grid=-1)
