"""`sparrow eval rvos` flags that had no CLI test: --format revos (with --revos-rounding), --format ytvos and
--legacy-decay (DAVIS and Ref-DAVIS), each checked against figures worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from eval_fixtures import H, W, mevis_split, two_boxes, write_index_sequence, write_pngs

from sparrow.cli import main
from sparrow.data.schema import Expression
from sparrow.eval.metrics import region_and_boundary


def _rvos(tmp_path: Path, fmt: str, *extra: str) -> dict:
    report = tmp_path / f"report_{fmt}_{len(extra)}"
    args = ["eval", "rvos", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--format", fmt]
    assert main([*args, "--report", str(report), *extra]) == 0
    return json.loads((report / "report.json").read_text())


def test_revos_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    exps = [
        Expression("0", "the box moving right", [1], extra={"type_id": 0}),
        Expression("1", "the still box", [2], extra={"type_id": 0}),
        Expression("2", "what would you sit on", [2], extra={"type_id": 1}),
    ]
    rec = mevis_split(tmp_path, exps)
    a, b = two_boxes()
    fp = np.zeros_like(a)
    fp[:, 20:24, 0:5] = True  # 20 false positives per frame outside every object; a has 48 pixels
    write_pngs(tmp_path / "pred" / "v1" / "0", a | fp, rec.frames)
    write_pngs(tmp_path / "pred" / "v1" / "1", b, rec.frames)
    write_pngs(tmp_path / "pred" / "v1" / "2", np.zeros_like(b), rec.frames)
    rep = _rvos(tmp_path, "revos")
    out = capsys.readouterr().out
    s = rep["summary"]
    referring_j = (48 / 68 + 1.0) / 2
    assert s["splits"]["referring"]["J"] == pytest.approx(referring_j) and s["splits"]["reasoning"]["J"] == 0.0
    assert s["J"] == pytest.approx(referring_j / 2)  # overall = mean of the two split means
    r0 = 1 - 20 / (48 + 80 + 1e-6)  # robustness: false positives over the foreground (both objects)
    assert s["splits"]["referring"]["R"] == pytest.approx((r0 + 1.0) / 2)
    assert s["A"] == pytest.approx(((1 - 20 / (H * W) + 1.0) / 2 + 1 - 80 / (H * W)) / 2)
    assert f"revos: J&F {s['J&F']:.4f}  J {s['J']:.4f}" in out
    assert f"  A {s['A']:.4f}  R {s['R']:.4f}  (overall = mean of the split means)" in out
    assert "referring" in out and "reasoning" in out
    rounded = _rvos(tmp_path, "revos", "--revos-rounding")["summary"]
    assert rounded["revos_rounding"] is True and s["revos_rounding"] is False
    assert rounded["splits"]["referring"]["J"] == pytest.approx((round(100 * 48 / 68, 2) / 100 + 1) / 2, abs=1e-12)


def test_ytvos_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rec = mevis_split(tmp_path)  # expression 0: object a; expression 1: a and b
    a, b = two_boxes()
    write_pngs(tmp_path / "pred" / "v1" / "0", a, rec.frames)
    write_pngs(tmp_path / "pred" / "v1" / "1", b, rec.frames)  # half the target: b only
    rep = _rvos(tmp_path, "ytvos")
    out = capsys.readouterr().out
    s = rep["summary"]
    assert rep["protocol"] == "ytvos" and "A" not in s and "splits" not in s
    _, f_half = region_and_boundary(b, a | b)
    assert s["J"] == pytest.approx((1.0 + 80 / 128) / 2)  # means over expressions
    assert s["F"] == pytest.approx((1.0 + float(f_half.mean())) / 2)
    assert s["J&F"] == pytest.approx((s["J"] + s["F"]) / 2)
    assert f"ytvos: J&F {s['J&F']:.4f}  J {s['J']:.4f}  F {s['F']:.4f}  (2 expressions)" in out
    assert "  A " not in out


def _long_davis(root: Path) -> None:
    n = 400  # decay bins past 256 frames: the toolkit's uint8 edges wrap
    gt = np.zeros((n, 6, 8), np.uint8)
    gt[:, 1:4, 2:6] = 1
    pred = gt.copy()
    pred[101:] = 0  # right for the first 101 frames, then lost
    write_index_sequence(root / "gt" / "long", gt)
    for k in range(4):
        write_index_sequence(root / "pred" / f"anno_{k}" / "long", pred)


def test_legacy_decay_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _long_davis(tmp_path)
    base = [
        "eval",
        "rvos",
        "--format",
        "davis",
        "--pred",
        str(tmp_path / "pred" / "anno_0"),
        "--gt",
        str(tmp_path / "gt"),
    ]
    assert main(base) == 0
    right = capsys.readouterr().out
    assert main([*base, "--legacy-decay"]) == 0
    legacy = capsys.readouterr().out
    assert "J-Decay 1.0000" in right and "F-Decay 1.0000" in right
    assert f"J-Decay {1 - 58 / 101:.4f}" in legacy  # the wrapped last bin covers frames 43..143
    assert "note: legacy (uint8) decay differs for 1 objects" in right
    ref = ["eval", "refdavis", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    assert main([*ref, "--report", str(tmp_path / "rep_right")]) == 0
    assert main([*ref, "--legacy-decay", "--report", str(tmp_path / "rep_legacy")]) == 0
    capsys.readouterr()
    right_rep = json.loads((tmp_path / "rep_right" / "report.json").read_text())
    legacy_rep = json.loads((tmp_path / "rep_legacy" / "report.json").read_text())
    assert right_rep["global"]["J-Decay"] == pytest.approx(1.0) and right_rep["global"]["J-Mean"] == pytest.approx(
        101 / 400
    )
    assert legacy_rep["global"]["J-Decay"] == pytest.approx(1 - 58 / 101)
    assert legacy_rep["global"]["F-Decay"] == pytest.approx(1 - 58 / 101)
    assert right_rep["legacy_decay_differs"] and legacy_rep["global"]["J-Mean"] == right_rep["global"]["J-Mean"]
