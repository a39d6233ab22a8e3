"""sg.solve_gn and sg.SketchPreconditioner against dense NumPy solves of (J J^T + damping I) g = r.

References: numpy.linalg.solve on J.gram() + damping I (the Gram is itself checked against the explicit
Jacobian in test_jacobian.py) and, for small problems, on Jd @ Jd.T with Jd formed row by row as the
Kronecker products of the paper; the preconditioner's R against the explicitly formed sketch
(S Jd^T, S = sg.KroneckerSRHT / sg.SRHT with the same seed) and scipy.linalg.solve_triangular.

Ill-conditioned problems pair the samples: x_{2i+1} = normalize(x_{2i} + eps * noise), with eps bisected
until cond(J J^T) hits a target (1e2, 1e5, 1e8).
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import scipy.linalg

import sketchgn as sg
from sketchgn import _core
from conftest import rel_err
from test_jacobian import ref_jacobian

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - a scikit-learn dependency, normally present
    threadpool_limits = None

SKETCHES = ["kronecker", "kronecker_rows", "srht", "gaussian"]
# (method, sketch) pairs: every way solve_gn can run.
SOLVERS = [("exact", None), ("cg", None)] + [("sketch", s) for s in SKETCHES]
SOLVER_IDS = ["exact", "cg"] + [f"sketch-{s}" for s in SKETCHES]


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------


def unit_rows(Z):
    return Z / np.linalg.norm(Z, axis=1, keepdims=True)


def make_data(n, m, d, *, seed=0, pair_eps=None, duplicate=False):
    """(X, W, a): unit-norm samples, Gaussian weights, +-1 output weights.

    pair_eps: x_{2i+1} = normalize(x_{2i} + pair_eps * noise) (near-duplicate pairs).
    duplicate: the second half of the samples repeats the first half exactly.
    """
    rng = np.random.default_rng(seed)
    X = unit_rows(rng.standard_normal((n, d)))
    noise = rng.standard_normal((n // 2, d))
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    if pair_eps is not None:
        X[1::2] = unit_rows(X[0::2][: n // 2] + pair_eps * noise)
    if duplicate:
        X[n // 2 :] = X[: n - n // 2]
    return X, W, a


def make_problem(n, m, d, *, seed=0, threshold=0.0, **kw):
    X, W, a = make_data(n, m, d, seed=seed, **kw)
    J = sg.ReLUJacobian(X, W, a, threshold=threshold)
    r = np.random.default_rng(seed + 1000).standard_normal(n)
    return J, r, (X, W, a)


def system(J, damping=0.0):
    G = J.gram()
    G[np.diag_indices_from(G)] += damping
    return G


def true_residual(G, g, r):
    return np.linalg.norm(r - G @ g) / np.linalg.norm(r)


def gram_condition(J):
    w = np.linalg.eigvalsh(J.gram())
    return w[-1] / w[0]


def conditioned_problem(target, *, n=400, m=1024, d=16, seed=0):
    """Near-duplicate pairs with eps bisected (on log10 eps) until cond(J J^T) is within 2x of target.

    Unrelated rows (eps >= 1) give about the best conditioning this shape allows (~1.6e2).
    """

    def build(log_eps):
        X, W, a = make_data(n, m, d, seed=seed, pair_eps=10.0**log_eps)
        J = sg.ReLUJacobian(X, W, a)
        return J, gram_condition(J)

    lo, hi = -6.0, 0.0  # small eps: ill conditioned
    J, c = build(hi)
    best = (abs(np.log10(c / target)), J, c)
    if np.log10(c / target) < -0.3:
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            J, c = build(mid)
            best = min(best, (abs(np.log10(c / target)), J, c), key=lambda t: t[0])
            if best[0] <= 0.3:
                break
            if c > target:
                lo = mid
            else:
                hi = mid
    _, J, c = best
    r = np.random.default_rng(seed + 7).standard_normal(n)
    return J, r, c


CONDITION_TARGETS = [1e2, 1e5, 1e8]


@pytest.fixture(scope="module", autouse=True)
def serial_blas():
    # The dense references are small; a multi-threaded BLAS on a loaded machine only makes them slow.
    ctx = threadpool_limits(1, user_api="blas") if threadpool_limits else contextlib.nullcontext()
    with ctx:
        yield


@pytest.fixture(scope="module")
def conditioned():
    return {target: conditioned_problem(target) for target in CONDITION_TARGETS}


@pytest.fixture(scope="module")
def big_problem():
    # Large enough for every kernel to run on several threads (n * m_pad >= 2^15, m d = 32768).
    return make_problem(640, 2048, 16, seed=5)


@pytest.fixture(scope="module")
def small_problem():
    return make_problem(50, 64, 4, seed=1)


# --------------------------------------------------------------------------------------------
# Accuracy against dense solves
# --------------------------------------------------------------------------------------------


ACCURACY_SIZES = [(50, 64, 4), (200, 256, 8), (400, 1024, 16)]
# Every solver on every size, except the Gaussian sketch (O(s n m d)) on the largest.
ACCURACY_CASES = [
    pytest.param(n, m, d, method, sketch, id=f"{n}-{m}-{d}-{sid}")
    for n, m, d in ACCURACY_SIZES
    for (method, sketch), sid in zip(SOLVERS, SOLVER_IDS)
    if not (sketch == "gaussian" and n * m * d > 10**6)
]


@pytest.mark.parametrize("damping", [0.0, 1e-2])
@pytest.mark.parametrize("n,m,d,method,sketch", ACCURACY_CASES)
def test_matches_dense_solve(n, m, d, method, sketch, damping):
    J, r, _ = make_problem(n, m, d, seed=n)
    G = system(J, damping)
    ref = np.linalg.solve(G, r)
    kw = {} if sketch is None else {"sketch": sketch}
    res = sg.solve_gn(J, r, method=method, damping=damping, tol=1e-12, **kw)
    assert isinstance(res, sg.SolveResult)
    assert res.g.shape == (n,) and res.g.dtype == np.float64
    assert res.method == method
    assert res.converged, res.message
    assert rel_err(res.g, ref) <= 1e-8
    assert res.residual <= 1e-12
    assert true_residual(G, res.g, r) <= 1e-11
    if method == "exact":
        assert res.iterations == 0 and res.preconditioner is None
    elif method == "cg":
        assert res.iterations > 0 and res.preconditioner is None
    else:
        assert res.iterations > 0
        P = res.preconditioner
        assert isinstance(P, sg.SketchPreconditioner)
        assert P.sketch == sketch and P.n == n and P.damping == damping


@pytest.mark.parametrize("method,sketch", SOLVERS, ids=SOLVER_IDS)
@pytest.mark.parametrize("threshold", [0.0, 0.4])
def test_matches_explicit_dense_jacobian(method, sketch, threshold):
    # The reference never touches the library: Jd row i = kron(a * D[i], x_i) / sqrt(m).
    n, m, d = 60, 40, 7
    J, r, (X, W, a) = make_problem(n, m, d, seed=3, threshold=threshold)
    Jd = ref_jacobian(X, W, a, threshold)
    kw = {} if sketch is None else {"sketch": sketch}
    for damping in (0.0, 0.3):
        ref = np.linalg.solve(Jd @ Jd.T + damping * np.eye(n), r)
        res = sg.solve_gn(J, r, method=method, damping=damping, tol=1e-12, **kw)
        assert res.converged, res.message
        assert rel_err(res.g, ref) <= 1e-8, (damping, rel_err(res.g, ref))


def test_array_like_rhs(small_problem):
    J, r, _ = small_problem
    a = sg.solve_gn(J, r, tol=1e-10)
    b = sg.solve_gn(J, list(r), tol=1e-10)
    c = sg.solve_gn(J, r.astype(np.float32), tol=1e-10)
    assert np.array_equal(a.g, b.g)
    ref = np.linalg.solve(J.gram(), r.astype(np.float32).astype(np.float64))
    assert rel_err(c.g, ref) <= 1e-8


def test_zero_rhs(small_problem):
    J, r, _ = small_problem
    for method in ("sketch", "cg", "exact"):
        res = sg.solve_gn(J, np.zeros_like(r), method=method)
        assert res.converged and np.array_equal(res.g, np.zeros_like(r)), method
        assert res.residual == 0.0 and res.iterations == 0


def test_inputs_not_modified(small_problem):
    J, r, _ = small_problem
    r0 = r.copy()
    x0 = np.full_like(r, 0.1)
    x00 = x0.copy()
    sg.solve_gn(J, r, x0=x0)
    sg.solve_gn(J, r, method="cg", x0=x0)
    assert np.array_equal(r, r0) and np.array_equal(x0, x00)


def test_timings_and_fields(small_problem):
    J, r, _ = small_problem
    res = sg.solve_gn(J, r)
    for key in ("sketch", "factorization", "products", "preconditioner", "total"):
        assert res.timings[key] >= 0, key
    assert res.timings["total"] > 0
    assert res.timings["sketch"] > 0 and res.timings["factorization"] > 0
    assert res.message == ""
    exact = sg.solve_gn(J, r, method="exact")
    for key in ("gram", "cholesky", "total"):
        assert exact.timings[key] >= 0, key
    assert exact.message == ""
    cg = sg.solve_gn(J, r, method="cg")
    assert cg.timings["sketch"] == 0 and cg.timings["factorization"] == 0


@pytest.mark.parametrize("method", ["sketch", "cg"])
def test_unattainable_tolerance(small_problem, method):
    # 1e-16 is below what double precision attains: the solve stops (stagnation), reports where it got
    # to, and says why -- a message about the iteration limit only when the limit was reached.
    J, r, _ = small_problem
    for maxiter in (None, 10**4):
        res = sg.solve_gn(J, r, method=method, tol=1e-16, maxiter=maxiter)
        assert not res.converged and res.message
        assert res.residual < 1e-12 and np.all(np.isfinite(res.g))
        limit = re.search(r"within (\d+) iterations", res.message)
        if limit:
            assert int(limit.group(1)) == res.iterations, (res.message, res.iterations)


@pytest.mark.parametrize("method", ["sketch", "cg"])
def test_iteration_limit_is_a_result(method):
    J, r, _ = make_problem(200, 256, 8, seed=2)
    G = system(J)
    res = sg.solve_gn(J, r, method=method, tol=1e-12, maxiter=4)
    assert res.iterations == 4
    assert not res.converged and res.message
    assert np.all(np.isfinite(res.g))
    # the reported residual is the true one, not the recursively updated one
    assert abs(res.residual - true_residual(G, res.g, r)) <= 1e-10 * max(1.0, res.residual)
    assert res.residual > 1e-12  # (not monotone in CG: may exceed 1 after a few iterations)
    zero = sg.solve_gn(J, r, method=method, maxiter=0)
    assert zero.iterations == 0 and not zero.converged
    assert np.array_equal(zero.g, np.zeros_like(r)) and zero.residual == 1.0


# --------------------------------------------------------------------------------------------
# Conditioning: the sketch makes the iteration count independent of cond(J J^T)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", CONDITION_TARGETS)
def test_iterations_independent_of_conditioning(conditioned, target):
    J, r, cond = conditioned[target]
    assert abs(np.log10(cond / target)) <= 0.5, cond
    G = system(J)
    sketch = sg.solve_gn(J, r, tol=1e-6)
    assert sketch.converged, sketch.message
    assert sketch.iterations <= 60, sketch.iterations
    assert true_residual(G, sketch.g, r) <= 1.01e-6
    loose = sg.solve_gn(J, r, tol=1e-2, preconditioner=sketch.preconditioner)
    assert loose.converged and loose.iterations <= 20, loose.iterations
    assert true_residual(G, loose.g, r) <= 1.01e-2
    if target >= 1e5:
        # Plain CG needs about sqrt(cond) log(1/eps) iterations: it must not be done within 3x the
        # sketch's count (stopped there to keep the test fast).
        cg = sg.solve_gn(J, r, method="cg", tol=1e-6, maxiter=3 * sketch.iterations)
        assert not cg.converged, (cg.iterations, sketch.iterations)


def test_iteration_counts_barely_grow_with_conditioning(conditioned):
    its = [sg.solve_gn(conditioned[t][0], conditioned[t][1], tol=1e-6).iterations for t in CONDITION_TARGETS]
    conds = [conditioned[t][2] for t in CONDITION_TARGETS]
    assert conds[-1] / conds[0] > 1e5
    # cond grows by ~1e6; the iteration count by well under 2x
    assert max(its) <= 2 * min(its), its


def test_cg_iterations_grow_with_conditioning(conditioned):
    # The control for the test above: without the preconditioner the count does grow.
    (J0, r0, _), (J1, r1, _) = conditioned[1e2], conditioned[1e5]
    well = sg.solve_gn(J0, r0, method="cg", tol=1e-6)
    assert well.converged
    ill = sg.solve_gn(J1, r1, method="cg", tol=1e-6, maxiter=3 * well.iterations)
    assert not ill.converged, (well.iterations, ill.iterations)


# --------------------------------------------------------------------------------------------
# Determinism, threads, reuse, warm starts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["sketch", "cg", "exact"])
def test_same_seed_same_answer(big_problem, method):
    J, r, _ = big_problem
    kw = {"maxiter": 40} if method == "cg" else {}
    a = sg.solve_gn(J, r, method=method, seed=11, n_threads=2, tol=1e-10, **kw)
    b = sg.solve_gn(J, r, method=method, seed=11, n_threads=2, tol=1e-10, **kw)
    assert np.array_equal(a.g, b.g)
    assert a.iterations == b.iterations


def test_different_seed_different_preconditioner_same_solution(small_problem):
    J, r, _ = small_problem
    a = sg.solve_gn(J, r, seed=1, tol=1e-12)
    b = sg.solve_gn(J, r, seed=2, tol=1e-12)
    assert not np.array_equal(a.preconditioner.R, b.preconditioner.R)
    assert rel_err(a.g, b.g) <= 1e-9
    c = sg.solve_gn(J, r, seed=np.random.default_rng(4), tol=1e-12)
    d = sg.solve_gn(J, r, seed=np.random.default_rng(4), tol=1e-12)
    assert np.array_equal(c.preconditioner.R, d.preconditioner.R)


@pytest.mark.parametrize("method", ["sketch", "cg", "exact"])
def test_thread_count_invariance(big_problem, method):
    J, r, _ = big_problem
    # CG with a fixed number of iterations: the iterates themselves must agree.
    kw = {"maxiter": 30, "tol": 1e-14} if method == "cg" else {"tol": 1e-10}
    one = sg.solve_gn(J, r, method=method, n_threads=1, **kw)
    two = sg.solve_gn(J, r, method=method, n_threads=2, **kw)
    assert rel_err(two.g, one.g) <= 1e-12
    assert abs(two.iterations - one.iterations) <= 1
    if method == "sketch":
        assert rel_err(two.preconditioner.R, one.preconditioner.R) <= 1e-12


def test_reused_preconditioner(small_problem):
    J, r, _ = small_problem
    first = sg.solve_gn(J, r, tol=1e-12, seed=3)
    P = first.preconditioner
    R_before = P.R.copy()
    r2 = np.random.default_rng(8).standard_normal(J.n)
    reused = sg.solve_gn(J, r2, preconditioner=P, tol=1e-12)
    fresh = sg.solve_gn(J, r2, tol=1e-12, seed=3)
    assert reused.preconditioner is P
    assert reused.timings["sketch"] == 0 and reused.timings["factorization"] == 0
    assert np.array_equal(P.R, R_before)
    assert reused.converged
    assert rel_err(reused.g, fresh.g) <= 1e-10
    assert rel_err(reused.g, np.linalg.solve(J.gram(), r2)) <= 1e-8
    # The seed, sketch and sketch_size arguments do not matter once a preconditioner is given.
    other = sg.solve_gn(J, r2, preconditioner=P, tol=1e-12, seed=99, sketch="gaussian", sketch_size=4 * J.n + 7)
    assert np.array_equal(other.g, reused.g)


def test_preconditioner_for_other_damping_or_jacobian_still_solves():
    J, r, (X, W, a) = make_problem(200, 256, 8, seed=6)
    P = sg.SketchPreconditioner(J, damping=0.0, seed=1)
    res = sg.solve_gn(J, r, damping=0.05, preconditioner=P, tol=1e-10)
    assert res.converged
    assert rel_err(res.g, np.linalg.solve(system(J, 0.05), r)) <= 1e-8
    # An aged preconditioner: the Jacobian at slightly moved weights (same shape).
    J2 = sg.ReLUJacobian(X, W + 0.05 * np.random.default_rng(2).standard_normal(W.shape), a)
    res2 = sg.solve_gn(J2, r, preconditioner=P, tol=1e-10)
    assert res2.converged
    assert rel_err(res2.g, np.linalg.solve(J2.gram(), r)) <= 1e-7


@pytest.mark.parametrize("method", ["sketch", "cg"])
def test_warm_start_at_solution(small_problem, method):
    J, r, _ = small_problem
    x0 = np.linalg.solve(J.gram(), r)
    res = sg.solve_gn(J, r, method=method, x0=x0, tol=1e-8)
    assert res.iterations == 0 and res.converged
    assert np.array_equal(res.g, x0)
    assert res.residual <= 1e-8


@pytest.mark.parametrize("method", ["sketch", "cg"])
def test_warm_start_near_solution_saves_iterations(method):
    J, r, _ = make_problem(200, 256, 8, seed=4)
    G = system(J, 1e-3)
    sol = np.linalg.solve(G, r)
    cold = sg.solve_gn(J, r, method=method, damping=1e-3, tol=1e-10)
    x0 = sol * (1 + 1e-4 * np.random.default_rng(0).standard_normal(J.n))
    warm = sg.solve_gn(J, r, method=method, damping=1e-3, tol=1e-10, x0=x0)
    assert warm.converged and warm.iterations < cold.iterations
    assert rel_err(warm.g, sol) <= 1e-8
    # the residual is relative to r, not to the initial residual
    assert true_residual(G, warm.g, r) <= 1.01e-10


def test_refresh():
    J, r, (X, W, a) = make_problem(200, 256, 8, seed=9)
    P = sg.SketchPreconditioner(J, seed=4)
    R1 = P.R.copy()
    J2 = sg.ReLUJacobian(X, W + 0.3 * np.random.default_rng(1).standard_normal(W.shape), a)
    assert P.refresh(J2) is P
    assert P.R.shape == R1.shape and not np.allclose(P.R, R1)
    assert rel_err(P.R, sg.SketchPreconditioner(J2, seed=4).R) <= 1e-13
    assert P.timings["sketch"] > 0
    # back to the first Jacobian: the same R as before (same seed)
    P.refresh(J)
    assert rel_err(P.R, R1) <= 1e-13
    # a different shape is refused, and leaves the preconditioner as it was
    for shape in [(201, 256, 8), (200, 255, 8), (200, 256, 9)]:
        Xs, Ws, As = make_data(*shape, seed=1)
        with pytest.raises(ValueError, match=r"\bJ\b"):
            P.refresh(sg.ReLUJacobian(Xs, Ws, As))
    assert rel_err(P.R, R1) <= 1e-13
    with pytest.raises(TypeError, match=r"\bJ\b"):
        P.refresh(J.gram())


# --------------------------------------------------------------------------------------------
# Singular systems with damping = 0
# --------------------------------------------------------------------------------------------


def singular_problems():
    wide = make_problem(100, 8, 4, seed=2)  # n = 100 > m d = 32: rank(J J^T) <= 32
    repeated = make_problem(120, 256, 8, seed=3, duplicate=True)  # 60 distinct samples
    return {"n>md": wide, "repeated": repeated}


SINGULAR = singular_problems()


def check_singular_result(res, G, r, tol):
    assert np.all(np.isfinite(res.g)), res.message
    assert np.isfinite(res.residual)
    if res.converged:
        assert res.residual <= tol
    else:
        # "[0, 1]-ish": g = 0 has relative residual 1, and the CG residual is not monotone, but an
        # answer far worse than g = 0 is no answer
        assert 0 <= res.residual <= 10.0, (res.residual, res.iterations, res.message)
        assert res.message
    true = true_residual(G, res.g, r)
    assert abs(res.residual - true) <= 1e-8 * max(1.0, true), (res.residual, true)
    # a message about the iteration limit must be about this run's limit
    limit = re.search(r"within (\d+) iterations", res.message)
    if limit:
        assert int(limit.group(1)) == res.iterations, (res.message, res.iterations)


@pytest.mark.parametrize("rhs", ["consistent", "inconsistent"])
@pytest.mark.parametrize("method,sketch", [("sketch", "kronecker"), ("sketch", "gaussian"), ("cg", None)])
@pytest.mark.parametrize("kind", list(SINGULAR))
def test_singular_iterative(kind, method, sketch, rhs):
    J, r, _ = SINGULAR[kind]
    G = system(J)
    assert np.linalg.matrix_rank(G) < J.n
    if rhs == "consistent":  # r in the range of J J^T
        r = G @ np.random.default_rng(5).standard_normal(J.n)
    kw = {} if sketch is None else {"sketch": sketch}
    for tol in (1e-6, 1e-13):
        res = sg.solve_gn(J, r, method=method, tol=tol, **kw)
        check_singular_result(res, G, r, tol)
        if rhs == "inconsistent":
            # the residual of a least-squares solution is bounded away from 0
            assert not res.converged
        elif tol == 1e-6:
            # CG converges on a consistent semi-definite system
            assert res.converged, (res.residual, res.message)


@pytest.mark.parametrize("rhs", ["consistent", "inconsistent"])
@pytest.mark.parametrize("kind", list(SINGULAR))
def test_singular_exact(kind, rhs):
    J, r, _ = SINGULAR[kind]
    G = system(J)
    if rhs == "consistent":
        r = G @ np.random.default_rng(5).standard_normal(J.n)
    res = sg.solve_gn(J, r, method="exact")
    assert np.all(np.isfinite(res.g))
    assert "damping" in res.message
    # (the residual is measured with J's products, the reference with G: they differ by the rounding of
    # forming G g, about eps ||G|| ||g|| / ||r||, large here where g is huge)
    rounding = 64 * np.finfo(float).eps * np.linalg.norm(G, 2) * np.linalg.norm(res.g) / np.linalg.norm(r)
    assert abs(res.residual - true_residual(G, res.g, r)) <= 1e-8 * max(1.0, res.residual) + rounding
    if rhs == "consistent":
        assert res.converged and res.residual <= 1e-6
    else:
        assert not res.converged


@pytest.mark.parametrize("method,sketch", SOLVERS, ids=SOLVER_IDS)
@pytest.mark.parametrize("kind", list(SINGULAR))
def test_singular_with_damping_is_regular(kind, method, sketch):
    J, r, _ = SINGULAR[kind]
    ref = np.linalg.solve(system(J, 1e-2), r)
    kw = {} if sketch is None else {"sketch": sketch}
    res = sg.solve_gn(J, r, method=method, damping=1e-2, tol=1e-12, **kw)
    assert res.converged, res.message
    assert rel_err(res.g, ref) <= 1e-8


# --------------------------------------------------------------------------------------------
# The preconditioner
# --------------------------------------------------------------------------------------------


def dense_sketched_operator(kind, P, Jd, m, d, seed):
    """S Jd^T for the public sketch the preconditioner documents (same seed)."""
    s = P.sketch_size
    if kind == "kronecker":
        return sg.KroneckerSRHT(m, d, s, seed=seed) @ Jd.T
    if kind == "kronecker_rows":
        return dense_row_sketch(m, d, s, seed) @ Jd.T
    return sg.SRHT(m * d, s, seed=seed) @ Jd.T


def dense_row_sketch(m, d, s, seed):
    """The "kronecker_rows" sketch as a dense (s, m d) matrix: (1/sqrt(s)) (R_P H D1) (x) (H D2) on the
    unpadded coordinates (row k d_pad + q, column r d + c)."""
    m_pad, d_pad = 1 << (m - 1).bit_length(), 1 << (d - 1).bit_length()
    rows, signs_u, signs_x = _core.neuron_row_sketch_params(m, d, s // d_pad, seed)
    A = scipy.linalg.hadamard(m_pad)[rows][:, :m] * signs_u
    B = scipy.linalg.hadamard(d_pad)[:, :d] * signs_x
    return np.kron(A, B) / np.sqrt(s)


@pytest.fixture(scope="module")
def modest():
    n, m, d = 150, 128, 8
    J, r, (X, W, a) = make_problem(n, m, d, seed=12)
    return J, ref_jacobian(X, W, a, 0.0)


@pytest.mark.parametrize("damping", [0.0, 0.05])
@pytest.mark.parametrize("sketch", SKETCHES)
def test_preconditioner_attributes(modest, sketch, damping):
    J, _ = modest
    n = J.n
    P = sg.SketchPreconditioner(J, sketch=sketch, damping=damping, seed=2)
    R = P.R
    assert R.shape == (n, n) and R.dtype == np.float64
    assert np.all(np.isfinite(R))
    assert np.array_equal(np.tril(R, -1), np.zeros((n, n))), "R must be upper triangular"
    assert np.all(np.diag(R) != 0)
    assert P.n == n and P.sketch == sketch and P.damping == damping
    assert P.sketch_size in (3 * n, 4 * n)
    assert P.factorization_ in ("cholqr", "qr")
    assert P.timings["sketch"] >= 0 and P.timings["factorization"] >= 0
    assert "SketchPreconditioner" in repr(P)


@pytest.mark.parametrize("damping", [0.0, 0.05])
@pytest.mark.parametrize("sketch", ["kronecker", "kronecker_rows", "srht"])
def test_R_factors_the_sketch(modest, sketch, damping):
    J, Jd = modest
    n, m, d = J.n, J.m, J.d
    for factorization in ("qr", "cholqr", "auto"):
        P = sg.SketchPreconditioner(J, sketch=sketch, damping=damping, seed=7, factorization=factorization)
        SA = dense_sketched_operator(sketch, P, Jd, m, d, seed=7)
        ref = SA.T @ SA + damping * np.eye(n)
        assert rel_err(P.R.T @ P.R, ref) <= 1e-12, factorization


@pytest.mark.parametrize("damping", [0.0, 0.05])
@pytest.mark.parametrize("sketch", SKETCHES)
def test_qr_and_cholqr_agree(modest, sketch, damping):
    J, _ = modest
    Pq = sg.SketchPreconditioner(J, sketch=sketch, damping=damping, seed=5, factorization="qr")
    Pc = sg.SketchPreconditioner(J, sketch=sketch, damping=damping, seed=5, factorization="cholqr")
    Pa = sg.SketchPreconditioner(J, sketch=sketch, damping=damping, seed=5)
    assert Pq.factorization_ == "qr" and Pc.factorization_ == "cholqr"
    gq, gc = Pq.R.T @ Pq.R, Pc.R.T @ Pc.R
    assert rel_err(gc, gq) <= 1e-8
    assert rel_err(Pa.R.T @ Pa.R, gq) <= 1e-8
    # R itself is unique up to the signs of its rows
    assert rel_err(np.abs(Pq.R), np.abs(Pc.R)) <= 1e-8


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("sketch", SKETCHES)
def test_preconditioned_operator_is_well_conditioned(modest, sketch, factor):
    J, Jd = modest
    n = J.n
    cond_plain = np.linalg.cond(Jd.T)
    P = sg.SketchPreconditioner(J, sketch=sketch, sketch_size=factor * n, seed=1)
    if sketch == "kronecker_rows":  # whole rows of the grid: rounded up to a multiple of d_pad
        d_pad = 1 << (J.d - 1).bit_length()
        assert P.sketch_size == -(-factor * n // d_pad) * d_pad
    else:
        assert P.sketch_size == factor * n
    c = np.linalg.cond(scipy.linalg.solve_triangular(P.R, Jd, trans="T").T)  # Jd^T R^-1
    assert c < 10, c
    assert c < cond_plain
    # with damping: A = [Jd^T; sqrt(damping) I]
    Pd = sg.SketchPreconditioner(J, sketch=sketch, sketch_size=factor * n, seed=1, damping=0.1)
    A = np.vstack([Jd.T, np.sqrt(0.1) * np.eye(n)])
    assert np.linalg.cond(A @ np.linalg.inv(Pd.R)) < 10


@pytest.mark.parametrize("sketch", SKETCHES)
def test_preconditioner_solves(modest, rng, sketch):
    J, _ = modest
    P = sg.SketchPreconditioner(J, sketch=sketch, seed=3)
    z = rng.standard_normal(J.n)
    ref = scipy.linalg.solve_triangular(P.R, z)
    ref_t = scipy.linalg.solve_triangular(P.R, z, trans="T")
    assert rel_err(P.solve(z), ref) <= 1e-12
    assert rel_err(P.solve_transpose(z), ref_t) <= 1e-12
    assert rel_err(P.R @ P.solve(z), z) <= 1e-12
    assert rel_err(P.R.T @ P.solve_transpose(z), z) <= 1e-12
    for nt in (1, 2):
        assert rel_err(P.solve(z, n_threads=nt), ref) <= 1e-12
        assert rel_err(P.solve_transpose(z, n_threads=nt), ref_t) <= 1e-12
    with pytest.raises(ValueError, match=r"\bz\b"):
        P.solve(np.ones(J.n + 1))
    with pytest.raises(ValueError, match=r"\bz\b"):
        P.solve_transpose(np.full(J.n, np.nan))


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 15, 16, 17, 33, 130])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_triangular_kernels(simd_level, n, dtype):
    # The SIMD triangular solves of every path (float32 R: what PCG applies) against SciPy: sizes
    # around the 8-row blocks and 16-lane groups, and their tails.
    from sketchgn import _core

    rng = np.random.default_rng(n)
    R = (np.triu(rng.standard_normal((n, n))) + 4 * np.eye(n)).astype(dtype)
    z = rng.standard_normal(n)
    R64 = R.astype(np.float64)
    for transpose, ref in ((False, scipy.linalg.solve_triangular(R64, z)),
                           (True, scipy.linalg.solve_triangular(R64, z, trans="T"))):
        y = _core.solve_upper(R, z, transpose, 1)
        assert rel_err(y, ref) <= 1e-12, (simd_level, transpose)
        # R y reproduces z (an identity, independent of SciPy)
        back = (R64.T if transpose else R64) @ y
        assert rel_err(back, z) <= 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_triangular_solves_split_over_threads(dtype):
    # From n = 2048 the solves run in blocks of 64 rows split over the threads: the same bits for any
    # thread count, and right (n = 2100: a last block of 52 rows, uneven thread shares).
    from sketchgn import _core

    n = 2100
    rng = np.random.default_rng(11)
    R = (np.triu(rng.standard_normal((n, n))) / np.sqrt(n) + 2 * np.eye(n)).astype(dtype)
    z = rng.standard_normal(n)
    R64 = R.astype(np.float64)
    for transpose in (False, True):
        ref = scipy.linalg.solve_triangular(R64, z, trans="T" if transpose else "N")
        ys = [_core.solve_upper(R, z, transpose, nt) for nt in (1, 2, 3)]
        assert rel_err(ys[0], ref) <= 1e-12
        assert all(np.array_equal(y, ys[0]) for y in ys[1:])


def test_preconditioner_solves_big(big_problem):
    # n = 640 with several threads.
    J, r, _ = big_problem
    P = sg.SketchPreconditioner(J, seed=1, n_threads=2)
    assert rel_err(P.solve(r, n_threads=2), scipy.linalg.solve_triangular(P.R, r)) <= 1e-11
    assert rel_err(P.solve_transpose(r, n_threads=2), scipy.linalg.solve_triangular(P.R, r, trans="T")) <= 1e-11


def test_preconditioner_seed():
    J, _, _ = make_problem(80, 64, 8, seed=0)
    for sketch in SKETCHES:
        a = sg.SketchPreconditioner(J, sketch=sketch, seed=10)
        b = sg.SketchPreconditioner(J, sketch=sketch, seed=10)
        c = sg.SketchPreconditioner(J, sketch=sketch, seed=11)
        assert np.array_equal(a.R, b.R), sketch
        assert not np.allclose(a.R.T @ a.R, c.R.T @ c.R), sketch


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def _other_shape_preconditioner():
    J2, _, _ = make_problem(50, 64, 5, seed=1)  # same n, different d
    return sg.SketchPreconditioner(J2)


BAD_SOLVE_ARGS = [
    pytest.param({"r": np.ones(51)}, ValueError, r"\br\b", id="r-too-long"),
    pytest.param({"r": np.ones(49)}, ValueError, r"\br\b", id="r-too-short"),
    pytest.param({"r": np.ones((50, 1))}, ValueError, r"\br\b", id="r-2d"),
    pytest.param({"r": np.r_[np.nan, np.ones(49)]}, ValueError, r"\br\b", id="r-nan"),
    pytest.param({"r": np.r_[np.ones(49), np.inf]}, ValueError, r"\br\b", id="r-inf"),
    pytest.param({"r": np.ones(50, dtype=complex)}, TypeError, r"\br\b", id="r-complex"),
    pytest.param({"damping": -1e-3}, ValueError, "damping", id="damping-negative"),
    pytest.param({"damping": np.nan}, ValueError, "damping", id="damping-nan"),
    pytest.param({"damping": np.inf}, ValueError, "damping", id="damping-inf"),
    pytest.param({"damping": "0.1"}, TypeError, "damping", id="damping-str"),
    pytest.param({"damping": None}, TypeError, "damping", id="damping-none"),
    pytest.param({"tol": 0.0}, ValueError, "tol", id="tol-zero"),
    pytest.param({"tol": -1e-6}, ValueError, "tol", id="tol-negative"),
    pytest.param({"tol": np.nan}, ValueError, "tol", id="tol-nan"),
    pytest.param({"tol": None}, TypeError, "tol", id="tol-none"),
    pytest.param({"maxiter": -1}, ValueError, "maxiter", id="maxiter-negative"),
    pytest.param({"maxiter": 10.0}, TypeError, "maxiter", id="maxiter-float"),
    pytest.param({"maxiter": True}, TypeError, "maxiter", id="maxiter-bool"),
    pytest.param({"sketch_size": 49}, ValueError, r"sketch_size.*\bn\b", id="sketch_size-below-n"),
    pytest.param({"sketch_size": 0}, ValueError, "sketch_size", id="sketch_size-zero"),
    pytest.param({"sketch_size": 10**9}, ValueError, "sketch_size", id="sketch_size-huge"),
    pytest.param({"sketch_size": 200.0}, TypeError, "sketch_size", id="sketch_size-float"),
    pytest.param({"method": "newton"}, ValueError, "method", id="method-unknown"),
    pytest.param({"method": None}, ValueError, "method", id="method-none"),
    pytest.param({"sketch": "countsketch"}, ValueError, "sketch", id="sketch-unknown"),
    pytest.param({"x0": np.ones(49)}, ValueError, "x0", id="x0-short"),
    pytest.param({"x0": np.ones((50, 1))}, ValueError, "x0", id="x0-2d"),
    pytest.param({"x0": np.full(50, np.nan)}, ValueError, "x0", id="x0-nan"),
    pytest.param({"n_threads": 0}, ValueError, "n_threads", id="n_threads-zero"),
    pytest.param({"seed": -1}, ValueError, "seed", id="seed-negative"),
    pytest.param({"preconditioner": "R"}, TypeError, "preconditioner", id="preconditioner-str"),
    pytest.param({"preconditioner": np.eye(50)}, TypeError, "preconditioner", id="preconditioner-array"),
    pytest.param(
        {"preconditioner": _other_shape_preconditioner}, ValueError, "preconditioner", id="preconditioner-shape"
    ),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_SOLVE_ARGS)
def test_solve_bad_input(small_problem, kwargs, exc, match):
    J, r, _ = small_problem
    kwargs = {k: (v() if callable(v) else v) for k, v in kwargs.items()}
    r = kwargs.pop("r", r)
    with pytest.raises(exc, match=match):
        sg.solve_gn(J, r, **kwargs)


def test_preconditioner_for_other_n_refused(small_problem):
    J, r, _ = small_problem
    J2, _, _ = make_problem(51, 64, 4, seed=1)
    with pytest.raises(ValueError, match="preconditioner"):
        sg.solve_gn(J, r, preconditioner=sg.SketchPreconditioner(J2))


def test_preconditioner_only_for_sketch_method(small_problem):
    J, r, _ = small_problem
    P = sg.SketchPreconditioner(J)
    for method in ("cg", "exact"):
        with pytest.raises(ValueError, match="preconditioner"):
            sg.solve_gn(J, r, method=method, preconditioner=P)


@pytest.mark.parametrize("J", [np.eye(5), None, "J", pytest.param("linop", id="LinearOperator")])
def test_J_must_be_a_relu_jacobian(small_problem, J):
    if isinstance(J, str) and J == "linop":
        J = small_problem[0].aslinearoperator()
    with pytest.raises(TypeError, match=r"\bJ\b"):
        sg.solve_gn(J, np.ones(5))
    with pytest.raises(TypeError, match=r"\bJ\b"):
        sg.SketchPreconditioner(J)


BAD_PRECONDITIONER_ARGS = [
    pytest.param({"sketch": "fast"}, ValueError, "sketch", id="sketch-unknown"),
    pytest.param({"factorization": "lu"}, ValueError, "factorization", id="factorization-unknown"),
    pytest.param({"factorization": None}, ValueError, "factorization", id="factorization-none"),
    pytest.param({"sketch_size": 10}, ValueError, r"sketch_size.*\bn\b", id="sketch_size-below-n"),
    pytest.param({"sketch_size": 10**9}, ValueError, "sketch_size", id="sketch_size-huge"),
    pytest.param(
        {"sketch_size": 10**9, "sketch": "gaussian"}, ValueError, "sketch_size", id="sketch_size-huge-gaussian"
    ),
    pytest.param({"sketch_size": 10**9, "sketch": "srht"}, ValueError, "sketch_size", id="sketch_size-huge-srht"),
    pytest.param({"sketch_size": "100"}, TypeError, "sketch_size", id="sketch_size-str"),
    pytest.param({"damping": -1.0}, ValueError, "damping", id="damping-negative"),
    pytest.param({"damping": np.nan}, ValueError, "damping", id="damping-nan"),
    pytest.param({"seed": 1.5}, TypeError, "seed", id="seed-float"),
    pytest.param({"n_threads": -3}, ValueError, "n_threads", id="n_threads-negative"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_PRECONDITIONER_ARGS)
def test_preconditioner_bad_input(small_problem, kwargs, exc, match):
    J, _, _ = small_problem
    with pytest.raises(exc, match=match):
        sg.SketchPreconditioner(J, **kwargs)


def test_largest_sketch_sizes_accepted(small_problem):
    # The limits are not off by one: the largest allowed sketch of each kind builds.
    J, r, _ = small_problem  # n = 50, m_pad d_pad = 256
    P = sg.SketchPreconditioner(J, sketch="kronecker", sketch_size=256)
    assert P.sketch_size == 256
    with pytest.raises(ValueError, match="sketch_size"):
        sg.SketchPreconditioner(J, sketch="kronecker", sketch_size=257)
    assert sg.SketchPreconditioner(J, sketch_size=J.n).sketch_size == J.n
    res = sg.solve_gn(J, r, sketch_size=J.n, tol=1e-10)
    assert res.converged


# --------------------------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------------------------


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import signal, sys
    import numpy as np
    import sketchgn as sg

    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = np.random.default_rng(0)
    # Large and ill-conditioned, so that CG keeps making (slow) progress for many seconds: the
    # solver stops early on stagnation, which an unattainable tol would trigger.
    n, m, d = 4000, 4096, 32
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X[1::2] = X[0::2] + 1e-3 * rng.standard_normal((n // 2, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    J = sg.ReLUJacobian(X, W, a)
    r = rng.standard_normal(n)
    print("started", flush=True)
    try:
        res = sg.solve_gn(J, r, method="cg", tol=1e-9, maxiter=10**12)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(0)
    print("finished", res.iterations, res.message, flush=True)
    sys.exit(3)
    """
)


def test_ctrl_c_interrupts_a_long_solve():
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "started", (line, proc.stderr.read() if proc.poll() is not None else "")
        time.sleep(0.5)
        assert proc.poll() is None, "the solve ended before the interrupt"
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the solve did not stop within 30 s of SIGINT")
        elapsed = time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "interrupted" in out, (out, err)
    assert proc.returncode == 0, (proc.returncode, err)
    assert elapsed < 2.0, elapsed


# --------------------------------------------------------------------------------------------------
# The products of the returned g (solve_gn(_with_products=True), what the estimator takes its step
# direction and curvature from): the float64 products of the solve's last residual check when they
# were of the returned g, scaled back by powers of two -- they must be bitwise J.rmatvec(g) and
# J.matvec of it, on every path (converged, stopped by maxiter, mixed or double, scaled r, damping).


@pytest.mark.parametrize("damping", [0.0, 1e3])
@pytest.mark.parametrize("r_scale", [1.0, 1e-200, 1e200])
@pytest.mark.parametrize("method", ["sketch", "cg", "exact"])
def test_solution_products_are_those_of_the_returned_g(method, r_scale, damping):
    J, r, _ = make_problem(120, 512, 8, seed=9)
    variants = [{}, {"precision": "double"}, {"x0": np.full(120, 0.5 * r_scale)}]
    if method != "exact":
        variants.append({"maxiter": 2})
    for kw in variants:
        res = sg.solve_gn(J, r * r_scale, method=method, damping=damping, tol=1e-9, _with_products=True, **kw)
        assert res.converged == ("maxiter" not in kw), (kw, res.message)
        JTg, JJTg = res._products
        ref = J.rmatvec(res.g)
        assert JTg.shape == (512, 8) and JJTg.shape == (120,)
        assert np.array_equal(JTg, ref), kw
        assert np.array_equal(JJTg, J.matvec(ref)), kw
    assert sg.solve_gn(J, r, method=method)._products is None
    # r = 0: g = 0 and its products are zeros (PCG returns before any product)
    zero = sg.solve_gn(J, np.zeros(120), method=method, _with_products=True)
    assert not np.any(zero.g) and not np.any(zero._products[0]) and not np.any(zero._products[1])


def test_solution_products_are_reused_not_recomputed(monkeypatch):
    # The point of handing them back: no products beyond the solve's own. PCG says so in its info; the
    # exact solve is counted through the Jacobian's rmatvec (one, for its residual check).
    J, r, _ = make_problem(300, 1024, 16, seed=4)
    for method in ("sketch", "cg"):
        res = sg.solve_gn(J, r, method=method, tol=1e-8)
        R = res.preconditioner._R_apply if res.preconditioner is not None else None
        for x0 in (np.zeros(300), 0.5 * res.g):
            g, info = _core.pcg(J._impl, r, 0.0, R, 1e-8, 1000, x0, 1, method == "sketch", True)
            assert info["status"] == "converged" and info["products_reused"], (method, info["status"])
            assert np.array_equal(info["jt_g"], J.rmatvec(g))
    calls = []
    original = J.rmatvec
    monkeypatch.setattr(J, "rmatvec", lambda *args, **kw: calls.append(1) or original(*args, **kw))
    res = sg.solve_gn(J, r, method="exact", _with_products=True)
    assert len(calls) == 1 and res._products is not None
