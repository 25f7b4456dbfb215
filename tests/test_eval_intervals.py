"""The video-level bootstrap interval (``sparrow.eval.intervals``)."""

from __future__ import annotations

import numpy as np
import pytest

from sparrow.eval.intervals import bootstrap_ratio


def test_estimate_is_the_pooled_ratio_and_the_interval_contains_it() -> None:
    est, low, high = bootstrap_ratio([3, 0, 5, 2], [4, 4, 8, 4])
    assert est == pytest.approx(10 / 20)
    assert low <= est <= high and 0 <= low < high <= 1


def test_identical_videos_give_a_point_and_more_videos_a_narrower_interval() -> None:
    assert bootstrap_ratio([1.0] * 10, [2.0] * 10) == (0.5, 0.5, 0.5)
    rng = np.random.default_rng(0)
    few = rng.random(10)
    many = rng.random(400)
    _, lo_few, hi_few = bootstrap_ratio(few)
    _, lo_many, hi_many = bootstrap_ratio(many)
    assert hi_many - lo_many < (hi_few - lo_few) / 3
    # a mean of uniforms: the 95 % interval of 400 videos covers 0.5 and is about 2 x 1.96 x 0.29 / 20 wide
    assert lo_many < 0.5 < hi_many and 0.04 < hi_many - lo_many < 0.08


def test_seeded_and_checked() -> None:
    assert bootstrap_ratio([1, 2, 3], seed=1) == bootstrap_ratio([1, 2, 3], seed=1)
    with pytest.raises(ValueError, match="one numerator and one denominator"):
        bootstrap_ratio([1, 2], [1])
    with pytest.raises(ValueError, match="sum to zero"):
        bootstrap_ratio([0, 0], [0, 0])
    with pytest.raises(ValueError, match="level"):
        bootstrap_ratio([1, 2], level=1.5)


def test_rvos_summary_gives_a_video_level_interval() -> None:
    from sparrow.eval.rvos import aggregate

    def row(video: str, jf: float) -> dict:
        return {"video": video, "J": jf, "F": jf, "J&F": jf, "missing": 0, "first_iou": None, "tags": [], "kind": ""}

    rows = [row("a", 1.0), row("a", 1.0), row("b", 0.0), row("c", 0.5)]
    summary = aggregate(rows, "mevis")
    assert summary["J&F"] == pytest.approx(0.625)
    assert 0.0 <= summary["J&F 95% low"] < 0.625 < summary["J&F 95% high"] <= 1.0
    # every resample is a mix of whole videos: video a's two expressions always go together
    assert aggregate([row("a", 0.3), row("b", 0.3)], "mevis")["J&F 95% low"] == pytest.approx(0.3)
