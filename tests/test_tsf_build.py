"""The TSF builder: K medoids from the annotation, resume without redoing work, shards, recorded failures."""

from __future__ import annotations

import pytest
from tsf_fixtures import synthetic_records, write_mevis_fixture

from sparrow.data.mevis import read_mevis, write_frames, write_mevis_annotations
from sparrow.data.schema import Expression, ObjectTrack
from sparrow.errors import SparrowError
from sparrow.tsf.build import BuildConfig, build_tsf, parse_shard, shard_records
from sparrow.tsf.cache import read_tsf_cache, shard_file_name
from sparrow.tsf.detect import GtDetector
from sparrow.tsf.track import CsrtTracker


class Counting:
    """Wraps a detector or tracker, counts its calls and keeps each call's arguments and result."""

    def __init__(self, inner) -> None:
        self.inner, self.calls, self.name = inner, 0, inner.name
        self.log: list[tuple[tuple, object]] = []

    def detect(self, *args, **kwargs):
        self.calls += 1
        out = self.inner.detect(*args, **kwargs)
        self.log.append((args, out))
        return out

    def track(self, *args, **kwargs):
        self.calls += 1
        out = self.inner.track(*args, **kwargs)
        self.log.append((args, out))
        return out


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return write_mevis_fixture(tmp_path_factory.mktemp("data"), n_videos=3, T=10)


def _lines(path):
    return sorted(path.read_text().splitlines()[1:])


def test_annotation_build_gives_k_medoids_of_the_track(split, tmp_path) -> None:
    records = read_mevis(split)
    stats = build_tsf(records, tmp_path / "c", BuildConfig(k=4), progress=False)
    assert (stats.ok, stats.failed, stats.skipped) == (6, 0, 0)
    cache = read_tsf_cache(tmp_path / "c")
    assert set(cache) == {(r.video_id, e.exp_id) for r in records for e in r.expressions}
    for rec in records:
        for exp in rec.expressions:
            got = cache[(rec.video_id, exp.exp_id)]
            assert got.status == "ok" and got.source == "annotation" and got.num_frames == 10
            frames = [e.frame for e in got.entries]
            assert len(frames) == 4 and frames == sorted(set(frames))
            truth = rec.target_boxes(exp)
            for e in got.entries:  # medoids are actual track frames with their annotated boxes
                assert list(e.box) == pytest.approx(truth[e.frame])
    again = build_tsf(records, tmp_path / "d", BuildConfig(k=4), progress=False)
    assert again.ok == 6
    assert (tmp_path / "c" / shard_file_name(0, 1)).read_text() == (tmp_path / "d" / shard_file_name(0, 1)).read_text()


def test_short_track_keeps_every_frame(split, tmp_path) -> None:
    records = read_mevis(split)
    build_tsf(records, tmp_path / "c", BuildConfig(k=20), progress=False)
    for rec in read_tsf_cache(tmp_path / "c").values():
        assert [e.frame for e in rec.entries] == list(range(10))


def test_killed_run_resumes_without_redoing_records(split, tmp_path) -> None:
    records = read_mevis(split)
    cfg = BuildConfig(k=3, detector="gt", tracker="csrt", always_track=True)
    det, trk = Counting(GtDetector()), Counting(CsrtTracker())
    first = build_tsf(records, tmp_path / "c", cfg, detector=det, tracker=trk, limit=2, progress=False)
    assert first.written == 2 and trk.calls == 2 and det.calls == 2
    assert len(read_tsf_cache(tmp_path / "c")) == 2

    class Boom(RuntimeError):
        pass

    seen: list = []

    def explode_after_two(rec) -> None:  # a crash in the middle of the second run
        seen.append(rec)
        if len(seen) == 2:
            raise Boom("killed")

    with pytest.raises(Boom):
        build_tsf(records, tmp_path / "c", cfg, detector=det, tracker=trk, on_record=explode_after_two, progress=False)
    assert len(read_tsf_cache(tmp_path / "c")) == 4 and trk.calls == 4
    last = build_tsf(records, tmp_path / "c", cfg, detector=det, tracker=trk, progress=False)
    assert (last.written, last.skipped) == (2, 4) and trk.calls == 6 and det.calls == 6
    nothing = build_tsf(records, tmp_path / "c", cfg, detector=det, tracker=trk, progress=False)
    assert (nothing.written, nothing.skipped) == (0, 6) and trk.calls == 6

    fresh = build_tsf(records, tmp_path / "fresh", cfg, progress=False, tracker=CsrtTracker())
    assert fresh.ok == 6
    assert _lines(tmp_path / "c" / shard_file_name(0, 1)) == _lines(tmp_path / "fresh" / shard_file_name(0, 1))
    cache = read_tsf_cache(tmp_path / "c")
    assert all(r.source == "tracked" and len(r.entries) == 3 for r in cache.values())


def test_union_of_shards_equals_unsharded_run(tmp_path) -> None:
    split = write_mevis_fixture(tmp_path / "data", n_videos=5, T=8, seed=3)
    records = read_mevis(split)
    build_tsf(records, tmp_path / "all", BuildConfig(k=2), progress=False)
    for i in range(2):
        build_tsf(records, tmp_path / "sh", BuildConfig(k=2), shard=(i, 2), progress=False)
    a, b = (set(read_tsf_cache(tmp_path / "sh" / shard_file_name(i, 2))) for i in range(2))
    assert a and b and not a & b and abs(len(a) - len(b)) <= 2
    assert read_tsf_cache(tmp_path / "sh") == read_tsf_cache(tmp_path / "all")
    assert [len(shard_records(records, (i, 3))) for i in range(3)] == [2, 2, 1]
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(SparrowError, match="shard"):
            parse_shard(bad)


def test_bad_videos_and_empty_tracks_are_recorded_and_the_run_completes(tmp_path) -> None:
    pairs = synthetic_records(n_videos=4, T=8)
    rec0 = pairs[0][0]
    rec0.objects[999] = ObjectTrack(999, [None] * 8, [None] * 8)
    rec0.expressions.append(Expression("2", "the square that is never there", [999]))
    split = tmp_path / "train"
    write_mevis_annotations([r for r, _ in pairs], split)
    for rec, frames in pairs:
        write_frames(split / "JPEGImages" / rec.video_id, rec.frames, frames)
    (split / "JPEGImages" / "vid1" / "00003.jpg").unlink()  # missing frame
    (split / "JPEGImages" / "vid2" / "00000.jpg").write_bytes(b"not a jpeg")  # corrupt frame
    records = read_mevis(split, check_frames=False)
    stats = build_tsf(records, tmp_path / "c", BuildConfig(k=4), progress=False)
    cache = read_tsf_cache(tmp_path / "c")
    assert len(cache) == 9 and (stats.ok, stats.failed) == (4, 5)
    assert cache[("vid0", "2")].status == "failed" and "empty track" in cache[("vid0", "2")].reason
    for exp in ("0", "1"):
        assert cache[("vid0", exp)].status == "ok" and cache[("vid3", exp)].status == "ok"
        assert cache[("vid1", exp)].status == "failed" and "missing frame" in cache[("vid1", exp)].reason
        assert "00003.jpg" in cache[("vid1", exp)].reason
        assert cache[("vid2", exp)].status == "failed" and "cannot read frame" in cache[("vid2", exp)].reason
        assert cache[("vid2", exp)].entries == []
    # failed records are done (skipped on resume) unless asked to retry them
    again = build_tsf(records, tmp_path / "c", BuildConfig(k=4), progress=False)
    assert (again.written, again.skipped) == (0, 9)
    retried = build_tsf(records, tmp_path / "c", BuildConfig(k=4), retry_failed=True, progress=False)
    assert (retried.written, retried.failed) == (5, 5)


def test_tracking_with_tiny_gdino_and_sam2(split, tmp_path) -> None:
    from tsf_fixtures import tiny_grounding_dino, tiny_sam2_video

    from sparrow.tsf.detect import GroundingDinoDetector
    from sparrow.tsf.track import Sam2Tracker

    records = read_mevis(split)[:1]
    det = Counting(GroundingDinoDetector(tiny_grounding_dino(tmp_path / "gd"), box_threshold=0.0, text_threshold=0.0))
    tiny_sam2_video(tmp_path / "sam2")
    trk = Counting(Sam2Tracker(tmp_path / "sam2"))
    cfg = BuildConfig(k=2, detector="gdino", tracker="sam2", always_track=True, reference_frames=2)
    stats = build_tsf(records, tmp_path / "c", cfg, detector=det, tracker=trk, progress=False)
    assert (stats.ok, stats.failed) == (2, 0) and det.calls == 4 and trk.calls == 2
    cache = read_tsf_cache(tmp_path / "c")
    height, width = records[0].size
    for i, exp in enumerate(records[0].expressions):
        # the tracker starts from the best of the detector's two reference-frame detections ...
        detections = [(args[2], out) for args, out in det.log[2 * i : 2 * i + 2]]
        frame, found = max(detections, key=lambda d: d[1].score)
        (_, start, box, _), tracked = trk.log[i]
        assert start == frame and tuple(box) == tuple(found.box)
        # ... and the record holds K distinct frames of that track with the tracker's boxes, inside the frame
        rec = cache[(records[0].video_id, exp.exp_id)]
        assert rec.status == "ok" and rec.source == "tracked" and rec.num_frames == 10
        frames = [e.frame for e in rec.entries]
        assert len(frames) == 2 and frames == sorted(set(frames))
        for e in rec.entries:
            assert list(e.box) == pytest.approx(list(tracked[e.frame]))
            x0, y0, x1, y1 = e.box
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


def test_annotation_where_present_else_detector_and_tracker(tmp_path) -> None:
    from sparrow.tsf.detect import Detection

    pairs = synthetic_records(n_videos=1, T=8)
    rec, frames = pairs[0]
    unannotated = ObjectTrack(7, [None] * 8, [None] * 8)
    rec.objects[7] = unannotated
    rec.expressions.append(Expression("2", "the green square", [7]))
    green_box = rec.objects[2].boxes[0]

    class FixedDetector:  # stands in for GroundingDINO: finds the green square on frame 0 only
        name = "fixed"
        calls: list[int] = []  # noqa: RUF012

        def detect(self, frame, text, frame_index, gt_boxes=None):
            self.calls.append(frame_index)
            assert gt_boxes is None  # an unannotated target gets no annotation
            return Detection(tuple(green_box), 0.9) if frame_index == 0 else None

    split = tmp_path / "train"
    write_mevis_annotations([rec], split)
    write_frames(split / "JPEGImages" / rec.video_id, rec.frames, frames)
    records = read_mevis(split)
    det, trk = FixedDetector(), Counting(CsrtTracker())
    cfg = BuildConfig(k=3, detector="fixed", tracker="csrt", reference_frames=2)
    stats = build_tsf(records, tmp_path / "c", cfg, detector=det, tracker=trk, progress=False)
    cache = read_tsf_cache(tmp_path / "c")
    assert stats.ok == 3 and trk.calls == 1 and det.calls == [0, 7]
    assert cache[("vid0", "0")].source == "annotation" and cache[("vid0", "1")].source == "annotation"
    tracked = cache[("vid0", "2")]
    assert tracked.source == "tracked" and len(tracked.entries) == 3
    truth = records[0].objects[2].boxes
    for e in tracked.entries:  # CSRT followed the green square
        x0, y0, x1, y1 = e.box
        tx0, ty0, tx1, ty1 = truth[e.frame]
        inter = max(0, min(x1, tx1) - max(x0, tx0)) * max(0, min(y1, ty1) - max(y0, ty0))
        assert inter / ((x1 - x0) * (y1 - y0) + (tx1 - tx0) * (ty1 - ty0) - inter) > 0.5


def test_video_file_records_and_a_corrupt_video(tmp_path) -> None:
    from sparrow.data.video_io import write_video

    pairs = synthetic_records(n_videos=2, T=6)
    (good, frames), (bad, _) = pairs
    good.video_path = write_video(tmp_path / "good.mp4", frames)
    bad.video_path = tmp_path / "bad.mp4"
    bad.video_path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    attempts = []
    load = bad.load_frames
    bad.load_frames = lambda indices=None: attempts.append(indices) or load(indices)
    stats = build_tsf([good, bad], tmp_path / "c", BuildConfig(k=2), progress=False)
    assert len(attempts) == 1  # a corrupt video is decoded once, not once per expression
    cache = read_tsf_cache(tmp_path / "c")
    assert (stats.ok, stats.failed) == (2, 2)
    assert all(cache[("vid0", e)].status == "ok" and len(cache[("vid0", e)].entries) == 2 for e in ("0", "1"))
    for e in ("0", "1"):
        rec = cache[("vid1", e)]
        assert rec.status == "failed" and "bad.mp4" in rec.reason and "video" in rec.reason
