"""Tracklet silhouettes (``SparrowConfig.track_silhouette``): each proposal's SAM2 mask inside its box
(``proposal_appearance.proposal_silhouettes``), carried by ``SparrowModel.mask_boxes``, averaged per tracklet by
``SparrowModel.link_tracklets`` and read by the track selector's silhouette branch."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers_clips import two_object_clip

from sparrow.errors import SparrowError
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import build_tiny, from_pretrained, save_pretrained, tiny_config
from sparrow.model.proposal_appearance import appearance_dim, proposal_silhouettes
from sparrow.model.track_selector import TrackSelector, track_selection_loss
from sparrow.model.tracklets import trajectory_dim
from sparrow.pipeline.segment import SegmentationPipeline

FRAMES = 4


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, 8.0, -8.0)


def test_silhouettes_keep_the_shape_not_the_size_or_place() -> None:
    h = w = 32
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    square = (yy >= 4) & (yy < 12) & (xx >= 4) & (xx < 12)
    big_square = (yy >= 14) & (yy < 30) & (xx >= 14) & (xx < 30)
    triangle = (yy >= 4) & (yy < 20) & (xx >= 16) & (xx - 16 <= yy - 4)  # lower-left half of its box
    logits = torch.stack([_logits(square), _logits(big_square), _logits(triangle)])
    boxes = torch.tensor([[4, 4, 12, 12], [14, 14, 30, 30], [16, 4, 32, 20]], dtype=torch.float32) / 32
    sil = proposal_silhouettes(logits, boxes, 4)
    assert sil.shape == (3, 16) and float(sil.min()) >= 0 and float(sil.max()) <= 1
    assert float(sil[0].min()) > 0.9 and torch.allclose(sil[0], sil[1], atol=0.05)  # size and place drop out
    tri = sil[2].view(4, 4)
    assert float(tri[3, 0]) > 0.9 and float(tri[0, 3]) < 0.1  # bottom-left filled, top-right empty
    assert float((sil[0] - sil[2]).abs().sum()) > 4
    with pytest.raises(ValueError, match="size must be >= 1"):
        proposal_silhouettes(logits, boxes, 0)
    with pytest.raises(ValueError, match="mask_logits \\[M, h, w\\] and boxes \\[M, 4\\]"):
        proposal_silhouettes(logits, boxes[:2], 4)


def test_track_selector_reads_the_silhouette_columns() -> None:
    """Two tracklets that differ only in their silhouette: the silhouette branch alone tells the queries apart."""
    torch.manual_seed(0)
    g = trajectory_dim(FRAMES)
    selector = TrackSelector(embed_dim=2, appearance_dim=3, trajectory_dim=g, hidden=16, silhouette_dim=4)
    appearance = torch.tensor([[0.5, 0.1, 0.2, 1, 1, 1, 1], [0.5, 0.1, 0.2, 0, 1, 1, 1]], dtype=torch.float32)
    trajectory = torch.zeros(2, g)
    queries = torch.eye(2)
    opt = torch.optim.Adam(selector.parameters(), lr=1e-2)
    for _ in range(150):
        loss = track_selection_loss(selector(queries, appearance, trajectory), torch.eye(2, dtype=torch.bool))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert selector(queries, appearance, trajectory).argmax(-1).tolist() == [0, 1]
    assert selector.silhouette[0].weight.grad.abs().sum() > 0
    assert selector(queries, appearance[:0], trajectory[:0]).shape == (2, 0)


@pytest.fixture(scope="module")
def model():
    config = dataclasses.replace(
        tiny_config(), selection_level="track", track_silhouette=4, vlm_frames=FRAMES, mode="perframe", track_hidden=32
    )
    return build_tiny(seed=0, config=config, sam_image_size=64)


def test_model_links_silhouettes_and_round_trips(model, tmp_path) -> None:
    with pytest.raises(SparrowError, match="track_silhouette needs selection_level 'track'"):
        SparrowConfig(track_silhouette=4)
    with pytest.raises(SparrowError, match="track_silhouette must be a whole number >= 0"):
        SparrowConfig(selection_level="track", track_silhouette=-1)
    hidden = model.pixel_decoder.hidden_size
    assert model.track_selector.silhouette_dim == 16
    assert model.track_selector.appearance[1].in_features == appearance_dim(hidden)
    frames, _, _ = two_object_clip(t=FRAMES)
    with torch.no_grad():
        features = model.pixel_decoder.encode(model.preprocessor(frames))
        top = model.mask_boxes(features, model.candidates(features))
        k = top.boxes.shape[1]
        assert top.silhouette.shape == (FRAMES, k, 16)
        assert float(top.silhouette.min()) >= 0 and float(top.silhouette.max()) <= 1
        assert top.images(1, 3).silhouette.shape == (2, k, 16) and top.detach().silhouette is not None
        tracks, appearance, _ = model.link_tracklets(top)
    assert appearance.shape == (len(tracks), appearance_dim(hidden) + 16)
    assert len(tracks) > 0
    for n in range(len(tracks)):  # the silhouette columns are the tracklet's mean silhouette over its present frames
        ts = tracks.present[n].nonzero().flatten().tolist()
        expected = torch.stack([top.silhouette[t, tracks.index[n, t]] for t in ts]).mean(0)
        assert torch.allclose(appearance[n, -16:], expected, atol=1e-6)
    top.silhouette = None
    with pytest.raises(ValueError, match="needs the proposals' silhouettes"):
        model.link_tracklets(top)
    result = SegmentationPipeline(model).segment(frames, "the red square", mode="perframe")
    assert result.masks.shape == (FRAMES, 96, 96)
    save_pretrained(model, tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m")
    assert loaded.config.track_silhouette == 4
    for (name, a), b in zip(model.track_selector.state_dict().items(), loaded.track_selector.state_dict().values()):
        assert torch.equal(a, b), name
