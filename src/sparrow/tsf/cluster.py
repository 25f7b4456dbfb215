"""Deterministic K-means and medoid selection (the "K diverse views" step of TSF).

Both functions are pure NumPy and deterministic: the same input (and seed) gives the same output, on any
machine. Ties are broken by the lowest index.
"""

from __future__ import annotations

import numpy as np


def _sq_dists(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[N, K]`` between rows of ``x [N, D]`` and ``centres [K, D]``."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _init_centres(x: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    n = x.shape[0]
    if init == "linspace":  # the authors' release: rows linspace(0, N-1, K)
        return x[np.linspace(0, n - 1, k).round().astype(int)].copy()
    if init != "kmeans++":
        raise ValueError(f"unknown K-means init {init!r} (use 'kmeans++' or 'linspace')")
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(n))]
    closest = _sq_dists(x, x[chosen])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # all remaining rows coincide with a centre: take the first unused row
            nxt = next(i for i in range(n) if i not in chosen)
        else:
            nxt = int(np.searchsorted(np.cumsum(closest), rng.random() * total, side="right"))
            nxt = min(nxt, n - 1)
        chosen.append(nxt)
        closest = np.minimum(closest, _sq_dists(x, x[nxt : nxt + 1])[:, 0])
    return x[chosen].copy()


def kmeans(
    x: np.ndarray, k: int, max_iter: int = 50, tol: float = 1e-4, seed: int = 0, init: str = "kmeans++"
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's K-means on rows of ``x [N, D]``.

    Returns ``(centres [k, D], labels [N])``. ``init`` is ``"kmeans++"`` (seeded generator) or ``"linspace"``
    (the release's deterministic rows). An empty cluster keeps its centre. Stops after ``max_iter`` iterations
    or when no centre moves by more than ``tol`` (Euclidean). Requires ``1 <= k <= N``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [N, D] array, got shape {list(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"kmeans needs 1 <= k <= N, got k={k}, N={x.shape[0]}")
    centres = _init_centres(x, k, init, seed)
    labels = np.argmin(_sq_dists(x, centres), axis=1)
    for _ in range(max_iter):
        new = centres.copy()
        for j in range(k):
            members = x[labels == j]
            if len(members):
                new[j] = members.mean(0)
        shift = np.sqrt(((new - centres) ** 2).sum(1)).max()
        centres = new
        labels = np.argmin(_sq_dists(x, centres), axis=1)
        if shift < tol:
            break
    return centres, labels


def select_medoids(
    x: np.ndarray, k: int, max_iter: int = 50, tol: float = 1e-4, seed: int = 0, init: str = "kmeans++"
) -> list[int]:
    """Indices (sorted ascending) of ``min(k, N)`` distinct rows of ``x [N, D]``: the row nearest each K-means centre.

    With ``N <= k`` every row is returned. When two centres share a nearest row, the later centre takes its
    nearest row not already chosen, so the result always has ``min(k, N)`` distinct actual rows.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n <= k:
        return list(range(n))
    centres, _ = kmeans(x, k, max_iter=max_iter, tol=tol, seed=seed, init=init)
    dists = _sq_dists(x, centres)
    chosen: list[int] = []
    for j in range(k):
        for i in np.argsort(dists[:, j], kind="stable"):
            if int(i) not in chosen:
                chosen.append(int(i))
                break
    return sorted(chosen)
