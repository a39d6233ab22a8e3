"""What this build is and which SIMD path runs."""

from __future__ import annotations

from . import _core
from ._validation import _CORES

__all__ = ["build_info"]


def build_info() -> dict:
    """Facts about the compiled core.

    Returns a dict with: ``version``; ``simd``, the kernel path in use ("baseline", "avx2" or
    "avx512"; force a lower one with the environment variable ``SKETCHGN_SIMD``);
    ``simd_available``, the paths this CPU and build support; ``openmp``, the OpenMP version;
    ``max_threads``, the threads ``n_threads=None`` uses (the cores this process may run on);
    ``omp_max_threads``; ``compiler``; ``eigen_version``; ``build_type``.
    """
    info = dict(_core.build_info())
    info["omp_max_threads"] = info["max_threads"]
    info["max_threads"] = _CORES
    return info
