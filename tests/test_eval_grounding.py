"""Ref-YouTube-VOS packing/checking, STVG metrics on hand-made boxes, GCG tube matching."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_fixtures import write_pngs
from PIL import Image

from sparrow.data.rle import encode_mask
from sparrow.errors import SparrowError
from sparrow.eval.gcg import clean_caption, evaluate_gcg, greedy_pairs
from sparrow.eval.stvg import evaluate_stvg, temporal_iou
from sparrow.eval.ytvos import check_submission, pack_submission


# ---------------------------------------------------------------- Ref-YouTube-VOS
def ytvos_pred(root: Path) -> Path:
    m = np.zeros((3, 8, 10), bool)
    m[:, 2:5, 3:7] = True
    for exp in ("0", "1"):
        write_pngs(root / "pred" / "vidA" / exp, m, ["00000", "00005", "00010"])
    meta = {
        "videos": {
            "vidA": {"frames": ["00000", "00005", "00010"], "expressions": {"0": {"exp": "a"}, "1": {"exp": "b"}}}
        }
    }
    (root / "meta.json").write_text(json.dumps(meta))
    return root / "pred"


def test_ytvos_pack_and_check(tmp_path: Path) -> None:
    pred = ytvos_pred(tmp_path)
    counts = pack_submission(pred, tmp_path / "sub.zip", meta=tmp_path / "meta.json")
    assert counts == {"videos": 1, "expressions": 2, "frames": 6}
    with zipfile.ZipFile(tmp_path / "sub.zip") as zf:
        assert min(zf.namelist()) == "Annotations/vidA/0/00000.png" and len(zf.namelist()) == 6
    assert check_submission(tmp_path / "sub.zip", meta=tmp_path / "meta.json") == counts


def test_ytvos_pack_rejects_incomplete_or_rgb(tmp_path: Path) -> None:
    pred = ytvos_pred(tmp_path)
    (pred / "vidA" / "1" / "00010.png").unlink()
    with pytest.raises(SparrowError, match=r"1 masks missing, e.g. vidA/1/00010.png"):
        pack_submission(pred, tmp_path / "sub.zip", meta=tmp_path / "meta.json")
    assert not (tmp_path / "sub.zip").exists()  # nothing half-written
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(pred / "vidA" / "1" / "00010.png")
    with pytest.raises(SparrowError, match=r"00010.png: mask must be single-channel"):
        pack_submission(pred, tmp_path / "sub.zip")
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("vidA/0/00000.png", b"x")
    with pytest.raises(SparrowError, match="is not Annotations/<video>/<exp_id>/<frame>.png"):
        check_submission(bad)


# ---------------------------------------------------------------- STVG
def test_stvg_hand_made_boxes(tmp_path: Path) -> None:
    gt = {
        # GT span [2, 6) on frames 0..7; boxes 10x10
        "v1": {
            "frames": list(range(8)),
            "span": [2, 6],
            "qtype": "declarative",
            "boxes": {str(t): [0, 0, 10, 10] for t in range(2, 6)},
        },
        "v2": {
            "frames": list(range(8)),
            "span": [0, 4],
            "qtype": "interrogative",
            "boxes": {str(t): [0, 0, 10, 10] for t in range(4)},
        },
    }
    pred = {
        # predicted [4, 8): intersection {4, 5}, union {2..7} = 6 frames; box IoU 1 on 4, 5; half-overlap elsewhere
        "v1": {
            "span": [4, 8],
            "boxes": {**{str(t): [0, 0, 10, 10] for t in (4, 5)}, **{str(t): [5, 0, 15, 10] for t in (2, 3)}},
        },
        # exact span, boxes with IoU exactly 0.5 against [0,0,10,10]: [0,0,10,5] -> 50/100
        "v2": {"span": [0, 4], "boxes": {str(t): [0, 0, 10, 5] for t in range(4)}},
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    res = evaluate_stvg(tmp_path / "pred.json", tmp_path / "gt.json")
    rows = {r["video"]: r for r in res["videos"]}
    assert rows["v1"]["tIoU"] == pytest.approx(2 / 6) and rows["v1"]["vIoU"] == pytest.approx(2 / 6)
    assert rows["v1"]["gt_vIoU"] == pytest.approx((1 + 1 + 1 / 3 + 1 / 3) / 4)  # [5,0,15,10] vs [0,0,10,10]: 50/150
    assert rows["v2"]["vIoU"] == pytest.approx(0.5) and rows["v2"]["tIoU"] == 1.0
    g = res["global"]
    assert g["m_vIoU"] == pytest.approx((2 / 6 + 0.5) / 2)
    assert g["vIoU@0.3"] == 1.0 and g["vIoU@0.5"] == 0.0  # 0.5 is not strictly above 0.5
    assert g["by_query_type"]["interrogative"]["gt_vIoU@0.5"] == 0.0
    assert g["by_query_type"]["declarative"]["gt_vIoU@0.5"] == 1.0
    spatial = evaluate_stvg(tmp_path / "pred.json", tmp_path / "gt.json", spatial_only=True)["global"]
    assert set(spatial) == {"n", "m_gt_vIoU", "gt_vIoU@0.3", "gt_vIoU@0.5", "by_query_type"}
    assert temporal_iou((0, 2), (5, 9)) == 0.0
    del pred["v2"]["boxes"]["3"]
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    with pytest.raises(SparrowError, match=r"video v2\): no predicted box on annotated frames \[3\]"):
        evaluate_stvg(tmp_path / "pred.json", tmp_path / "gt.json")


# ---------------------------------------------------------------- GCG
def tube(boxes: list[tuple[int, int, int, int] | None], h: int = 16, w: int = 16) -> list:
    out = []
    for b in boxes:
        if b is None:
            out.append(None)
            continue
        m = np.zeros((h, w), bool)
        m[b[0] : b[1], b[2] : b[3]] = True
        out.append(encode_mask(m))
    return out


def test_gcg_greedy_tube_matching_and_recall(tmp_path: Path) -> None:
    cat = tube([(0, 4, 0, 4), (0, 4, 0, 4)])  # 16 px per frame
    dog = tube([(8, 12, 8, 12), None])
    gt = {"v": {"caption": "a <p>cat</p> [SEG] near a dog", "phrases": ["a cat", "a dog"], "masks": [cat, dog]}}
    pred_cat = tube([(0, 4, 0, 2), (0, 4, 0, 4)])  # 8 + 16 of 32 -> IoU 0.75 with the cat tube
    pred_dog = tube([(8, 12, 8, 10), None])  # 8 of 16 -> IoU 0.5 with the dog tube
    stray = tube([None, (12, 16, 12, 16)])  # matches nothing
    pred = {
        "v": {
            "caption": "a cat and a dog",
            "phrases": ["A cat", "a puppy", "noise"],
            "masks": [pred_cat, pred_dog, stray],
        }
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    res = evaluate_gcg(tmp_path / "pred.json", tmp_path / "gt.json", captions=False)
    assert res["global"]["mIoU"] == pytest.approx((0.75 + 0.5) / 2)
    assert res["global"]["Recall"] == 0.5  # "a puppy" != "a dog" under exact match
    assert any("CLAIR off" in n for n in res["notes"])
    lenient = evaluate_gcg(
        tmp_path / "pred.json",
        tmp_path / "gt.json",
        phrase_similarity=lambda a, b: 1.0,
        captions=False,
        judge=lambda c, r: 0.8,
    )
    assert lenient["global"]["Recall"] == 1.0 and lenient["global"]["CLAIR"] == pytest.approx(0.8)
    assert greedy_pairs(np.array([[0.2, 0.9], [0.8, 0.0]])) == [(0, 1, 0.9), (1, 0, 0.8)]
    assert greedy_pairs(np.zeros((2, 2))) == []
    assert clean_caption("a <p>cat</p> [SEG] [BOX] sits") == "a cat sits"


def test_mean_pooled_phrase_similarity_with_a_local_tiny_encoder(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from sparrow.eval.gcg import mean_pooled_similarity

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "red", "car"]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(tmp_path / "enc")
    cfg = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        initializer_range=1.0,
    )
    BertModel(cfg).save_pretrained(tmp_path / "enc")
    sim = mean_pooled_similarity(tmp_path / "enc")
    assert sim("a cat", "a cat") == pytest.approx(1.0, abs=1e-6)
    # the definition by hand: the mean of the last hidden states over all tokens ([CLS] and [SEP] included), cosine
    tok, enc = BertTokenizerFast.from_pretrained(tmp_path / "enc"), BertModel.from_pretrained(tmp_path / "enc").eval()
    with torch.no_grad():
        pooled = {t: enc(**tok(t, return_tensors="pt")).last_hidden_state[0].mean(0) for t in ("a cat", "red car dog")}
    expected = float(
        torch.dot(pooled["a cat"], pooled["red car dog"]) / (pooled["a cat"].norm() * pooled["red car dog"].norm())
    )
    assert sim("a cat", "red car dog") == pytest.approx(expected, abs=1e-5)
    assert sim("red car dog", "a cat") == pytest.approx(expected, abs=1e-5)
    assert abs(expected) < 0.99  # the two phrases really are different vectors
    with pytest.raises(SparrowError, match="no local encoder model there"):
        mean_pooled_similarity(tmp_path / "missing")
