"""K-means and medoid selection: deterministic, medoids are actual rows, N <= K returns all."""

from __future__ import annotations

import numpy as np
import pytest

from sparrow.tsf.cluster import kmeans, select_medoids


def _blobs(seed: int = 0, per: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    x = np.concatenate([c + rng.normal(scale=0.5, size=(per, 2)) for c in centres])
    return x, np.repeat(np.arange(4), per)


@pytest.mark.parametrize("init", ["kmeans++", "linspace"])
def test_kmeans_is_deterministic_and_finds_blobs(init: str) -> None:
    x, truth = _blobs()
    perm = np.random.default_rng(1).permutation(len(x))
    x, truth = x[perm], truth[perm]
    c1, l1 = kmeans(x, 4, seed=3, init=init)
    c2, l2 = kmeans(x.copy(), 4, seed=3, init=init)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(l1, l2)
    if init == "kmeans++":  # well-separated blobs: each cluster is exactly one blob
        for j in range(4):
            assert len(set(truth[l1 == j])) == 1
        assert len(set(l1)) == 4


def test_medoids_are_the_rows_nearest_each_centre() -> None:
    x, truth = _blobs(seed=2)
    chosen = select_medoids(x, 4, seed=0)
    assert chosen == sorted(chosen) and len(set(chosen)) == 4
    assert sorted(truth[chosen].tolist()) == [0, 1, 2, 3]  # one view per blob
    centres, _ = kmeans(x, 4, seed=0)
    for c in centres:
        nearest = int(np.argmin(((x - c) ** 2).sum(1)))
        assert nearest in chosen
    assert select_medoids(x, 4, seed=0) == chosen


def test_n_at_most_k_returns_all_rows() -> None:
    x = np.arange(6, dtype=float).reshape(3, 2)
    assert select_medoids(x, 4) == [0, 1, 2]
    assert select_medoids(x[:1], 4) == [0]
    assert select_medoids(np.zeros((4, 3)), 4) == [0, 1, 2, 3]


def test_identical_rows_still_give_k_distinct_indices() -> None:
    x = np.ones((7, 3))
    chosen = select_medoids(x, 4, init="linspace")
    assert len(set(chosen)) == 4 and all(0 <= i < 7 for i in chosen)
    chosen_pp = select_medoids(x, 4, init="kmeans++")
    assert len(set(chosen_pp)) == 4


def test_kmeans_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="1 <= k <= N"):
        kmeans(np.zeros((2, 2)), 3)
    with pytest.raises(ValueError, match="init"):
        kmeans(np.zeros((5, 2)), 2, init="random")
