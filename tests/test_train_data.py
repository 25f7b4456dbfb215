"""The weighted mixture stream: exact weights, a pure function of (seed, micro-step), shards that add up."""

from __future__ import annotations

from collections import Counter

import pytest
from torch.utils.data import Dataset

from sparrow.errors import SparrowError
from sparrow.train.data import MixtureStream, _quotas, micro_batch_loader


class Numbers(Dataset):
    def __init__(self, name: str, n: int) -> None:
        self.name, self.n, self.epoch = name, n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[str, int, int]:
        return (self.name, i, self.epoch)


def test_quotas_follow_weights_and_sum_to_total():
    assert _quotas(10, [3, 1]) == [8, 2]  # 7.5 / 2.5 -> largest remainder goes to the first
    assert _quotas(7, [1, 1, 1]) == [3, 2, 2]
    assert sum(_quotas(101, [0.2, 0.5, 0.3])) == 101


def test_mixture_epoch_respects_weights_and_covers_each_source():
    a, b = Numbers("a", 5), Numbers("b", 50)
    stream = MixtureStream([a, b], [3.0, 1.0], seed=1, batch_size=4, num_micro_steps=10, epoch_size=40)
    items = [x for u in range(10) for x in stream[u]]  # exactly one mixture epoch
    counts = Counter(name for name, _, _ in items)
    assert counts == {"a": 30, "b": 10}
    per_a = Counter(i for name, i, _ in items if name == "a")
    assert sorted(per_a.values()) == [6] * 5  # a small source is cycled evenly, not sampled with replacement
    assert len({i for name, i, _ in items if name == "b"}) == 10  # no repeats from the big source
    assert {e for _, _, e in items} == {0}
    assert {e for _, _, e in stream[10]} == {1}  # next epoch, and the sources were told


def test_stream_is_a_function_of_seed_and_step_and_shards_add_up():
    sources = [Numbers("a", 7), Numbers("b", 3)]
    one = MixtureStream(sources, [1, 2], seed=3, batch_size=4, num_micro_steps=20)
    again = MixtureStream(sources, [1, 2], seed=3, batch_size=4, num_micro_steps=20)
    assert [again[u] for u in (17, 3, 9)] == [one[u] for u in (17, 3, 9)]  # any order, any instance
    other = MixtureStream(sources, [1, 2], seed=4, batch_size=4, num_micro_steps=20)
    assert [other[u] for u in range(5)] != [one[u] for u in range(5)]
    shards = [
        MixtureStream(sources, [1, 2], seed=3, batch_size=2, num_processes=2, process_index=r, num_micro_steps=20)
        for r in (0, 1)
    ]
    for u in range(20):
        assert shards[0][u] + shards[1][u] == one[u]


def test_loader_resumes_at_a_micro_step():
    stream = MixtureStream([Numbers("a", 4)], [1], seed=0, batch_size=2, num_micro_steps=6)
    assert list(micro_batch_loader(stream, 4)) == [stream[4], stream[5]]
    assert len(list(micro_batch_loader(stream, 0))) == 6


def test_bad_sources():
    with pytest.raises(SparrowError, match="one weight per data source"):
        MixtureStream([Numbers("a", 2)], [1, 2], seed=0, batch_size=1)
    with pytest.raises(SparrowError, match="empty"):
        MixtureStream([Numbers("a", 0)], [1], seed=0, batch_size=1)
