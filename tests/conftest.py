"""Shared test settings: CPU only, one thread per worker, no network, deterministic."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread_after_each_test():
    """Put torch back on one thread after every test: a benchmark's ``main()`` run in-process sets its own count,
    and results that must match bit for bit (an exact resume against a child process) depend on it."""
    yield
    torch.set_num_threads(1)
