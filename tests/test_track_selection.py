"""A model that selects tracklets (``selection_level: track``): config checks, the training loss, save/load, the
rebuild on a config change, and the pipeline choosing and following one tracklet."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers_clips import training_sample, two_object_clip

from sparrow.data.video_io import Video
from sparrow.errors import SparrowError
from sparrow.model.batching import make_batch
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import build_tiny, from_pretrained, save_pretrained, tiny_config
from sparrow.model.proposer import Proposals
from sparrow.pipeline.prompting import Plan
from sparrow.pipeline.segment import SegmentationPipeline

FRAMES = 4


@pytest.fixture(scope="module")
def model():
    config = dataclasses.replace(tiny_config(), selection_level="track", vlm_frames=FRAMES, mode="perframe")
    return build_tiny(seed=0, config=config, sam_image_size=64)


def test_config_checks() -> None:
    with pytest.raises(SparrowError, match="selection_level must be one of"):
        SparrowConfig(selection_level="clip")
    with pytest.raises(SparrowError, match="needs selector_appearance"):
        SparrowConfig(selection_level="track", selector_appearance=False)
    with pytest.raises(SparrowError, match="track_hidden"):
        SparrowConfig(track_hidden=0)
    assert build_tiny(seed=0, sam_image_size=64).track_selector is None  # the default selects per frame


def _sample(frames: np.ndarray, masks: np.ndarray, boxes: np.ndarray):
    sample = training_sample(frames, masks, boxes, [0, 2])
    sample.vlm_boxes = boxes[None]
    return sample


def test_forward_trains_the_track_selector_on_the_target_tracklet(model, monkeypatch) -> None:
    frames, masks, boxes = two_object_clip(t=FRAMES)
    batch = make_batch(model, [_sample(frames, masks, boxes)])
    assert batch.track_pixels.shape == (1, FRAMES, 3, 64, 64) and batch.track_boxes.shape == (1, 1, FRAMES, 4)
    target = torch.from_numpy(boxes / 96.0)  # normalised, [T, 4]
    other = torch.tensor([0.6, 0.6, 0.8, 0.8]).expand(FRAMES, 4)
    real = model.candidates

    def two_proposals(features):  # the target and a distractor on every frame, whatever the untrained proposer says
        top = real(features)
        n = top.boxes.shape[0]
        boxes = torch.stack([target[:n], other[:n]], dim=1).to(top.boxes)
        return Proposals(
            boxes,
            torch.zeros(n, 2),
            top.features[:, :2],
            torch.ones(n, 2, dtype=torch.bool),
            appearance=top.appearance[:, :2],
        )

    monkeypatch.setattr(model, "candidates", two_proposals)
    monkeypatch.setattr(model, "mask_boxes", lambda features, top: top)
    model.zero_grad()
    losses = model(batch)
    # two tracklets, the target's is the positive: -log softmax over two
    assert 0.0 < float(losses["track_selection"].detach()) < 5.0
    losses["track_selection"].backward()
    assert model.track_selector.query.weight.grad.abs().sum() > 0
    batch.track_pixels = None  # without the VLM frames (e.g. a [SEG]-only batch) there is no track loss
    assert "track_selection" not in model(batch)


def test_save_load_keeps_the_track_selector(model, tmp_path) -> None:
    save_pretrained(model, tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m")
    assert loaded.config.selection_level == "track"
    for (name, a), (_, b) in zip(model.track_selector.state_dict().items(), loaded.track_selector.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_run_can_turn_track_selection_on_for_a_saved_model(tmp_path) -> None:
    from sparrow.train.config import ModelInit
    from sparrow.train.model_init import build_initial_model

    plain = build_tiny(seed=0, config=dataclasses.replace(tiny_config(), vlm_frames=FRAMES), sam_image_size=64)
    save_pretrained(plain, tmp_path / "plain")
    model = build_initial_model(ModelInit(init=str(tmp_path / "plain"), config={"selection_level": "track"}))
    assert model.track_selector is not None and model.track_selector.frames == FRAMES
    again = build_initial_model(ModelInit(init=str(tmp_path / "plain"), config={"selection_level": "track"}))
    assert torch.equal(model.track_selector.query.weight, again.track_selector.query.weight)  # seeded


def test_pipeline_follows_one_tracklet(model) -> None:
    frames, _, _ = two_object_clip(t=9)
    pipeline = SegmentationPipeline(model)
    result = pipeline.segment(frames, "the red square", mode="perframe")
    assert result.masks.shape == (9, 96, 96)
    session, _ = pipeline.prepare(Video.open(frames), "the red square", mode="perframe")
    plan = pipeline.plan(session)
    choice = plan.choices[0]
    assert not choice.mask_logits.requires_grad  # planning builds no autograd graph
    assert choice.track is not None and choice.track.frame_ids == session.vlm_indices
    assert bool(choice.track.present.any()) and choice.frame in choice.track.frame_ids
    assert torch.equal(choice.box, choice.track.boxes[choice.track.frame_ids.index(choice.frame)])
    # frames where the chosen tracklet is absent get no mask
    absent = [t for t in range(9) if choice.track.box_at(t) is None]
    assert all(not result.masks[t].any() for t in absent)
    again = Plan.from_dict(plan.to_dict())
    assert again.choices[0].track.frame_ids == choice.track.frame_ids
    assert torch.equal(again.choices[0].track.boxes, choice.track.boxes.cpu())


def test_tracklet_benchmark_end_to_end(tmp_path, capsys) -> None:
    """``benchmarks/probe_tracklets.py`` on a tiny track model and 4 generated SynthRef videos: every row, in range,
    the ceilings above the model's choice; a per-frame model is refused with exit code 2."""
    import importlib.util
    import json
    from pathlib import Path

    from sparrow.data.synthref.generate import SynthConfig, generate_split

    generate_split(tmp_path, videos=4, seed=0, split="test", config=SynthConfig(size=64, num_frames=8), progress=False)
    split = tmp_path / "test"
    config = SparrowConfig(
        vlm_frames=4, vlm_max_frame_pixels=56 * 56, proposer_queries=8, selection_level="track", track_hidden=32
    )
    save_pretrained(build_tiny(seed=0, config=config, sam_image_size=64), tmp_path / "track")
    save_pretrained(
        build_tiny(seed=0, config=dataclasses.replace(config, selection_level="frame"), sam_image_size=64),
        tmp_path / "frame",
    )
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("probe_tracklets", root / "benchmarks" / "probe_tracklets.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--data", str(split), "--probe-data", str(split), "--videos", "4", "--probe-videos", "4", "--epochs", "1"]
    out = tmp_path / "figures.json"
    assert bench.main(["--model", str(tmp_path / "track"), *args, "--json", str(out)]) == 0
    assert "track-level top-1" in capsys.readouterr().out
    figures = json.loads(out.read_text())
    # the probe rows need a training expression with a tracklet on its target; an untrained proposer may give none
    assert (
        {"model", "best tracklet", "frame oracle"}
        <= set(figures)
        <= {
            "model",
            "probe on bag of words",
            "probe on frozen [BOX]",
            "best tracklet",
            "frame oracle",
        }
    )
    assert figures["model"]["frames"] > 0
    for row in set(figures) - {"best tracklet", "frame oracle"}:
        assert 0 <= figures[row]["all"] <= figures["best tracklet"]["all"] <= 1
    assert bench.main(["--model", str(tmp_path / "frame"), *args]) == 2
    # the annotated objects as tracklets: the target's own tracklet covers it on every visible frame (multi-target
    # expressions aside), and the probes always have something to learn from
    assert bench.main(["--model", str(tmp_path / "track"), *args, "--tracks", "gt", "--json", str(out)]) == 0
    gt = json.loads(out.read_text())
    assert gt["best tracklet"]["all"] > 0.7 and "probe on bag of words" in gt


def test_tracklet_report_rows_on_hand_made_clips() -> None:
    """Two tracklets per clip (red, blue); each expression names one. The bag-of-words probe learns the words, the
    model row reads the given logits, the ceilings count frames."""
    from sparrow.diagnostics.tracklets import TrackletClip, tracklet_report

    def clip(swap: bool) -> TrackletClip:
        appearance = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        if swap:
            appearance = appearance.flip(0)
        red, blue = (1, 0) if swap else (0, 1)
        hits = torch.zeros(2, 2, 3, dtype=torch.bool)
        hits[0, red], hits[1, blue] = True, True
        hits[1, blue, 2] = False  # the blue tracklet misses the target on one frame
        return TrackletClip(
            record=None,
            texts=["the red shape", "the blue shape"],
            kinds=["appearance", "appearance"],
            box=torch.zeros(2, 4),
            question=torch.zeros(2, 3),
            logits=torch.tensor([[1.0, 0.0], [1.0, 0.0]]),  # the "model" always picks tracklet 0
            appearance=appearance,
            trajectory=torch.zeros(2, 23),
            hits=hits,
            visible=torch.ones(2, 3, dtype=torch.bool),
            frame_oracle=torch.ones(2, 3, dtype=torch.bool),
        )

    clips = [clip(False), clip(True)] * 3
    report = tracklet_report(clips, clips, epochs=30)
    assert report["best tracklet"]["all"] == pytest.approx(5 / 6)
    assert report["frame oracle"]["all"] == 1.0
    assert report["model"]["all"] == pytest.approx((3 + 0 + 0 + 2) / 12)  # right only when tracklet 0 is the target
    assert report["probe on bag of words"]["all"] == pytest.approx(5 / 6)  # the words decide: always the best
    assert report["model"]["frames"] == 36
