"""`sparrow eval ...` end to end on small fixtures: exit codes, printed figures, report files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from eval_fixtures import T, mevis_split, two_boxes, write_index_sequence, write_pngs

from sparrow.cli import main
from sparrow.data.schema import Expression
from sparrow.output import MARKER


def synthref_like(tmp_path: Path) -> None:
    exps = [
        Expression("0", "the box moving right", [1], tags=["fast", "distractor"], kind="motion"),
        Expression("1", "the still box", [2], tags=["occlusion"], kind="position"),
    ]
    rec = mevis_split(tmp_path, exps)
    a, b = two_boxes()
    drifting = a.copy()
    drifting[4:] = b[4:]
    write_pngs(tmp_path / "pred" / "v1" / "0", drifting, rec.frames)
    write_pngs(tmp_path / "pred" / "v1" / "1", b, rec.frames)


def test_rvos_cli_prints_consistency_by_tag_and_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    synthref_like(tmp_path)
    rep = tmp_path / "report"
    code = main(
        [
            "eval",
            "rvos",
            "--pred",
            str(tmp_path / "pred"),
            "--gt",
            str(tmp_path / "gt"),
            "--format",
            "mevis",
            "--report",
            str(rep),
            "--workers",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "consistency: first-frame IoU 1.0000  identity-switch rate 0.1667" in out
    assert "by tag:" in out and "distractor" in out and "occlusion" in out
    for name in ("report.json", "report.md", "rows.csv", "curves.json", "worst_sequences.png", "tags.png"):
        assert (rep / name).is_file() and (rep / name).stat().st_size > 0, name
    report = json.loads((rep / "report.json").read_text())
    assert report["summary"]["by_tag"]["distractor"]["id_switch"] == pytest.approx(1 / 3)
    assert report["summary"]["n_expressions"] == 2
    assert "| J | F | J&F |" in (rep / "report.md").read_text()
    assert (rep / "worst_sequences.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in rep.iterdir() if p.name.startswith(".")] == [MARKER]  # no temporary files left


def test_rvos_cli_bad_input_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    synthref_like(tmp_path)
    (tmp_path / "pred" / "v1" / "1" / "00002.png").unlink()
    args = ["eval", "rvos", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--format", "mevis"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 predictions missing" in err and "v1/1" in err and "00002.png" in err
    rep = tmp_path / "rep"
    assert main(args + ["--missing", "zero", "--report", str(rep)]) == 0
    assert "missing predictions scored 0 (--missing zero): 1 expressions" in capsys.readouterr().out
    assert "Missing predictions: scored 0 (`--missing zero`" in (rep / "report.md").read_text()
    assert (
        main(["eval", "rvos", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "nowhere"), "--format", "mevis"])
        == 2
    )
    assert "meta_expressions.json: missing annotation file" in capsys.readouterr().err


def test_refdavis_and_davis_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = two_boxes()
    gt = np.zeros((T, *a.shape[1:]), np.uint8)
    gt[a] = 1
    gt[b] = 2
    write_index_sequence(tmp_path / "gt" / "seq", gt)
    for k in range(4):
        write_index_sequence(tmp_path / "pred" / f"anno_{k}" / "seq", gt if k != 3 else np.zeros_like(gt))
    assert (
        main(
            [
                "eval",
                "refdavis",
                "--pred",
                str(tmp_path / "pred"),
                "--gt",
                str(tmp_path / "gt"),
                "--report",
                str(tmp_path / "rep"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "mean of 4 runs: J&F-Mean 0.7500" in out and "anno_3: J&F-Mean 0.0000" in out
    assert "Per annotation run" in (tmp_path / "rep" / "report.md").read_text()
    assert (
        main(
            [
                "eval",
                "rvos",
                "--format",
                "davis",
                "--pred",
                str(tmp_path / "pred" / "anno_0"),
                "--gt",
                str(tmp_path / "gt"),
                "--task",
                "semi-supervised",
            ]
        )
        == 0
    )
    assert "J&F-Mean 1.0000" in capsys.readouterr().out
    write_index_sequence(tmp_path / "pred" / "anno_0" / "seq", (gt > 0).astype(np.uint8) * 255, palette=False)
    assert (
        main(
            [
                "eval",
                "rvos",
                "--format",
                "davis",
                "--pred",
                str(tmp_path / "pred" / "anno_0"),
                "--gt",
                str(tmp_path / "gt"),
            ]
        )
        == 2
    )
    assert "a 0/255 mask is read as object 255" in capsys.readouterr().err


def test_ytvos_pack_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    m = np.zeros((2, 8, 8), bool)
    m[:, 2:4, 2:4] = True
    write_pngs(tmp_path / "pred" / "vid" / "0", m, ["00000", "00001"])
    assert main(["eval", "ytvos-pack", "--pred", str(tmp_path / "pred"), "--out", str(tmp_path / "s.zip")]) == 0
    assert main(["eval", "ytvos-check", "--zip", str(tmp_path / "s.zip")]) == 0
    assert "valid (1 videos, 1 expressions, 2 masks)" in capsys.readouterr().out
    assert main(["eval", "ytvos-check", "--zip", str(tmp_path / "nope.zip")]) == 2


def test_stvg_and_gcg_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt = {
        "v": {
            "frames": [0, 1, 2, 3],
            "span": [0, 4],
            "qtype": "interrogative",
            "boxes": {str(t): [0, 0, 10, 10] for t in range(4)},
        }
    }
    pred = {"v": {"span": [0, 2], "boxes": {str(t): [0, 0, 10, 10] for t in range(4)}}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    assert (
        main(
            [
                "eval",
                "stvg",
                "--pred",
                str(tmp_path / "pred.json"),
                "--gt",
                str(tmp_path / "gt.json"),
                "--report",
                str(tmp_path / "rep"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "m_vIoU 0.5000" in out and "m_tIoU 0.5000" in out and "interrogative:" in out
    assert "By query type" in (tmp_path / "rep" / "report.md").read_text()
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["eval", "stvg", "--pred", str(tmp_path / "bad.json"), "--gt", str(tmp_path / "gt.json")]) == 2
    assert "bad.json: not valid JSON" in capsys.readouterr().err

    from sparrow.data.rle import encode_mask

    m = np.zeros((8, 8), bool)
    m[2:5, 2:5] = True
    entry = {"caption": "a <p>square</p> [SEG]", "phrases": ["a square"], "masks": [[encode_mask(m), None]]}
    (tmp_path / "gcg.json").write_text(json.dumps({"v": entry}))
    assert (
        main(["eval", "gcg", "--pred", str(tmp_path / "gcg.json"), "--gt", str(tmp_path / "gcg.json"), "--no-captions"])
        == 0
    )
    out = capsys.readouterr().out
    assert "mIoU 1.0000" in out and "Recall 1.0000" in out and "CLAIR off" in out


def test_run_ordered_keeps_order_and_propagates_errors() -> None:
    from sparrow.eval.parallel import run_ordered

    assert run_ordered(abs, [-3, 1, -2, -7], workers=2) == [3, 1, 2, 7]
    with pytest.raises(ValueError):
        run_ordered(int, ["1", "x"], workers=2)
