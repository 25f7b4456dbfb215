"""``sparrow curate --engine ray`` (a local Ray instance, 2 workers) gives the same curated dataset as the local engine."""

from __future__ import annotations

import shutil
import tempfile

import pytest
from test_curate import _files, _mixture

from sparrow.engine import EngineOptions
from sparrow.tsf.curate import curate, load_mixture


def test_local_and_ray_give_the_same_dataset(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'sparrow-video[ray]')")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    config = load_mixture(_mixture(tmp_path, sam2=False))
    local = curate(config, tmp_path / "local")
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    try:
        options = EngineOptions(
            engine="ray", workers=2, ray_init={"object_store_memory": 100 * 2**20, "_temp_dir": ray_tmp}
        )
        remote = curate(config, tmp_path / "ray", options)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert (local.ok, remote.ok, remote.failed) == (6, 6, 0)
    a, b = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert a.keys() == b.keys() and len(a) > 30
    assert [k for k in a if a[k] != b[k]] == []
