"""The glibc allocator tuning used by the CLI and the benchmarks."""

import ctypes
import ctypes.util
import sys

import pytest
import torch

from wmse.allocator import keep_freed_memory


def has_glibc() -> bool:
    try:
        return hasattr(
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "mallopt"
        )
    except OSError:
        return False


def test_takes_effect_on_linux_glibc():
    if not (sys.platform.startswith("linux") and has_glibc()):
        pytest.skip("needs Linux with glibc")
    assert keep_freed_memory() is True
    # Calling it again is harmless and still reports success.
    assert keep_freed_memory() is True


def test_memory_stays_usable_after_tuning():
    keep_freed_memory()
    for _ in range(3):
        big = torch.ones(4096, 4096)  # 64 MiB, above the mmap threshold
        small = torch.ones(1024, 1024)  # 4 MiB, now served from the heap
        assert big.sum().item() == 4096 * 4096
        assert small.sum().item() == 1024 * 1024
        del big, small


def test_reports_false_off_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False
