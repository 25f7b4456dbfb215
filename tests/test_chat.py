"""`sparrow chat`: two turns on the demo clip with the bundled model, masks for the grounded answers, GCG output
that `sparrow eval gcg` reads; the conversation layout of the VLM; phrase grounding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparrow.cli import main
from sparrow.pipeline.chat import grounded_phrases


@pytest.fixture(scope="module")
def demo_clip(tmp_path_factory):
    from sparrow.data.synthref.generate import SynthConfig, make_video
    from sparrow.data.video_io import write_video

    record, frames = make_video("test", 0, 0, SynthConfig(size=128, num_frames=24))
    path = write_video(tmp_path_factory.mktemp("demo") / "demo.mp4", frames, fps=8)
    return path, record


def test_two_turns_on_the_demo_clip_with_masks_and_gcg(demo_clip, tmp_path, capsys):
    path, record = demo_clip
    expression = record.expressions[0]
    out = tmp_path / "chat"
    argv = [
        "chat",
        str(path),
        "-q",
        "What is in this video?",
        "-q",
        f"Can you segment {expression.text} in this video?",
        "--out",
        str(out),
        "--mode",
        "perframe",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Q2: Can you segment" in printed and "mask for" in printed
    doc = json.loads((out / "chat.json").read_text())
    assert [t["question"] for t in doc["turns"]] == [
        "What is in this video?",
        f"Can you segment {expression.text} in this video?",
    ]
    second = doc["turns"][1]
    assert "[SEG]" in second["answer"] and len(second["targets"]) == second["answer"].count("[SEG]") >= 1
    frames = second["targets"][0]["frames"]
    assert len(frames) == 24 and any(f["rle"] for f in frames)
    # The bundled model finds the target: mean IoU of the second turn's mask against the generated ground truth.
    from sparrow.data.rle import decode_rle

    truth = record.target_masks(expression)
    pred = np.stack([decode_rle(f["rle"], (128, 128)) if f["rle"] else np.zeros((128, 128), bool) for f in frames])
    union = (pred | truth).sum((1, 2))
    iou = np.where(union > 0, (pred & truth).sum((1, 2)) / np.maximum(union, 1), 1.0).mean()
    assert iou > 0.3, iou
    gcg = doc["gcg"]["demo"]
    assert gcg["phrases"] == second["phrases"] and len(gcg["masks"]) == len(gcg["phrases"])
    # GCG entry scored against itself with the project's scorer: a perfect tube match.
    from sparrow.eval.gcg import evaluate_gcg

    (tmp_path / "pred.json").write_text(json.dumps(doc["gcg"]))
    scores = evaluate_gcg(tmp_path / "pred.json", tmp_path / "pred.json", captions=False)["global"]
    assert scores["mIoU"] == pytest.approx(1.0) and scores["Recall"] == pytest.approx(1.0)


def test_history_is_encoded_as_earlier_turns():
    from sparrow.model.loading import build_tiny
    from sparrow.model.vlm_qwen2_5 import VLMSample

    vlm = build_tiny().vlm
    frames = np.zeros((2, 28, 28, 3), np.uint8)
    one = vlm.collate([VLMSample(frames, "Q2?")]).input_ids[0]
    two = vlm.collate([VLMSample(frames, "Q2?", history=(("Q1?", "A1 [BOX] [SEG]."),))]).input_ids[0]
    text = vlm.tokenizer.decode(two)
    assert text.count("<|im_start|>user") == 2 and text.count("<|im_start|>assistant") == 2
    assert text.index("Q1?") < text.index("A1") < text.index("Q2?") and text.endswith("<|im_start|>assistant\n")
    assert len(two) > len(one) and vlm.tokenizer.decode(one).count("<|im_start|>user") == 1


@pytest.mark.parametrize(
    ("answer", "question", "phrases"),
    [
        ("Sure, [BOX] [SEG].", "Where is the red car?", ["Where is the red car?"]),
        ("A <p>red car</p> [BOX] [SEG] passes a <p>bakery</p> [SEG].", "Describe.", ["red car", "bakery"]),
        ("The man [SEG] holds the dog [BOX] [SEG]", "q", ["The man", "holds the dog"]),
    ],
)
def test_grounded_phrases(answer, question, phrases):
    assert grounded_phrases(answer, question) == phrases
