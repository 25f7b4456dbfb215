"""`sparrow tsf build` / `sparrow tsf show` end to end on a small MeViS-layout fixture."""

from __future__ import annotations

import json

import numpy as np
from tsf_fixtures import write_mevis_fixture

from sparrow.cli import main
from sparrow.output import MARKER
from sparrow.tsf.cache import read_tsf_cache, shard_file_name


def test_cli_build_show_and_shards(tmp_path, capsys) -> None:
    split = write_mevis_fixture(tmp_path / "data", n_videos=3, T=8)
    out = tmp_path / "cache"
    assert main(["tsf", "build", "--data", str(split), "--out", str(out), "--k", "3", "--no-progress"]) == 0
    assert "6 ok, 0 failed, 0 already done" in capsys.readouterr().out
    cache = read_tsf_cache(out)
    assert len(cache) == 6 and all(r.status == "ok" and len(r.entries) == 3 for r in cache.values())

    assert main(["tsf", "build", "--data", str(split), "--out", str(out), "--k", "3", "--no-progress"]) == 0
    assert "0 ok, 0 failed, 6 already done" in capsys.readouterr().out

    sharded = tmp_path / "sharded"
    for i in range(2):
        assert (
            main(
                [
                    "tsf",
                    "build",
                    "--data",
                    str(split),
                    "--out",
                    str(sharded),
                    "--k",
                    "3",
                    "--shard",
                    f"{i}/2",
                    "--no-progress",
                ]
            )
            == 0
        )
    assert sorted(p.name for p in sharded.iterdir()) == [MARKER, shard_file_name(0, 2), shard_file_name(1, 2)]
    assert read_tsf_cache(sharded) == cache
    capsys.readouterr()

    assert main(["tsf", "show", str(sharded)]) == 0
    text = capsys.readouterr().out
    assert "2 shard file(s), 6 records" in text and "ok       6" in text and "ok from annotation: 6" in text
    assert main(["tsf", "show", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] == 6 and summary["status"] == {"ok": 6}

    assert (
        main(
            [
                "tsf",
                "build",
                "--data",
                str(split),
                "--out",
                str(tmp_path / "t"),
                "--tracker",
                "csrt",
                "--always-track",
                "--k",
                "2",
                "--limit",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    tracked = read_tsf_cache(tmp_path / "t")
    assert len(tracked) == 2 and {r.source for r in tracked.values()} == {"tracked"}


def test_cli_errors_are_one_line(tmp_path, capsys) -> None:
    split = write_mevis_fixture(tmp_path / "data", n_videos=1, T=4)
    base = ["tsf", "build", "--data", str(split), "--out", str(tmp_path / "c"), "--no-progress"]
    assert main(base + ["--detector", "gdino", "--tracker", "csrt"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--detector-model" in err and "grounding-dino" in err and "\n" not in err
    assert main(base + ["--tracker", "sam2", "--sam2-model", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert "sam2" in err and "download" in err and "\n" not in err
    assert main(base + ["--shard", "2/2"]) == 2
    assert "shard" in capsys.readouterr().err
    assert (
        main(["tsf", "build", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    )
    assert "meta_expressions.json" in capsys.readouterr().err
    assert main(["tsf", "build", *base[2:], "--k", "4"]) == 0
    assert main(["tsf", "build", *base[2:], "--k", "2"]) == 2
    assert "k=4" in capsys.readouterr().err
    assert not list((tmp_path / "c").glob(".*.tmp"))
    assert main(["tsf", "show", str(tmp_path / "missing")]) == 2


def test_cli_release_style_baseline_options(tmp_path, capsys) -> None:
    """The release's variant: GT boxes, 16 evenly spaced frames, linspace init, appearance only."""
    split = write_mevis_fixture(tmp_path / "data", n_videos=1, T=20)
    args = ["--data", str(split), "--k", "4", "--max-candidates", "16", "--kmeans-init", "linspace"]
    args += ["--geometry-weight", "0", "--no-progress"]
    for out in ("a", "b"):
        assert main(["tsf", "build", *args, "--out", str(tmp_path / out)]) == 0
    a, b = read_tsf_cache(tmp_path / "a"), read_tsf_cache(tmp_path / "b")
    assert a == b and len(a) == 2
    candidates = {round(x) for x in np.linspace(0, 19, 16)}
    for rec in a.values():
        assert len(rec.entries) == 4 and {e.frame for e in rec.entries} <= candidates


def test_cli_retry_failed_redoes_only_the_failed_records(tmp_path, capsys) -> None:
    split = write_mevis_fixture(tmp_path / "data", n_videos=2, T=8)
    frame = sorted((split / "JPEGImages" / "vid1").iterdir())[3]
    saved = frame.read_bytes()
    frame.unlink()  # vid1 cannot be decoded: both of its expressions fail, vid0's succeed
    base = ["tsf", "build", "--data", str(split), "--out", str(tmp_path / "c"), "--k", "3", "--no-progress"]
    assert main(base) == 0
    assert "2 ok, 2 failed, 0 already done" in capsys.readouterr().out
    first = read_tsf_cache(tmp_path / "c")
    failed = sorted(k for k, r in first.items() if r.status == "failed")
    assert failed == [("vid1", "0"), ("vid1", "1")] and all(frame.name in first[k].reason for k in failed)

    frame.write_bytes(saved)
    assert main(base) == 0  # without the flag a failure is a result: nothing is redone
    assert "0 ok, 0 failed, 4 already done" in capsys.readouterr().out
    assert read_tsf_cache(tmp_path / "c") == first

    assert main([*base, "--retry-failed"]) == 0
    assert "2 ok, 0 failed, 2 already done" in capsys.readouterr().out
    again = read_tsf_cache(tmp_path / "c")
    assert all(r.status == "ok" and len(r.entries) == 3 for r in again.values())
    assert {k: again[k] for k in first if k not in failed} == {k: first[k] for k in first if k not in failed}
    assert main([*base, "--retry-failed"]) == 0  # nothing failed any more: nothing to redo
    assert "0 ok, 0 failed, 4 already done" in capsys.readouterr().out
