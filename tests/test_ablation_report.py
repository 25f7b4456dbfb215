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


def _report(folder: Path, jf: float, id_switch: float) -> Path:
    tag = {"n": 3, "J": jf, "F": jf, "J&F": jf, "first_iou": jf / 2, "id_switch": id_switch, "drift": -0.1}
    summary = {
        "J": jf,
        "F": jf,
        "J&F": jf,
        "consistency": {"first_iou": jf / 2, "id_switch": id_switch, "drift": -0.1},
        "by_tag": {"fast": tag},
    }
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"summary": summary}))
    return folder


def test_tables_and_plots_from_reports(tmp_path, capsys):
    script = _script()
    a, b = _report(tmp_path / "a", 0.25, 0.7), _report(tmp_path / "b", 0.5, 0.125)
    out = tmp_path / "tables.md"
    assert script.main([f"[SEG] only={a}", f"+[BOX]={b}", "--out", str(out), "--plots", str(tmp_path / "img")]) == 0
    text = out.read_text()
    assert "| [SEG] only | 0.250 | 0.250 | 0.250 | 0.125 | 0.700 | -0.100 |" in text
    assert "| +[BOX] | 0.500 | 0.500 | 0.500 | 0.250 | 0.125 | -0.100 |" in text
    assert "fast (n=3)" in text and text.count("### ") == 5  # overall + 4 per-tag tables
    for name in ("ablation_overall.png", "ablation_tags.png"):
        assert (tmp_path / "img" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert script.main([f"x={tmp_path / 'missing'}", "--out", str(tmp_path / "no.md"), "--plots", str(tmp_path)]) == 1
    assert "missing report" in capsys.readouterr().err and not (tmp_path / "no.md").exists()
