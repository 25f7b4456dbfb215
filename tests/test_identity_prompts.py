"""Identity prompts in the segmenter stage (issue 10 item 3): targets, batching, loss, stage, and that they learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparrow.data.dataset import ReferringVideoDataset
from sparrow.data.synthref.generate import make_video
from sparrow.data.synthref.identity import (
    NUM_IDENTITIES,
    IdentityDataset,
    expression_identity,
    identity_index,
    identity_targets,
    object_identity,
)
from sparrow.data.synthref.stream import InMemoryVideoRecord
from sparrow.errors import SparrowError
from sparrow.model.batching import make_batch
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import build_tiny, from_pretrained, save_pretrained
from sparrow.model.prompt_tokens import teacher_forced_pairs
from sparrow.model.sparrow_model import SparrowBatch
from sparrow.train.config import StageConfig
from sparrow.train.objectives import identity_losses, segmenter_loss
from sparrow.train.stages import apply_stage


@pytest.fixture(scope="module")
def model():
    config = SparrowConfig(
        vlm_frames=4, vlm_max_frame_pixels=56 * 56, identity_prompts=NUM_IDENTITIES, proposer_queries=8
    )
    return build_tiny(seed=0, config=config, sam_image_size=64)


@pytest.fixture(scope="module")
def record() -> InMemoryVideoRecord:
    rec, frames = make_video("train", 0, 3)
    fields = {k: getattr(rec, k) for k in rec.__dataclass_fields__}
    return InMemoryVideoRecord(**fields, pixels=frames, jpeg_quality=0)


def test_identity_index_and_targets(record) -> None:
    assert identity_index("red", "circle") == 0 and identity_index("cyan", "cross") == NUM_IDENTITIES - 1
    with pytest.raises(ValueError, match="not a SynthRef identity"):
        identity_index("pink", "circle")
    frames = [0, 5, 23]
    ids, masks = identity_targets(record, frames)
    expected = sorted({object_identity(t) for t in record.objects.values()})
    assert ids.tolist() == expected and masks.shape == (len(ids), 3, 128, 128)
    for m, ident in enumerate(ids):
        union = np.zeros((3, 128, 128), dtype=bool)
        for track in record.objects.values():
            if object_identity(track) == ident:
                union |= np.stack([track.mask(t, record.size) for t in frames])
        assert np.array_equal(masks[m], union)


def test_identity_dataset_and_batch(model, record) -> None:
    base = ReferringVideoDataset([record], num_vlm_frames=4, num_sam_frames=2, sampling="random", seed=0)
    wrapped = IdentityDataset(base)
    a, b = base[1], wrapped[1]
    assert np.array_equal(a.masks, b.masks) and a.sam_indices == b.sam_indices and a.question == b.question
    assert b.identity_masks.shape == (len(b.identity_ids), 2, 128, 128)
    short = wrapped[0]
    short.identity_ids, short.identity_masks = short.identity_ids[:1], short.identity_masks[:1]
    batch = make_batch(model, [b, short])
    m = len(b.identity_ids)
    assert batch.identity_ids.shape == (2, m) and batch.identity_masks.shape == (2, m, 2, 128, 128)
    assert batch.identity_ids[1, 1:].eq(-1).all() and batch.identity_masks[1, 1:].eq(0).all()
    assert make_batch(model, [a]).identity_ids is None  # plain samples carry none


def _toy_batch(gen: torch.Generator, n: int, size: int = 64) -> SparrowBatch:
    """``n`` one-frame samples, each a red square and a blue disc at random places; identities red-square and
    blue-circle with their masks."""
    pixels = torch.full((n, 1, 3, size, size), -1.5)
    masks = torch.zeros(n, 2, 1, size, size)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in range(n):
        (x0, y0), (cx, cy) = torch.randint(4, size - 20, (2, 2), generator=gen).tolist()
        disc = (yy - cy - 8) ** 2 + (xx - cx - 8) ** 2 <= 64
        square = torch.zeros(size, size, dtype=torch.bool)
        square[y0 : y0 + 14, x0 : x0 + 14] = True
        square &= ~disc
        pixels[i, 0, 0][square] = 2.0
        pixels[i, 0, 2][disc] = 2.0
        masks[i, 0, 0], masks[i, 1, 0] = square.float(), disc.float()
    ids = torch.tensor([[identity_index("red", "square"), identity_index("blue", "circle")]]).expand(n, -1)
    return SparrowBatch(
        vlm=None,
        sam_pixels=pixels,
        masks=masks[:, :1],
        boxes=torch.full((n, 1, 1, 4), float("nan")),
        identity_ids=ids.clone(),
        identity_masks=masks,
    )


def test_segmenter_loss_trains_the_identity_prompts(model) -> None:
    batch = _toy_batch(torch.Generator().manual_seed(0), 2)
    torch.manual_seed(0)
    losses = segmenter_loss(model, batch, point_prompts=False, identity_prompts=True)
    assert {"identity_mask_bce", "identity_mask_dice", "identity_cls", "loss"} <= set(losses)
    model.zero_grad()
    losses["loss"].backward()
    grad = model.identity_prompts.weight.grad
    used = grad.abs().sum(-1) > 0
    assert bool(used.all())  # the prototype classification reaches every prompt
    assert (
        float(losses["identity_cls"].detach()) > 0
        and model.pixel_decoder.sam.mask_decoder.mask_tokens.weight.grad is not None
    )
    model.zero_grad()
    plain = segmenter_loss(model, batch, point_prompts=False)
    assert "identity_mask_bce" not in plain


def test_identity_prompts_need_model_rows_and_targets(model) -> None:
    batch = _toy_batch(torch.Generator().manual_seed(0), 1)
    features = model.pixel_decoder.encode(batch.sam_pixels.flatten(0, 1))
    batch.identity_ids = None
    with pytest.raises(SparrowError, match="identity targets"):
        identity_losses(model, batch, features)
    table, model.identity_prompts = model.identity_prompts, None
    try:
        with pytest.raises(SparrowError, match="model.config.identity_prompts"):
            identity_losses(model, batch, features)
    finally:
        model.identity_prompts = table


def test_stages_and_saving(model, tmp_path) -> None:
    plan = apply_stage(model, StageConfig(name="segmenter"))
    assert "identity_prompts.weight" in plan.trainable
    plan = apply_stage(model, StageConfig(name="vlm"))
    assert "identity_prompts.weight" in plan.frozen
    save_pretrained(model, tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.identity_prompts.weight, model.identity_prompts.weight)
    with pytest.raises(SparrowError, match="identity_prompts must be >= 0"):
        SparrowConfig(identity_prompts=-1)


def test_identity_prompts_learn_to_tell_colour_and_shape_apart() -> None:
    """A tiny SAM2 trained on identity prompts alone segments the prompted object, not the other one."""
    config = SparrowConfig(
        vlm_frames=4, vlm_max_frame_pixels=56 * 56, identity_prompts=NUM_IDENTITIES, proposer_queries=8
    )
    net = build_tiny(seed=0, config=config, sam_image_size=64)
    apply_stage(net, StageConfig(name="segmenter"))
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    for _ in range(80):
        batch = _toy_batch(gen, 6)
        losses = identity_losses(net, batch, net.pixel_decoder.encode(batch.sam_pixels.flatten(0, 1)))
        opt.zero_grad()
        (2.0 * losses["identity_mask_bce"] + 0.5 * losses["identity_mask_dice"] + losses["identity_cls"]).backward()
        opt.step()
    batch = _toy_batch(torch.Generator().manual_seed(99), 8)
    with torch.no_grad():
        features = net.pixel_decoder.encode(batch.sam_pixels.flatten(0, 1))
        ious = torch.zeros(2, 2)
        for k in range(2):
            prompts = net.identity_prompts(batch.identity_ids[:, k])
            pred = (
                net.pixel_decoder.upsample(net.decode(features, torch.arange(8), prompts, None).mask_logits, (64, 64))
                > 0
            )
            for j in range(2):
                target = batch.identity_masks[:, j, 0] > 0
                ious[k, j] = ((pred & target).flatten(1).sum(1) / (pred | target).flatten(1).sum(1).clamp(min=1)).mean()
    assert ious[0, 0] > 0.5 and ious[1, 1] > 0.5, ious
    assert ious[0, 1] < 0.2 and ious[1, 0] < 0.2, ious


def test_expression_identity_and_batch_target(model, record) -> None:
    for expression in record.expressions:
        ids = {object_identity(record.objects[o]) for o in expression.obj_ids}
        expected = next(iter(ids)) if len(ids) == 1 else -1
        assert expression_identity(record, expression.exp_id) == expected
    with pytest.raises(KeyError, match="no expression"):
        expression_identity(record, "no-such-expression")
    wrapped = IdentityDataset(ReferringVideoDataset([record], num_vlm_frames=4, num_sam_frames=2, seed=0))
    samples = [wrapped[0], wrapped[1]]
    batch = make_batch(model, samples)
    assert batch.target_identity.tolist() == [s.target_identity for s in samples]
    assert samples[0].target_identity == expression_identity(record, samples[0].exp_id)


def test_vlm_forward_classifies_prompts_against_frozen_identities(model, record) -> None:
    wrapped = IdentityDataset(ReferringVideoDataset([record], num_vlm_frames=4, num_sam_frames=2, seed=0))
    batch = make_batch(model, [wrapped[0], wrapped[1]])
    batch.target_identity = torch.tensor([3, -1])  # the second row is left out
    model.zero_grad()
    losses = model(batch)
    table = model.identity_prompts.weight
    _, hidden = model.vlm(batch.vlm)  # row 0's embeddings by hand
    vlm = model.vlm
    pairs = teacher_forced_pairs(batch.vlm.input_ids, batch.vlm.attention_mask, vlm.box_token_id, vlm.seg_token_id)
    p = model.prompt_embeddings(hidden[0, :-1], pairs[0])
    logits = torch.cat([p.box, p.seg]) @ table.t() / table.shape[1] ** 0.5
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([3, 3]))
    torch.testing.assert_close(losses["prompt_identity"], expected, rtol=1e-4, atol=1e-5)
    losses["prompt_identity"].backward()
    assert table.grad is None or float(table.grad.abs().sum()) == 0.0  # the prototypes stay fixed
    assert (
        float(model.box_head.fc2.weight.grad.abs().sum()) > 0 and float(model.seg_head.fc2.weight.grad.abs().sum()) > 0
    )
    batch.target_identity = torch.tensor([-1, -1])
    assert float(model(batch)["prompt_identity"]) == 0.0
