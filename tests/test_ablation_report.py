"""scripts/ablation_report.py: tables and plots of the ablation rows from their eval reports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("ablation_report", ROOT / "scripts" / "ablation_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(folder: Path, jf: float, id_switch: float, expressions: list[dict] | None = None) -> Path:
    tag = {"n": 3, "J": jf, "F": jf, "J&F": jf, "first_iou": jf / 2, "id_switch": id_switch, "drift": -0.1}
    summary = {
        "J": jf,
        "F": jf,
        "J&F": jf,
        "consistency": {"first_iou": jf / 2, "id_switch": id_switch, "drift": -0.1},
        "by_tag": {"fast": tag},
        "J&F 95% low": jf - 0.05,
        "J&F 95% high": jf + 0.05,
    }
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"summary": summary, "expressions": expressions or []}))
    return folder


def test_tables_and_plots_from_reports(tmp_path, capsys):
    script = _script()
    a, b = _report(tmp_path / "a", 0.25, 0.7), _report(tmp_path / "b", 0.5, 0.125)
    out = tmp_path / "tables.md"
    assert script.main([f"[SEG] only={a}", f"+[BOX]={b}", "--out", str(out), "--plots", str(tmp_path / "img")]) == 0
    text = out.read_text()
    assert "| [SEG] only | 0.250 | [0.200, 0.300] | 0.250 | 0.250 | 0.125 | 0.700 | -0.100 |" in text
    assert "| +[BOX] | 0.500 | [0.450, 0.550] | 0.500 | 0.500 | 0.250 | 0.125 | -0.100 |" in text
    assert "fast (n=3)" in text and text.count("### ") == 5  # overall + 4 per-tag tables
    for name in ("ablation_overall.png", "ablation_tags.png"):
        assert (tmp_path / "img" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert script.main([f"x={tmp_path / 'missing'}", "--out", str(tmp_path / "no.md"), "--plots", str(tmp_path)]) == 1
    assert "missing report" in capsys.readouterr().err and not (tmp_path / "no.md").exists()


def _scores(values: dict[tuple[str, str], float]) -> list[dict]:
    return [{"video": v, "exp_id": e, "J&F": jf} for (v, e), jf in values.items()]


def test_paired_differences_resample_videos(tmp_path, capsys):
    script = _script()
    base = {("v0", "0"): 0.2, ("v0", "1"): 0.4, ("v1", "0"): 0.5, ("v2", "0"): 0.1}
    # B - A per expression: +0.2, +0.2 on v0; +0.1 on v1; -0.1 on v2 -> mean +0.1 over 4 expressions
    better = {("v0", "0"): 0.4, ("v0", "1"): 0.6, ("v1", "0"): 0.6, ("v2", "0"): 0.0}
    a = _report(tmp_path / "a", 0.3, 0.5, _scores(base))
    b = _report(tmp_path / "b", 0.4, 0.5, _scores(better))
    est, low, high = script.paired_difference(*(json.loads((f / "report.json").read_text()) for f in (a, b)))
    assert abs(est - 0.1) < 1e-9 and low < est < high and low >= -0.1 - 1e-9 and high <= 0.2 + 1e-9
    out = tmp_path / "t.md"
    argv = [f"A={a}", f"B={b}", "--out", str(out), "--plots", str(tmp_path / "img"), "--pair", "A=>B"]
    assert script.main(argv) == 0
    assert f"| B vs A | +0.100 | [{low:+.3f}, {high:+.3f}] |" in out.read_text()
    c = _report(tmp_path / "c", 0.4, 0.5, _scores({("v0", "0"): 0.4}))  # scores other expressions
    assert (
        script.main([f"A={a}", f"C={c}", "--out", str(tmp_path / "x.md"), "--plots", str(tmp_path), "--pair", "A=>C"])
        == 1
    )
    assert script.main([f"A={a}", "--out", str(tmp_path / "y.md"), "--plots", str(tmp_path), "--pair", "A=>Z"]) == 1
    err = capsys.readouterr().err
    assert "do not score the same expressions" in err and "is not 'A=>B' with two row labels" in err
    assert not (tmp_path / "x.md").exists() and not (tmp_path / "y.md").exists()
