"""The TSF cache: round trip, torn last line, strict parsing, resume header checks, merging shards."""

from __future__ import annotations

import pytest

from sparrow.errors import SparrowError
from sparrow.tsf.cache import (
    ShardWriter,
    TSFEntry,
    TSFRecord,
    cache_summary,
    read_shard,
    read_tsf_cache,
    shard_file_name,
)

HEADER = {"k": 2, "detector": "gt", "tracker": "gt", "shard": [0, 1]}


def _records() -> list[TSFRecord]:
    return [
        TSFRecord(
            "v0",
            "0",
            "ok",
            [TSFEntry(1, (1.5, 2.0, 10.25, 20.0)), TSFEntry(7, (0.0, 0.0, 3.0, 4.0))],
            source="annotation",
            num_frames=9,
        ),
        TSFRecord("v0", "1", "failed", reason="empty track: the target is in no frame", num_frames=9),
        TSFRecord("v1", "0", "ok", [TSFEntry(0, (5.0, 5.0, 6.0, 7.0))], source="tracked", num_frames=3),
    ]


def test_round_trip(tmp_path) -> None:
    path = tmp_path / shard_file_name(0, 1)
    with ShardWriter(path, HEADER) as writer:
        assert writer.done == set()
        for rec in _records():
            writer.write(rec)
    got = read_tsf_cache(tmp_path)
    assert got == {r.key: r for r in _records()}
    assert read_tsf_cache(path) == got
    header, _, _ = read_shard(path)
    assert header["k"] == 2 and header["format"] == "sparrow-tsf"
    summary = cache_summary(got)
    assert summary["status"] == {"ok": 2, "failed": 1} and summary["source"] == {"annotation": 1, "tracked": 1}
    assert summary["reasons"] == [("empty track: the target is in no frame", 1)]


def test_torn_last_line_is_skipped_and_cut_on_resume(tmp_path) -> None:
    path = tmp_path / shard_file_name(0, 1)
    recs = _records()
    with ShardWriter(path, HEADER) as writer:
        writer.write(recs[0])
    with open(path, "a") as handle:
        handle.write('{"video": "v0", "exp": "1", "sta')  # killed mid-line
    assert set(read_tsf_cache(path)) == {recs[0].key}
    with ShardWriter(path, HEADER) as writer:
        assert writer.done == {recs[0].key}
        writer.write(recs[1])
    assert read_tsf_cache(path) == {recs[0].key: recs[0], recs[1].key: recs[1]}
    assert path.read_text().count("\n") == 3 and "sta\n" not in path.read_text()


def test_retry_failed_redoes_only_failed_keys(tmp_path) -> None:
    path = tmp_path / shard_file_name(0, 1)
    recs = _records()
    with ShardWriter(path, HEADER) as writer:
        for rec in recs:
            writer.write(rec)
    with ShardWriter(path, HEADER, retry_failed=True) as writer:
        assert writer.done == {recs[0].key, recs[2].key}
        fixed = TSFRecord("v0", "1", "ok", [TSFEntry(2, (1.0, 1.0, 4.0, 4.0))], source="annotation", num_frames=9)
        writer.write(fixed)
    assert read_tsf_cache(path)[("v0", "1")] == fixed  # the later line wins


def test_bad_files_raise_one_line_errors(tmp_path) -> None:
    path = tmp_path / shard_file_name(0, 1)
    with ShardWriter(path, HEADER) as writer:
        writer.write(_records()[0])
    with pytest.raises(SparrowError, match="k=2"):
        ShardWriter(path, {**HEADER, "k": 4})
    text = path.read_text().splitlines()
    path.write_text(text[0] + "\nnot json\n" + text[1] + "\n")
    with pytest.raises(SparrowError, match=r"line 2: not valid JSON") as err:
        read_tsf_cache(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    path.write_text(text[0] + '\n{"video": "v", "exp": "0", "status": "maybe", "entries": []}\n')
    with pytest.raises(SparrowError, match="status"):
        read_tsf_cache(path)
    path.write_text('{"format": "other"}\n')
    with pytest.raises(SparrowError, match="not a SPARROW TSF cache"):
        read_tsf_cache(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SparrowError, match="no TSF shard files"):
        read_tsf_cache(tmp_path / "empty")
    with pytest.raises(SparrowError, match="no such"):
        read_tsf_cache(tmp_path / "missing")


def test_merging_shards(tmp_path) -> None:
    recs = _records()
    with ShardWriter(tmp_path / shard_file_name(0, 2), {**HEADER, "shard": [0, 2]}) as w:
        w.write(recs[0])
        w.write(recs[1])
    ok_again = TSFRecord("v0", "1", "ok", [TSFEntry(3, (0.0, 0.0, 2.0, 2.0))], source="tracked", num_frames=9)
    with ShardWriter(tmp_path / shard_file_name(1, 2), {**HEADER, "shard": [1, 2]}) as w:
        w.write(ok_again)
        w.write(recs[2])
    merged = read_tsf_cache(tmp_path)
    assert merged == {recs[0].key: recs[0], ok_again.key: ok_again, recs[2].key: recs[2]}
    with ShardWriter(tmp_path / shard_file_name(2, 3), {**HEADER, "shard": [2, 3]}) as w:
        w.write(TSFRecord("v0", "0", "ok", [TSFEntry(5, (0.0, 0.0, 2.0, 2.0))], source="tracked", num_frames=9))
    with pytest.raises(SparrowError, match="differs"):
        read_tsf_cache(tmp_path)
