"""Helpers shared by the reliability tests (test_fuzz, test_leaks, test_threads, test_limits,
test_interrupts, test_pickle): how this process runs, and its resident memory."""

from __future__ import annotations

import os


def _loaded_libraries() -> str:
    try:
        with open("/proc/self/maps") as fh:
            return fh.read()
    except OSError:  # not Linux
        return ""


# True when the AddressSanitizer runtime is loaded (the sanitizer run of .ci/run preloads it). Tests
# whose point is timing, resident memory or the operating system refusing an allocation are skipped
# there: ASan slows the kernels, keeps freed memory in quarantine and aborts instead of throwing
# std::bad_alloc.
UNDER_ASAN = "libasan" in _loaded_libraries()

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size of this process: psutil when importable, else /proc/self/statm."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.Process().memory_info().rss)
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE
