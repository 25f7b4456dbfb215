"""GCG caption scores (METEOR, CIDEr) through pycocoevalcap, and the notes when the package or Java is missing.

pycocoevalcap 1.2 ships METEOR 1.5 as a jar (needs a Java runtime, e.g. ``apt-get install default-jre-headless``);
METEOR is skipped here when ``java`` is not on PATH, CIDEr always runs. The scores must be those of pycocoevalcap on
the cleaned captions (tags and prompt tokens removed), reference and candidate the right way round.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from sparrow.eval import gcg
from sparrow.eval.gcg import clean_caption, evaluate_gcg

pytest.importorskip("pycocoevalcap", reason="pycocoevalcap (requirements.txt) is not installed")
from pycocoevalcap.cider.cider import Cider

GT = {
    "v1": "a red car drives past the bakery",
    "v2": "the dog sleeps on the sofa",
    "v3": "two people walk along the beach at sunset",
}
PRED = {
    "v1": "<p>a red car</p> [SEG] drives by the bakery",
    "v2": "a cat [BOX] [SEG] sits on the sofa",
    "v3": "two people walk along the beach at sunset",
}


def _files(tmp_path: Path, pred: dict[str, str]) -> tuple[Path, Path]:
    def entry(caption: str) -> dict:
        return {"caption": caption, "phrases": [], "masks": []}

    (tmp_path / "gt.json").write_text(json.dumps({v: entry(c) for v, c in GT.items()}))
    (tmp_path / "pred.json").write_text(json.dumps({v: entry(c) for v, c in pred.items()}))
    return tmp_path / "pred.json", tmp_path / "gt.json"


def test_cider_is_pycocoevalcap_on_the_cleaned_captions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no Java: CIDEr alone, METEOR noted as skipped
    res = evaluate_gcg(*_files(tmp_path, PRED))
    refs = {v: [c] for v, c in GT.items()}
    cands = {v: [clean_caption(c)] for v, c in PRED.items()}
    assert cands["v1"] == ["a red car drives by the bakery"] and cands["v2"] == ["a cat sits on the sofa"]
    expected = float(Cider().compute_score(refs, cands)[0])
    assert res["global"]["CIDEr"] == pytest.approx(expected, abs=1e-9)
    assert float(Cider().compute_score(cands, refs)[0]) != pytest.approx(expected)  # the order matters ...
    assert "METEOR" not in res["global"] and any("needs a Java runtime" in n for n in res["notes"])
    perfect = evaluate_gcg(*_files(tmp_path, GT))["global"]["CIDEr"]
    assert perfect > expected  # ... and exact captions score higher than wrong ones


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs a Java runtime (default-jre-headless)")
def test_meteor_with_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One real METEOR run (about 10-25 s: the jar loads its paraphrase table), its inputs and outputs recorded."""
    from pycocoevalcap.meteor import meteor

    calls = []

    class Recorded(meteor.Meteor):
        def compute_score(self, gts, res):
            out = super().compute_score(gts, res)
            calls.append((gts, res, out))
            return out

    monkeypatch.setattr(meteor, "Meteor", Recorded)
    result = evaluate_gcg(*_files(tmp_path, PRED))
    ((gts, res, (score, per_video)),) = calls
    assert gts == {v: [c] for v, c in GT.items()} and res == {v: [clean_caption(c)] for v, c in PRED.items()}
    assert result["global"]["METEOR"] == pytest.approx(float(score), abs=1e-12)
    assert min(per_video) < float(score) < max(per_video)  # a corpus-level score, not the mean of the sentences
    by_video = dict(zip(gts, per_video))
    assert by_video["v3"] > 0.99 and by_video["v3"] > by_video["v1"] > by_video["v2"] > 0.0  # exact > close > wrong
    assert not any("METEOR" in n for n in result["notes"])


def test_captions_skipped_with_a_note_without_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycocoevalcap.cider.cider", None)  # import fails as if not installed
    res = evaluate_gcg(*_files(tmp_path, PRED))
    assert "METEOR" not in res["global"] and "CIDEr" not in res["global"]
    assert any("pycocoevalcap is not installed" in n for n in res["notes"])
    assert "CIDEr" not in evaluate_gcg(*_files(tmp_path, PRED), captions=False)["global"]
    assert gcg.MAX_CAPTION_CHARS == len(clean_caption("x" * 5000))
