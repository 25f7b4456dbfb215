"""``sparrow curate`` on a mixture of three fixture sources (LaSOT boxes, Ref-YouTube-VOS PNG masks, the curated
layout): SAM2 masks from boxes, per-source statistics, retries, and a run killed midway that resumes without
redoing finished items (local vs Ray: tests/test_curate_ray.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import reader_fixtures as fx
from tsf_fixtures import tiny_sam2_video

from sparrow.data.mevis import read_mevis
from sparrow.engine import EngineOptions, run_items
from sparrow.errors import SparrowError
from sparrow.tsf.cache import read_tsf_cache
from sparrow.tsf.curate import curate, load_mixture


def _mixture(tmp: Path, sam2: bool = True, k: int = 2) -> Path:
    fx.lasot(tmp / "lasot")
    fx.refvos(tmp / "ytvos")
    fx.curated(tmp / "curated")
    if sam2:
        tiny_sam2_video(tmp / "sam2")
    cfg = {
        "sources": [
            {"name": "curated", "format": "curated", "root": "curated", "split": "train"},
            {"name": "ytvos", "format": "refytvos", "root": "ytvos", "split": "train", "max_videos": 1},
            {"name": "lasot", "format": "lasot", "root": "lasot", "split": "train"},
        ],
        "tsf": {"k": k, "max_candidates": 8},
        "masks": "sam2" if sam2 else "none",
        **({"sam2_model": "sam2"} if sam2 else {}),
    }
    path = tmp / "mixture.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _files(root: Path) -> dict[str, bytes]:
    out = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return {k: v for k, v in out.items() if k.startswith(("dataset/", "tsf/", "manifest.json"))}


def test_local_run_writes_curated_dataset_with_manifest(tmp_path):
    config = load_mixture(_mixture(tmp_path))
    stats = curate(config, tmp_path / "out")
    assert (stats.ok, stats.failed, stats.skipped) == (6, 0, 0)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    src = manifest["sources"]
    assert [src[s]["videos"] for s in ("curated", "ytvos", "lasot")] == [3, 1, 2]
    assert src["lasot"]["masks"] == {"annotation": 0, "sam2": 2, "none": 0}  # box-only: SAM2 from boxes
    assert src["ytvos"]["masks"]["annotation"] == 2 and src["ytvos"]["tsf"]["ok"] == 2
    assert manifest["totals"]["videos"] == 6 and manifest["failed"] == []
    records = read_mevis(tmp_path / "out" / "dataset")
    assert [r.video_id for r in records][:2] == ["curated/seq_a/00", "curated/seq_a/01"]
    lasot = next(r for r in records if r.video_id == "lasot/car-1")
    assert lasot.objects[next(iter(lasot.objects))].attributes["mask_source"] == "sam2"
    assert lasot.load_frames([0]).shape == (1, 24, 32, 3)
    cache = read_tsf_cache(tmp_path / "out" / "tsf")
    assert len(cache) == sum(len(r.expressions) for r in records)
    entry = cache[("ytvos/vid_a", "0")]
    assert entry.status == "ok" and len(entry.entries) == 2  # k = 2 medoids
    assert stats.seconds < 60


def _flaky(path: str) -> str:
    marker = Path(path)
    if not marker.exists():
        marker.write_text("tried")
        raise OSError("transient failure")
    return marker.read_text()


def _data_error(path: str) -> str:
    raise SparrowError("bad data", path)


def test_engine_retries_transient_failures_not_data_errors(tmp_path):
    results = run_items(_flaky, [str(tmp_path / "a"), str(tmp_path / "b")], EngineOptions(retries=1))
    assert [(r.status, r.attempts, r.value) for r in results] == [("ok", 2, "tried")] * 2
    (fail,) = run_items(_flaky, [str(tmp_path / "c")], EngineOptions(retries=0))
    assert fail.status == "failed" and "OSError: transient failure" in fail.reason
    (bad,) = run_items(_data_error, [str(tmp_path / "d")], EngineOptions(retries=3))
    assert (bad.status, bad.attempts) == ("failed", 1) and "bad data" in bad.reason
    with pytest.raises(SparrowError, match="unknown engine"):
        run_items(_flaky, [], EngineOptions(engine="spark"))


def test_killed_run_resumes_without_redoing_finished_items(tmp_path):
    config_path = _mixture(tmp_path, sam2=False)
    frame = tmp_path / "lasot" / "dog" / "dog-1" / "img" / "00000004.jpg"  # the last item reads it for its crops
    saved = frame.read_bytes()
    frame.unlink()
    os.mkfifo(frame)  # opening it blocks: the run hangs inside the last item
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparrow", "curate", "--config", str(config_path), "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    items = out / "work" / "items"
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(list(items.rglob("*.json"))) < 5:
            time.sleep(0.1)
        time.sleep(0.3)
        assert proc.poll() is None  # still hanging in the last item
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    done = {p: p.stat().st_mtime_ns for p in items.rglob("*.json")}
    assert len(done) == 5 and not (out / "manifest.json").exists()
    frame.unlink()
    frame.write_bytes(saved)
    stats = curate(load_mixture(config_path), out)
    assert (stats.ok, stats.skipped, stats.failed) == (1, 5, 0)
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # finished items untouched
    fresh = curate(load_mixture(config_path), tmp_path / "fresh")
    assert fresh.ok == 6
    assert _files(out) == _files(tmp_path / "fresh")


def test_bad_mixture_configs(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("sources: []\n")
    with pytest.raises(SparrowError, match="non-empty 'sources'"):
        load_mixture(path)
    path.write_text("sources: [{name: a, format: nope, root: .}]\n")
    with pytest.raises(SparrowError, match="unknown format 'nope'"):
        load_mixture(path)
    path.write_text("sources: [{name: a, format: lasot, root: .}]\ntsf: {kk: 3}\n")
    with pytest.raises(SparrowError, match="tsf:"):
        load_mixture(path)
