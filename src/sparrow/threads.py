"""How many CPU threads the commands use, and how idle OpenMP threads wait.

Why (``benchmarks/bench_contention.py``): torch's CPU kernels run on OpenMP threads (as many as cores). After
each parallel region GNU OpenMP's idle threads keep *spinning* on the CPU for a while (the "active" wait policy)
before they sleep. On a machine where another process keeps one core busy, the spinning threads and the busy
process crowd out the thread that has the work, and every one of the thousands of small parallel regions of a
forward pass waits for a descheduled thread. Measured on 2 shared cores, bundled model, track mode: a 60-frame
clip took 1.0 s on a quiet machine and 97 s with one busy core (spinning wait); 2.7 s and 5.9 s with the *passive*
policy (idle threads sleep at once), 0.9 s and 5.7 s with one thread. Under heavy load from other processes (load
average 13-16), 30 frames: 58 s -> 1.3 s without the busy core, 104 s -> 3.7 s with it
(``benchmarks/bench_contention.py``). The price: passive waiting wakes threads through the kernel, which cost up to
~2x on a quiet machine in the one sample above.

:func:`configure_threads` therefore (1) asks OpenMP for the passive policy (``OMP_WAIT_POLICY=PASSIVE``, only
possible before torch is imported, and only if the user has not set it), and (2) caps torch's intra-op threads at
the cores this process may use (:func:`usable_cores`: CPU affinity and a cgroup CPU quota; torch's own default
counts every core of the machine). ``--threads N`` overrides the count. PyAV decoding (``thread_type="AUTO"``) and
OpenCV use their own thread pools; the benchmark measures them too.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity mask, lowered by a cgroup v2 CPU quota if there is one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def prefer_passive_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` if torch is not imported yet and the user chose no policy; True if set."""
    if "torch" in sys.modules or WAIT_POLICY_ENV in os.environ:
        return False
    os.environ[WAIT_POLICY_ENV] = "PASSIVE"
    return True


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count: ``threads`` if given, else at most :func:`usable_cores` (a lower count
    already set, e.g. by ``torch.set_num_threads`` or ``OMP_NUM_THREADS``, is kept). Returns the count in use.

    Call it before the first torch import of the process for the wait policy to apply (see the module doc).
    """
    prefer_passive_wait()
    import torch  # after the wait policy: OpenMP reads it when the library loads

    count = threads if threads is not None else min(torch.get_num_threads(), usable_cores())
    if count != torch.get_num_threads():
        torch.set_num_threads(count)
    return count
