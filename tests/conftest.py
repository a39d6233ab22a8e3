"""Shared fixtures and NumPy references for the sketchgn tests.

The references here are deliberately simple and independent of the library: an O(n log n)
Walsh-Hadamard transform built from reshapes (natural / Sylvester order, checked against
scipy.linalg.hadamard in test_fwht.py) and a helper for norm-wise error bounds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import settings

import sketchgn as sg
from sketchgn import _core

# In CI, property tests draw the same examples on every run (a failure there is reproducible, not
# flaky); locally they explore new ones.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

SIMD_LEVELS = tuple(sg.build_info()["simd_available"])
INITIAL_SIMD_LEVEL = _core.simd_level()


def ref_fwht(x, normalize=False):
    """Unnormalised Walsh-Hadamard transform along the last axis, in float64.

    Level h combines, within every block of 2h entries, the first half a and the second half b into
    (a + b, a - b); after log2(n) levels this is H_n x with H_2n = [[H_n, H_n], [H_n, -H_n]].
    """
    x = np.array(x, dtype=np.float64)  # always a private copy
    n = x.shape[-1]
    assert n >= 1 and n & (n - 1) == 0
    y = x.reshape(-1, n)
    h = 1
    while h < n:
        blocks = y.reshape(y.shape[0], n // (2 * h), 2, h)
        a, b = blocks[:, :, 0, :], blocks[:, :, 1, :]
        y = np.stack((a + b, a - b), axis=2).reshape(-1, n)
        h *= 2
    y = y.reshape(x.shape)
    if normalize:
        y = y / np.sqrt(n)
    return y


def rel_err(got, ref):
    """Norm-wise relative error ||got - ref|| / ||ref|| (computed in float64)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    denom = np.linalg.norm(ref)
    num = np.linalg.norm(got - ref)
    return num / denom if denom > 0 else num


def log2n(n):
    return max(1, int(n).bit_length() - 1)


def run_python(code, *, env_extra=None, env_remove=(), timeout=120):
    """Run `python -c code` in a fresh interpreter; returns the CompletedProcess."""
    env = dict(os.environ)
    for key in env_remove:
        env.pop(key, None)
    if env_extra:
        env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture
def rng(request):
    # A generator seeded from the test's id: reproducible run to run, different per test.
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=SIMD_LEVELS)
def simd_level(request):
    """Runs the test under each SIMD path this CPU and build support, then restores the old one."""
    previous = _core.simd_level()
    _core.set_simd_level(request.param)
    try:
        assert _core.simd_level() == request.param
        assert _core.fwht_kernel_name() == request.param
        yield request.param
    finally:
        _core.set_simd_level(previous)


@pytest.fixture
def at_baseline():
    """Helper to compute a result with the baseline kernels, whatever path is active."""

    def compute(fn, *args, **kwargs):
        previous = _core.simd_level()
        _core.set_simd_level("baseline")
        try:
            return fn(*args, **kwargs)
        finally:
            _core.set_simd_level(previous)

    return compute
