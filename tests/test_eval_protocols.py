"""DAVIS (semi / unsupervised, Hungarian), MeViS union, ReVOS splits and robustness, Ref-DAVIS17 run mean,
consistency metrics, strictness errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from eval_fixtures import H, T, W, mevis_split, two_boxes, write_index_sequence, write_pngs
from PIL import Image

from sparrow.data.schema import Expression
from sparrow.errors import SparrowError
from sparrow.eval.consistency import drift, first_frame_iou, identity_switch_rate, slice_by
from sparrow.eval.davis import evaluate_davis
from sparrow.eval.refdavis import evaluate_refdavis
from sparrow.eval.rvos import evaluate_rvos


# ---------------------------------------------------------------- DAVIS
def davis_fixture(root: Path) -> tuple[Path, np.ndarray]:
    a, b = two_boxes()
    gt = np.zeros((T, H, W), np.uint8)
    gt[a] = 1
    gt[b] = 2
    write_index_sequence(root / "gt" / "seq", gt)
    return root / "gt", gt


def test_davis_unsupervised_hungarian_matches_swapped_labels(tmp_path: Path) -> None:
    gt_dir, gt = davis_fixture(tmp_path)
    pred = np.zeros_like(gt)
    pred[gt == 1] = 2  # labels swapped ...
    pred[gt == 2] = 1
    pred[0:2, 0:3] = 3  # ... plus an extra proposal that matches nothing
    write_index_sequence(tmp_path / "pred" / "seq", pred)
    un = evaluate_davis(tmp_path / "pred", gt_dir, task="unsupervised")
    assert un["global"]["J&F-Mean"] == 1.0 and [o["name"] for o in un["objects"]] == ["seq_1", "seq_2"]
    with pytest.raises(SparrowError, match="object index 3 but the annotation has 2"):
        evaluate_davis(tmp_path / "pred", gt_dir, task="semi-supervised")
    pred[0:2, 0:3] = 0
    write_index_sequence(tmp_path / "pred" / "seq", pred)
    semi = evaluate_davis(tmp_path / "pred", gt_dir, task="semi-supervised")
    assert semi["global"]["J-Mean"] == 0.0  # fixed order: object k against object k


def test_davis_unsupervised_row_order_official_vs_gt(tmp_path: Path) -> None:
    gt_dir, gt = davis_fixture(tmp_path)
    pred = np.zeros_like(gt)
    pred[gt == 1] = 2  # proposal 2 is GT object 1, exactly
    b_rows = np.argwhere(gt[0] == 2)[:, 0]
    pred[:, b_rows.min() : b_rows.min() + 4][gt[:, b_rows.min() : b_rows.min() + 4] == 2] = (
        1  # proposal 1: half of GT 2
    )
    write_index_sequence(tmp_path / "pred" / "seq", pred)
    official = evaluate_davis(tmp_path / "pred", gt_dir, task="unsupervised")
    by_gt = evaluate_davis(tmp_path / "pred", gt_dir, task="unsupervised", object_order="gt")
    # official DAVISEvaluation: row k = k-th matched proposal (here proposal 1 <-> GT 2 first)
    assert [(o["name"], o["proposal"], o["gt_object"]) for o in official["objects"]] == [
        ("seq_1", 1, 2),
        ("seq_2", 2, 1),
    ]
    assert [(o["name"], o["proposal"], o["gt_object"]) for o in by_gt["objects"]] == [("seq_1", 2, 1), ("seq_2", 1, 2)]
    assert official["objects"][0]["J-Mean"] == pytest.approx(0.5) and official["objects"][1]["J-Mean"] == 1.0
    assert official["global"] == by_gt["global"] and official["object_order"] == "official"
    with pytest.raises(SparrowError, match="unknown object order"):
        evaluate_davis(tmp_path / "pred", gt_dir, object_order="proposal")


def test_prediction_headers_are_checked_before_anything_is_scored(tmp_path: Path, monkeypatch) -> None:
    from sparrow.eval import rvos

    rec = mevis_split(tmp_path)
    a, b = two_boxes()
    for exp, mask in (("0", a), ("1", a | b)):
        write_pngs(tmp_path / "pred" / "v1" / exp, mask, rec.frames)
    last = tmp_path / "pred" / "v1" / "1" / f"{rec.frames[-1]}.png"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # truncated: only a full read would notice
    Image.new("L", (W + 1, H)).save(tmp_path / "pred" / "v1" / "1" / f"{rec.frames[2]}.png")
    scored = []
    monkeypatch.setattr(rvos, "score_video", lambda task: scored.append(task) or [])
    with pytest.raises(SparrowError, match=r"mask is 41x24 \(WxH\) but the annotation is 40x24 \(1 more"):
        evaluate_rvos(tmp_path / "pred", tmp_path / "gt")
    assert scored == []
    Image.new("L", (W, H)).save(tmp_path / "pred" / "v1" / "1" / f"{rec.frames[2]}.png")
    with pytest.raises(SparrowError, match=r"unreadable image .*nothing was scored"):
        evaluate_rvos(tmp_path / "pred", tmp_path / "gt")
    gt_dir, gt = davis_fixture(tmp_path / "davis")
    write_index_sequence(tmp_path / "davis" / "pred" / "seq", gt)
    Image.new("RGB", (W, H)).save(tmp_path / "davis" / "pred" / "seq" / "00003.png")
    with pytest.raises(SparrowError, match="an index image .* is required, got mode 'RGB'"):
        evaluate_davis(tmp_path / "davis" / "pred", gt_dir)


def test_davis_semi_drops_first_and_last_frames(tmp_path: Path) -> None:
    gt_dir, gt = davis_fixture(tmp_path)
    pred = gt.copy()
    pred[0] = 0
    pred[-1] = 0
    write_index_sequence(tmp_path / "pred" / "seq", pred)
    semi = evaluate_davis(tmp_path / "pred", gt_dir, task="semi-supervised")
    assert semi["global"]["J&F-Mean"] == 1.0 and len(semi["curves"]["seq_1"]) == T - 2
    un = evaluate_davis(tmp_path / "pred", gt_dir, task="unsupervised")
    assert un["global"]["J-Mean"] == pytest.approx((T - 2) / T)
    assert un["global"]["J-Recall"] == pytest.approx((T - 2) / T)


def test_davis_void_and_object_mean(tmp_path: Path) -> None:
    a, b = two_boxes()
    gt = np.zeros((T, H, W), np.uint8)
    gt[a] = 1
    gt[:, 0:3, 30:40] = 255  # void strip
    write_index_sequence(tmp_path / "gt" / "s1", gt)
    gt2 = np.zeros((T, H, W), np.uint8)
    gt2[b] = 1
    write_index_sequence(tmp_path / "gt" / "s2", gt2)
    p1 = np.where(a, 1, 0).astype(np.uint8)
    p1[:, 0:3, 30:40] = 1  # predicted over void only: not counted
    write_index_sequence(tmp_path / "pred" / "s1", p1)
    write_index_sequence(tmp_path / "pred" / "s2", np.zeros((T, H, W), np.uint8))
    res = evaluate_davis(tmp_path / "pred", tmp_path / "gt", task="unsupervised")
    assert [o["J-Mean"] for o in res["objects"]] == [1.0, 0.0]
    assert res["global"]["J&F-Mean"] == 0.5


def test_davis_rejects_rgb_and_wrong_size_and_missing(tmp_path: Path) -> None:
    gt_dir, gt = davis_fixture(tmp_path)
    write_index_sequence(tmp_path / "pred" / "seq", gt)
    bad = tmp_path / "pred" / "seq" / "00002.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(bad)
    with pytest.raises(SparrowError, match=r"00002.png: an index image .* mode 'RGB'"):
        evaluate_davis(tmp_path / "pred", gt_dir)
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(bad)
    with pytest.raises(SparrowError, match=r"00002.png: mask is 40x25 \(WxH\) but the annotation is 40x24"):
        evaluate_davis(tmp_path / "pred", gt_dir)
    bad.unlink()
    with pytest.raises(SparrowError, match=r"1 predictions missing .*seq \(1 of 6 frames, e.g. 00002.png\)"):
        evaluate_davis(tmp_path / "pred", gt_dir)


def test_refdavis_averages_four_runs(tmp_path: Path) -> None:
    gt_dir, gt = davis_fixture(tmp_path)
    for k in range(4):
        write_index_sequence(tmp_path / "pred" / f"anno_{k}" / "seq", gt if k < 2 else np.zeros_like(gt))
    res = evaluate_refdavis(tmp_path / "pred", gt_dir)
    assert [r["J&F-Mean"] for r in res["runs"].values()] == [1.0, 1.0, 0.0, 0.0]
    assert res["n_runs"] == 4 and res["global"]["J&F-Mean"] == 0.5 and res["global"]["J-Mean"] == 0.5
    import shutil

    shutil.rmtree(tmp_path / "pred" / "anno_3")
    with pytest.raises(SparrowError, match=r"annotation runs \['anno_3'\] are missing"):
        evaluate_refdavis(tmp_path / "pred", gt_dir)
    assert evaluate_refdavis(tmp_path / "pred", gt_dir, require_all=False)["global"]["J&F-Mean"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------- MeViS / ReVOS
def test_mevis_multi_object_union_and_missing_policy(tmp_path: Path) -> None:
    rec = mevis_split(tmp_path)
    a, _b = two_boxes()
    write_pngs(tmp_path / "pred" / "v1" / "0", a, rec.frames)
    write_pngs(tmp_path / "pred" / "v1" / "1", a, rec.frames, scale=1)  # only one of the two referred objects
    res = evaluate_rvos(tmp_path / "pred", tmp_path / "gt", fmt="mevis")
    by_exp = {r["exp_id"]: r for r in res["expressions"]}
    assert by_exp["0"]["J"] == 1.0 and by_exp["0"]["F"] == 1.0
    assert by_exp["1"]["J"] == pytest.approx(48 / 128)  # |a| / |a u b|, every frame
    assert res["summary"]["J"] == pytest.approx((1 + 48 / 128) / 2)
    assert res["summary"]["J&F"] == pytest.approx((res["summary"]["J"] + res["summary"]["F"]) / 2)
    assert res["summary"]["by_tag"]["multi"]["J"] == pytest.approx(48 / 128)

    (tmp_path / "pred" / "v1" / "1" / "00003.png").unlink()
    with pytest.raises(
        SparrowError, match=r"1 predictions missing in 1 of 2 units: v1/1 \(1 of 6 frames, e.g. 00003.png\)"
    ):
        evaluate_rvos(tmp_path / "pred", tmp_path / "gt", fmt="mevis")
    zero = evaluate_rvos(tmp_path / "pred", tmp_path / "gt", fmt="mevis", missing="zero")
    assert zero["missing"] == {"v1/1": 1} and zero["summary"]["n_missing_scored_zero"] == 1
    assert zero["summary"]["J"] == 0.5 and zero["missing_policy"] == "zero"


def test_rvos_wrong_size_names_the_file(tmp_path: Path) -> None:
    rec = mevis_split(tmp_path)
    a, _ = two_boxes()
    write_pngs(tmp_path / "pred" / "v1" / "0", a, rec.frames)
    write_pngs(tmp_path / "pred" / "v1" / "1", a, rec.frames)
    Image.fromarray(np.zeros((H, W + 2), np.uint8)).save(tmp_path / "pred" / "v1" / "1" / "00004.png")
    with pytest.raises(SparrowError, match=r"v1/1/00004.png: mask is 42x24"):
        evaluate_rvos(tmp_path / "pred", tmp_path / "gt", fmt="mevis")
    (tmp_path / "pred" / "v1" / "1" / "00004.png").write_bytes(b"not a png")
    with pytest.raises(SparrowError, match=r"00004.png: unreadable image"):
        evaluate_rvos(tmp_path / "pred", tmp_path / "gt", fmt="mevis")


def test_revos_split_means_and_robustness(tmp_path: Path) -> None:
    exps = [
        Expression("0", "the box moving right", [1], extra={"type_id": 0}),
        Expression("1", "the still box", [2], extra={"type_id": 0}),
        Expression("2", "what would you sit on", [2], extra={"type_id": 1}),
    ]
    rec = mevis_split(tmp_path, exps)
    a, b = two_boxes()
    fp = np.zeros_like(a)
    fp[:, 20:24, 0:5] = True  # 20 false-positive pixels per frame, outside every object
    write_pngs(tmp_path / "pred" / "v1" / "0", a | fp, rec.frames)
    write_pngs(tmp_path / "pred" / "v1" / "1", b, rec.frames)
    write_pngs(tmp_path / "pred" / "v1" / "2", np.zeros_like(b), rec.frames)
    res = evaluate_rvos(tmp_path / "pred", tmp_path / "gt", fmt="revos")
    rows = {r["exp_id"]: r for r in res["expressions"]}
    assert rows["0"]["R"] == pytest.approx(1 - 20 / (48 + 80 + 1e-6))  # foreground = union of the video's objects
    assert rows["0"]["A"] == pytest.approx(1 - 20 / (H * W))
    assert rows["1"]["R"] == 1.0 and rows["2"]["J"] == 0.0 and rows["2"]["A"] == pytest.approx(1 - 80 / (H * W))
    s = res["summary"]
    ref_j = (rows["0"]["J"] + 1.0) / 2
    assert s["splits"]["referring"]["J"] == pytest.approx(ref_j) and s["splits"]["reasoning"]["J"] == 0.0
    assert s["J"] == pytest.approx(ref_j / 2)  # mean of split means, not the pooled mean
    assert s["J"] != pytest.approx((rows["0"]["J"] + 1.0) / 3)
    assert s["J&F"] == pytest.approx((s["splits"]["referring"]["J&F"] + s["splits"]["reasoning"]["J&F"]) / 2)


def test_revos_needs_type_id(tmp_path: Path) -> None:
    mevis_split(tmp_path)
    (tmp_path / "pred").mkdir()
    with pytest.raises(SparrowError, match="ReVOS needs type_id 0 or 1"):
        evaluate_rvos(tmp_path / "pred", tmp_path / "gt", fmt="revos")


# ---------------------------------------------------------------- consistency
def test_consistency_metrics_by_hand() -> None:
    a, b = two_boxes()
    assert identity_switch_rate(b, a, [b]) == 1.0  # the prediction follows the other object everywhere
    mixed = a.copy()
    mixed[3:] = b[3:]
    assert identity_switch_rate(mixed, a, [b]) == 0.5
    assert identity_switch_rate(a, a, []) == 0.0
    j = np.array([1.0, 1.0, 0.8, 0.6, 0.2, 0.0, 0.0, 0.0])
    assert drift(j) == pytest.approx(0.0 - 1.0)  # last 2 frames minus first 2
    late = np.zeros_like(a)
    late[2:] = a[2:]
    assert first_frame_iou(np.array([1.0, 1.0, 0.3, 1, 1, 1]), late) == 0.3
    rows = [{"tags": ["occlusion", "fast"], "J": 1.0}, {"tags": ["fast"], "J": 0.5}, {"tags": [], "J": 0.0}]
    sl = slice_by(rows, "tags", ["J"])
    assert sl == {"fast": {"n": 2, "J": 0.75}, "occlusion": {"n": 1, "J": 1.0}}


def test_rvos_reports_consistency_on_tagged_split(tmp_path: Path) -> None:
    exps = [Expression("0", "the box moving right", [1], tags=["distractor"], kind="motion")]
    rec = mevis_split(tmp_path, exps)
    a, b = two_boxes()
    switched = a.copy()
    switched[4:] = b[4:]  # follows the distractor in the last 2 of 6 frames
    write_pngs(tmp_path / "pred" / "v1" / "0", switched, rec.frames)
    s = evaluate_rvos(tmp_path / "pred", tmp_path / "gt", fmt="mevis")["summary"]
    assert s["consistency"]["id_switch"] == pytest.approx(2 / 6)
    assert s["consistency"]["first_iou"] == 1.0
    assert s["consistency"]["drift"] == pytest.approx(0.0 - 1.0)  # quarter = 1 frame: last J 0, first J 1
    assert s["by_tag"]["distractor"]["id_switch"] == pytest.approx(2 / 6)
    assert s["by_kind"]["motion"]["n"] == 1
    assert json.dumps(s)  # serialisable


def test_revos_uses_the_foreground_file_when_present(tmp_path: Path) -> None:
    from sparrow.data.rle import encode_mask

    exps = [Expression("0", "the box moving right", [1], extra={"type_id": 0})]
    rec = mevis_split(tmp_path, exps)
    a, _b = two_boxes()
    fp = np.zeros_like(a)
    fp[:, 20:24, 0:5] = True  # 20 false-positive pixels per frame
    write_pngs(tmp_path / "pred" / "v1" / "0", a | fp, rec.frames)
    fg = {"v1": {"masks_rle": [encode_mask(m) for m in a]}}  # foreground = object a only (48 px)
    (tmp_path / "gt" / "mask_dict_foreground.json").write_text(json.dumps(fg))
    res = evaluate_rvos(tmp_path / "pred", tmp_path / "gt", fmt="revos")
    assert res["expressions"][0]["R"] == pytest.approx(1 - 20 / (48 + 1e-6))
    assert "reasoning" not in res["summary"]["splits"] and res["summary"]["J"] == pytest.approx(48 / 68)
    (tmp_path / "gt" / "mask_dict_foreground.json").write_text(json.dumps({"other": {"masks_rle": []}}))
    with pytest.raises(SparrowError, match="mask_dict_foreground.json: no foreground masks for video v1"):
        evaluate_rvos(tmp_path / "pred", tmp_path / "gt", fmt="revos")


def test_revos_reference_rounding_switch() -> None:
    from sparrow.eval.rvos import aggregate

    rows = [
        {
            "type_id": 0,
            "J": 1 / 3,
            "F": 2 / 3,
            "A": 0.123456,
            "R": 1.0,
            "first_iou": 1.0,
            "id_switch": 0.0,
            "drift": 0.0,
            "missing": 0,
        },
        {
            "type_id": 1,
            "J": 0.5,
            "F": 0.5,
            "A": 0.5,
            "R": 0.5,
            "first_iou": 1.0,
            "id_switch": 0.0,
            "drift": 0.0,
            "missing": 0,
        },
    ]
    exact = aggregate(rows, "revos")
    rounded = aggregate(rows, "revos", revos_rounding=True)
    assert exact["splits"]["referring"]["J"] == pytest.approx(1 / 3, abs=1e-12)
    assert rounded["splits"]["referring"]["J"] == pytest.approx(0.3333, abs=1e-12)
    assert rounded["A"] == pytest.approx((0.1235 + 0.5) / 2, abs=1e-12)


def test_davis_long_sequence_flags_legacy_decay(tmp_path: Path) -> None:
    n = 400
    gt = np.zeros((n, 6, 8), np.uint8)
    gt[:, 1:4, 2:6] = 1
    pred = gt.copy()
    pred[101:] = 0  # right for the first 101 frames, then lost
    write_index_sequence(tmp_path / "gt" / "long", gt)
    write_index_sequence(tmp_path / "pred" / "long", pred)
    right = evaluate_davis(tmp_path / "pred", tmp_path / "gt")
    legacy = evaluate_davis(tmp_path / "pred", tmp_path / "gt", legacy_decay=True)
    assert right["global"]["J-Decay"] == pytest.approx(1.0)  # first quarter all 1, last quarter all 0
    assert legacy["global"]["J-Decay"] == pytest.approx(1.0 - 58 / 101)  # the uint8 bins wrap to frames 43..143
    assert right["legacy_decay_differs"] == ["long_1"] and right["global"]["J-Mean"] == pytest.approx(101 / n)
