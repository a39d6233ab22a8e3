"""Leaks and growth: many calls of every kernel in one process leave resident memory where it was.

Each test warms up (a tenth of the calls: caches, pools and arenas reach their steady state), measures
the resident set size, runs the calls, collects garbage and measures again; the growth must stay under
5 MB. Counts: 10,000 calls per kernel, fewer for the expensive ones (stated in CALLS), and 200 small
GaussNewtonRegressor fits. Reference counts of the arguments are checked too (a leaked reference keeps
a whole array alive, which RSS would only show for big arrays). Error paths are included: a call that
raises must free what it took.

Run with ``-s`` to see the growth figures. Skipped under AddressSanitizer (its allocator keeps freed
memory in quarantine, so RSS grows by design).
"""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

import sketchgn as sg
from reliability import UNDER_ASAN, rss_bytes

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(UNDER_ASAN, reason="ASan's quarantine grows resident memory by design"),
]

MAX_GROWTH = 5 * 2**20
FITS = 200

# calls per kernel (10,000 unless stated)
CALLS = {
    "SketchPreconditioner": 2_000,
    "solve_gn(exact)": 2_000,
    "solve_gn(cg)": 2_000,
    "solve_gn(sketch)": 1_000,  # builds a preconditioner each call
    "solve_gn(sketch, reused P)": 2_000,
}


def unit_rows(Z):
    return Z / np.linalg.norm(Z, axis=1, keepdims=True)


def _rng():
    return np.random.default_rng(2024)


def kernels():
    rng = _rng()
    x_small = rng.standard_normal(8)
    x_medium = rng.standard_normal((16, 1024))
    out_medium = np.empty_like(x_medium)
    x32 = rng.standard_normal((4, 256)).astype(np.float32)
    x_strided = rng.standard_normal((8, 64))[:, ::2]
    S = sg.SRHT(1000, 64, seed=1)
    A = rng.standard_normal((1000, 4))
    K = sg.KroneckerSRHT(64, 16, 256, seed=2)
    U, Xk = rng.standard_normal((8, 64)), rng.standard_normal((8, 16))
    X = unit_rows(rng.standard_normal((50, 8)))
    W = rng.standard_normal((64, 8))
    a = rng.choice([-1.0, 1.0], 64)
    J = sg.ReLUJacobian(X, W, a, n_threads=1)
    Js = sg.ReLUJacobian(X, W, a, threshold=1.0, n_threads=1)  # sparse path
    V, u = rng.standard_normal((64, 8)), rng.standard_normal(50)
    Vs, Us = rng.standard_normal((64, 8, 3)), rng.standard_normal((50, 3))
    Xt = unit_rows(rng.standard_normal((12, 4)))
    Jt = sg.ReLUJacobian(Xt, rng.standard_normal((32, 4)), rng.choice([-1.0, 1.0], 32), n_threads=1)
    rt = rng.standard_normal(12)
    P = sg.SketchPreconditioner(Jt, damping=1e-3, n_threads=1)
    bad = np.ones(6)
    nan_X = X.copy()
    nan_X[0, 0] = np.nan

    def raises(fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
        except (TypeError, ValueError):
            return
        raise AssertionError("expected an error")

    return {
        "fwht small": (lambda: sg.fwht(x_small), [x_small]),
        "fwht medium": (lambda: sg.fwht(x_medium, n_threads=1), [x_medium]),
        "fwht medium, out=": (lambda: sg.fwht(x_medium, out=out_medium, n_threads=1), [x_medium, out_medium]),
        "fwht float32 normalized": (lambda: sg.fwht(x32, normalize=True), [x32]),
        "fwht strided (validating path)": (lambda: sg.fwht(x_strided, n_threads=2), [x_strided]),
        "fwht error path": (lambda: raises(sg.fwht, bad), [bad]),
        "SRHT.apply": (lambda: S.apply(A, n_threads=1), [A]),
        "KroneckerSRHT.apply_kron": (lambda: K.apply_kron(U, Xk, n_threads=1), [U, Xk]),
        "ReLUJacobian()": (lambda: sg.ReLUJacobian(X, W, a, n_threads=1), [X, W, a]),
        "ReLUJacobian() error path": (lambda: raises(sg.ReLUJacobian, nan_X, W, a), [nan_X, W, a]),
        "matvec": (lambda: J.matvec(V), [V]),
        "rmatvec": (lambda: J.rmatvec(u), [u]),
        "matmat": (lambda: J.matmat(Vs), [Vs]),
        "rmatmat": (lambda: J.rmatmat(Us), [Us]),
        "gram": (lambda: J.gram(), []),
        "sparse matvec/rmatvec": (lambda: (Js.matvec(V), Js.rmatvec(u)), [V, u]),
        "matvec error path": (lambda: raises(J.matvec, bad), [bad]),
        "SketchPreconditioner": (lambda: sg.SketchPreconditioner(Jt, n_threads=1), []),
        "P.solve": (lambda: (P.solve(rt), P.solve_transpose(rt)), [rt]),
        "solve_gn(exact)": (lambda: sg.solve_gn(Jt, rt, method="exact", damping=1e-3), [rt]),
        "solve_gn(cg)": (lambda: sg.solve_gn(Jt, rt, method="cg", damping=1e-3, n_threads=1), [rt]),
        "solve_gn(sketch)": (lambda: sg.solve_gn(Jt, rt, damping=1e-3, n_threads=1), [rt]),
        "solve_gn(sketch, reused P)": (
            lambda: sg.solve_gn(Jt, rt, damping=1e-3, preconditioner=P, n_threads=1), [rt]),
    }


KERNELS = list(kernels())


def measure(fn, calls):
    for _ in range(max(200, calls // 10)):
        fn()
    gc.collect()
    before = rss_bytes()
    for _ in range(calls):
        fn()
    gc.collect()
    return rss_bytes() - before


@pytest.mark.parametrize("name", KERNELS)
def test_no_growth_over_many_calls(name):
    fn, args = kernels()[name]
    calls = CALLS.get(name, 10_000)
    fn()
    refs = [sys.getrefcount(x) for x in args]
    growth = measure(fn, calls)
    print(f"\n{name}: {calls} calls, RSS growth {growth / 2**20:+.2f} MiB")
    assert [sys.getrefcount(x) for x in args] == refs, f"{name}: the arguments' reference counts changed"
    assert growth < MAX_GROWTH, f"{name}: resident memory grew by {growth / 2**20:.1f} MiB over {calls} calls"


def test_no_growth_over_many_small_fits():
    rng = _rng()
    X = unit_rows(rng.standard_normal((30, 4)))
    y = np.sin(2 * X[:, 0]) + X[:, 1]
    Y = np.stack([y, X[:, 2]], axis=1)
    solvers = ["auto", "sketch", "exact", "cg", "gd"]

    def fit(i):
        target = Y if i % 7 == 0 else y
        est = sg.GaussNewtonRegressor(32, solver=solvers[i % len(solvers)], max_iter=3, random_state=i,
                                      n_threads=1).fit(X, target)
        est.predict(X)
        est.score(X, target)

    for i in range(20):
        fit(i)
    gc.collect()
    before = rss_bytes()
    for i in range(FITS):
        fit(i)
    gc.collect()
    growth = rss_bytes() - before
    print(f"\n{FITS} fits: RSS growth {growth / 2**20:+.2f} MiB")
    assert growth < MAX_GROWTH, f"resident memory grew by {growth / 2**20:.1f} MiB over {FITS} fits"
