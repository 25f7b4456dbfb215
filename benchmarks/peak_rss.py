"""Peak resident set size of this process over a block of code, for the memory benchmarks (not a benchmark itself).

from peak_rss import PeakRSS  # benchmarks/ is on sys.path when a benchmark runs as a script

with PeakRSS() as rss:
    ...
print(rss.before, rss.peak)  # MiB
"""

from __future__ import annotations

import resource
import threading
import time
from typing import Self


class PeakRSS:
    """Peak resident set size (MiB) of this process while the ``with`` block runs, sampled every 2 ms."""

    def __enter__(self) -> Self:
        self.page = resource.getpagesize()
        self.before = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
