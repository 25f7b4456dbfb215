"""The track selector's question reader (``model/question_reader.py``): shapes, padding, errors; a model whose
selector reads the question (training loss, pipeline, save/load); and the VLM-free ``track_selector`` stage
(``train/selector_pretraining.py``)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers_clips import training_sample, two_object_clip

from sparrow.data.synthref.stream import FreshSynthRef, fresh_config
from sparrow.data.video_io import sample_indices
from sparrow.errors import SparrowError
from sparrow.model.batching import make_batch
from sparrow.model.config import SparrowConfig
from sparrow.model.loading import build_tiny, from_pretrained, save_pretrained, tiny_config
from sparrow.model.prompt_tokens import PromptPairs
from sparrow.model.question_reader import QuestionReader
from sparrow.model.track_selector import TrackSelector
from sparrow.model.tracklets import trajectory_dim
from sparrow.pipeline.segment import SegmentationPipeline
from sparrow.train import selector_pretraining
from sparrow.train.config import (
    DataConfig,
    DataSource,
    FreshSynthRefSource,
    ModelInit,
    OptimizerConfig,
    StageConfig,
    TrainConfig,
)
from sparrow.train.selector_pretraining import ClipTracklets, clip_tracklets, pretrain_selector

FRAMES = 4
TINY = {"vlm_max_frame_pixels": 56 * 56, "vlm_frames": FRAMES, "proposer_queries": 8, "track_hidden": 32}


def test_reader_shapes_padding_and_errors() -> None:
    torch.manual_seed(0)
    reader = QuestionReader(token_dim=12, hidden=16, heads=4).eval()
    words = torch.randn(2, 5, 12)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = reader(words, mask)
    assert out.shape == (2, 16) and torch.isfinite(out).all()
    # padding neither the values under it nor its length change a question's reading
    padded = torch.cat([words, torch.randn(2, 3, 12)], 1)
    longer = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], 1)
    assert torch.allclose(reader(padded, longer), out, atol=1e-5)
    assert torch.allclose(reader(words[1:, :3], mask[1:, :3]), out[1:], atol=1e-5)
    # word order matters (learned positions)
    assert not torch.allclose(reader(words[:1].flip(1), mask[:1]), out[:1], atol=1e-4)
    with pytest.raises(ValueError, match="at least one token"):
        reader(words, torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="disagree"):
        reader(words, mask[:, :4])
    with pytest.raises(ValueError, match="multiple of heads"):
        QuestionReader(12, 18, heads=4)


def test_track_selector_with_a_reader() -> None:
    torch.manual_seed(0)
    g = trajectory_dim(FRAMES)
    selector = TrackSelector(8, 6, g, hidden=16, question_dim=12)
    words, mask = torch.randn(3, 4, 12), torch.ones(3, 4, dtype=torch.bool)
    appearance, trajectory = torch.randn(5, 6), torch.rand(5, g)
    alone = selector(None, appearance, trajectory, words, mask)
    assert alone.shape == (3, 5)
    with_box = selector(torch.randn(3, 8), appearance, trajectory, words, mask)
    assert not torch.allclose(alone, with_box)  # [BOX] adds to the words
    with torch.no_grad():
        selector.query.weight.zero_()
        selector.query.bias.zero_()
    assert torch.allclose(selector(torch.randn(3, 8), appearance, trajectory, words, mask), alone)
    with pytest.raises(ValueError, match="reads the question"):
        selector(torch.randn(3, 8), appearance, trajectory)
    with pytest.raises(ValueError, match="needs the \\[BOX\\] embeddings"):
        TrackSelector(8, 6, g, hidden=16)(None, appearance, trajectory)


@pytest.fixture(scope="module")
def model():
    config = dataclasses.replace(
        tiny_config(), selection_level="track", track_reads_question=True, vlm_frames=FRAMES, mode="perframe"
    )
    return build_tiny(seed=0, config=config, sam_image_size=64)


def test_config_and_prompt_embeddings(model) -> None:
    with pytest.raises(SparrowError, match="track_reads_question needs selection_level 'track'"):
        SparrowConfig(track_reads_question=True)
    assert model.track_selector.reader is not None
    words, mask = model.vlm.question_embeddings(["the red square", "a blue disc moving left"])
    assert words.shape[:2] == mask.shape and words.shape[2] == model.vlm.hidden_size
    assert mask[0].sum() < mask[1].sum() and not words[0][~mask[0]].any()  # padding is zero
    with pytest.raises(SparrowError, match="query is empty"):
        model.vlm.question_embeddings([" "])
    states = torch.randn(12, model.vlm.hidden_size)
    pairs = PromptPairs(seg_positions=[5, 9], box_positions=[4, 8])
    prompts = model.prompt_embeddings(states, pairs, "the red square")
    assert prompts.words.shape[0] == 2 and torch.equal(prompts.words[0], prompts.words[1])
    with pytest.raises(ValueError, match="reads the question"):
        model.prompt_embeddings(states, pairs)


def test_training_loss_reaches_the_reader_and_the_pipeline_uses_it(model, monkeypatch, tmp_path) -> None:
    frames, masks, boxes = two_object_clip(t=FRAMES)
    sample = training_sample(frames, masks, boxes, [0, 2])
    sample.vlm_boxes = boxes[None]
    batch = make_batch(model, [sample])
    assert batch.questions == [sample.question]
    target = torch.from_numpy(boxes / 96.0)
    other = torch.tensor([0.6, 0.6, 0.8, 0.8]).expand(FRAMES, 4)
    real = model.mask_boxes

    def two_tracks(features, top):  # the target and a distractor on every frame
        top = real(features, top)
        top.boxes = torch.stack([target, other], 1).to(top.boxes)
        top.valid = torch.ones(FRAMES, 2, dtype=torch.bool)
        top.logits, top.features, top.appearance = top.logits[:, :2], top.features[:, :2], top.appearance[:, :2]
        return top

    monkeypatch.setattr(model, "mask_boxes", two_tracks)
    model.zero_grad()
    losses = model(batch)
    losses["track_selection"].backward()
    assert model.track_selector.reader.project[1].weight.grad.abs().sum() > 0
    monkeypatch.undo()
    result = SegmentationPipeline(model).segment(frames, "the red square", mode="perframe")
    assert result.masks.shape == (FRAMES, 96, 96)
    save_pretrained(model, tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m")
    assert loaded.config.track_reads_question
    for (name, a), b in zip(model.track_selector.state_dict().items(), loaded.track_selector.state_dict().values()):
        assert torch.equal(a, b), name


def test_clip_tracklets_labels_the_expressions(model, monkeypatch) -> None:
    """With the annotated objects as the proposals (an untrained proposer finds nothing), every single-target
    expression gets exactly the tracklet of its object as the positive."""
    record = FreshSynthRef(3, length=1, config=fresh_config(64, 8), balance=False).record(0)
    frame_ids = sample_indices(record.num_frames, FRAMES)
    ids = sorted(record.objects)
    h, w = record.size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    objects = torch.tensor(
        [[record.objects[o].boxes[t] or [0.0] * 4 for o in ids] for t in frame_ids], dtype=torch.float32
    )
    present = torch.tensor([[record.objects[o].boxes[t] is not None for o in ids] for t in frame_ids])
    real = model.mask_boxes

    def objects_as_proposals(features, top):
        top = real(features, top)
        n = len(ids)
        top.boxes, top.valid = (objects / scale).to(top.boxes), present
        top.logits, top.features, top.appearance = top.logits[:, :n], top.features[:, :n], top.appearance[:, :n]
        return top

    monkeypatch.setattr(model, "mask_boxes", objects_as_proposals)
    clip = clip_tracklets(model, record)
    n = clip.appearance.shape[0]
    assert n >= len(ids) and clip.trajectory.shape == (n, trajectory_dim(FRAMES))
    singles = [e.text for e in record.expressions if len(e.obj_ids) == 1]
    assert singles and set(singles) <= set(clip.texts) <= {e.text for e in record.expressions}
    assert clip.positive.shape == clip.ignore.shape == (len(clip.texts), n)
    for text, positive in zip(clip.texts, clip.positive):
        if text in singles:
            assert int(positive.sum()) == 1  # its object's tracklet, and only that
    assert not bool((clip.positive & clip.ignore).any())


def _colour_clips(model, record, per_object: bool = False) -> ClipTracklets:
    """Two tracklets, a red one (appearance +1) and a blue one (-1), in random order; each expression names one."""
    rng = np.random.default_rng(len(record.video_id) + sum(map(ord, record.video_id)))
    red_first = bool(rng.integers(0, 2))
    appearance = torch.zeros(2, model.track_selector.appearance[1].in_features)
    appearance[:, 0] = torch.tensor([1.0, -1.0] if red_first else [-1.0, 1.0])
    red = 0 if red_first else 1
    positive = torch.tensor([[i == red for i in range(2)], [i != red for i in range(2)]])
    return ClipTracklets(
        appearance=appearance,
        trajectory=torch.zeros(2, trajectory_dim(FRAMES)),
        positive=positive,
        ignore=torch.zeros(2, 2, dtype=torch.bool),
        texts=["the red shape", "the blue shape"],
    )


def _stage_config(tmp_path, model_folder) -> TrainConfig:
    return TrainConfig(
        model=ModelInit(init=str(model_folder)),
        data=DataConfig(
            sources=[DataSource(synthref=FreshSynthRefSource(seed=5, size=64, num_frames=8, length=6))],
            num_vlm_frames=FRAMES,
        ),
        stage=StageConfig(name="track_selector"),
        optimizer=OptimizerConfig(lr=3e-3, warmup_steps=2, schedule="constant"),
        steps=60,
        batch_size=2,
        log_every=10,
        output_dir=str(tmp_path / "run"),
    )


def test_stage_learns_the_words_without_the_vlm(model, tmp_path, monkeypatch) -> None:
    save_pretrained(model, tmp_path / "start")
    monkeypatch.setattr(selector_pretraining, "clip_tracklets", _colour_clips)
    result = pretrain_selector(_stage_config(tmp_path, tmp_path / "start"), progress=False)
    trained = from_pretrained(result.final_dir)
    assert not trained.track_selector.query.weight.any() and not trained.track_selector.query.bias.any()
    before = from_pretrained(tmp_path / "start")
    for name in ("pixel_decoder.sam.mask_decoder", "proposer", "box_head"):  # only the track selector trained
        a, b = trained.get_submodule(name).state_dict(), before.get_submodule(name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    lines = [json.loads(x) for x in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [10, 20, 30, 40, 50, 60]
    assert len(result.records) == 60 and result.records[0]["loss"] > 0.5 and lines[-1]["loss"] < 0.05
    selector = trained.track_selector.eval()
    for question, red_first in (
        ("Can you segment the red shape in this video?", True),
        ("Please locate the blue shape in this video.", False),
    ):
        words, mask = trained.vlm.question_embeddings([question])
        clip = _colour_clips(trained, type("R", (), {"video_id": "a" if red_first else "b"})())
        with torch.no_grad():
            logits = selector(None, clip.appearance, clip.trajectory, words, mask)
        assert int(logits.argmax()) == int(clip.positive[0 if "red" in question else 1].float().argmax())


def test_batch_loss_is_the_mean_over_expressions_of_each_clip_alone(model) -> None:
    from sparrow.model.track_selector import track_selection_loss
    from sparrow.train.selector_pretraining import _QuestionWords, batch_loss

    torch.manual_seed(0)
    a_dim = model.track_selector.appearance[1].in_features
    g = trajectory_dim(FRAMES)

    def clip(n: int, e: int) -> ClipTracklets:
        positive = torch.zeros(e, n, dtype=torch.bool)
        positive[torch.arange(e), torch.arange(e) % n] = True
        ignore = torch.zeros(e, n, dtype=torch.bool)
        ignore[0, -1] = n > 2
        return ClipTracklets(
            torch.randn(n, a_dim), torch.rand(n, g), positive, ignore, [f"shape {i}" for i in range(e)]
        )

    clips = [clip(3, 2), clip(5, 3)]
    questions = [[f"Can you segment the shape {i} in this video?" for i in range(len(c.texts))] for c in clips]
    words = _QuestionWords(model)
    together = batch_loss(model, clips, questions, words)["track_selection"]
    alone = []
    for c, qs in zip(clips, questions):
        w, m = model.vlm.question_embeddings(qs)
        logits = model.track_selector(None, c.appearance, c.trajectory, w, m)
        alone.append(track_selection_loss(logits, c.positive, c.ignore) * len(qs))
    assert torch.allclose(together, torch.stack(alone).sum() / 5, atol=1e-5)
    assert len(words.cache) == 3  # each distinct question looked up once


def test_stage_reuses_its_tracklets(model, tmp_path, monkeypatch) -> None:
    save_pretrained(model, tmp_path / "start")
    calls = []

    def counted(m, record, per_object=False):
        calls.append((record.video_id, per_object))
        return _colour_clips(m, record)

    monkeypatch.setattr(selector_pretraining, "clip_tracklets", counted)
    config = _stage_config(tmp_path, tmp_path / "start")
    config.steps = 2
    pretrain_selector(config, progress=False)
    assert len(calls) == 6 and (tmp_path / "run" / "tracklets.pt").is_file()
    pretrain_selector(config, progress=False)
    assert len(calls) == 6  # read back, not linked again
    config.data.sources[0].synthref.length = 4  # other clips: linked again
    pretrain_selector(config, progress=False)
    assert len(calls) == 10 and not any(per_object for _, per_object in calls)
    config.model.config = {**config.model.config, "loss": {"track_membership": 0.5}}  # labels per named object
    result = pretrain_selector(config, progress=False)
    assert len(calls) == 14 and all(per_object for _, per_object in calls[10:])
    record = result.records[-1]  # the weighted sum of both terms
    assert record["loss"] == pytest.approx(record["track_selection"] + 0.5 * record["track_membership"], rel=1e-5)


def test_stage_refuses_a_model_without_a_reader(tmp_path) -> None:
    plain = build_tiny(seed=0, config=dataclasses.replace(tiny_config(), **TINY), sam_image_size=64)
    save_pretrained(plain, tmp_path / "plain")
    with pytest.raises(SparrowError, match="reads the question"):
        pretrain_selector(_stage_config(tmp_path, tmp_path / "plain"), progress=False)
    config = _stage_config(tmp_path, tmp_path / "plain")
    config.model.config = {"selection_level": "track", "track_reads_question": True}
    config.data.num_vlm_frames = 8
    with pytest.raises(SparrowError, match="num_vlm_frames"):
        pretrain_selector(config, progress=False)


def test_cli_runs_the_stage_whole(tmp_path, capsys) -> None:
    from sparrow.cli import main

    plain = build_tiny(seed=0, config=dataclasses.replace(tiny_config(), **TINY), sam_image_size=64)
    save_pretrained(plain, tmp_path / "plain")
    path = tmp_path / "stage.yaml"
    body = (
        "data: {sources: [{synthref: {seed: 5, size: 64, num_frames: 8, length: 2}}], num_vlm_frames: 4}\n"
        "stage: {name: track_selector}\nsteps: 2\noutput_dir: run\n"
    )
    path.write_text("model: {init: plain, config: {selection_level: track, track_reads_question: true}}\n" + body)
    assert main(["train", "--config", str(path), "--resume", "--quiet"]) == 2
    assert "--resume and --max-steps do not apply" in capsys.readouterr().err
    path.write_text("model: {init: plain}\n" + body)
    assert main(["train", "--config", str(path), "--quiet"]) == 2  # the model's selector does not read
    assert "reads the question" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before any folder was made
