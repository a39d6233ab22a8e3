"""Mixed-precision CG (solve_gn(precision=...)): the float32 operator J J^T against float64 at every SIMD
level, and the solves it drives against dense NumPy references -- the answer must meet tol in float64
exactly as a float64 solve does, and fall back to float64 where float32 cannot resolve the system."""

from __future__ import annotations

import numpy as np
import pytest

import sketchgn as sg
from sketchgn import _core

F32 = np.finfo(np.float32)


def problem(rng, n, m, d, *, duplicate_eps=None, signs=True):
    X = rng.standard_normal((n, d))
    if duplicate_eps is not None:
        # near-duplicate pairs of samples: an ill-conditioned J J^T (condition number ~ 1 / eps^2)
        X[1::2] = X[0::2][: n // 2] + duplicate_eps * rng.standard_normal((n // 2, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m) if signs else rng.standard_normal(m)
    return X, W, a


def dense_gram(J):
    G = J.gram()
    # (gram is tested against the explicit Jacobian in test_jacobian.py)
    return G


def abs_jacobian(X, W, a, threshold=0.0):
    D = (X @ W.T > threshold).astype(float)
    m = W.shape[0]
    return (np.abs(a) * D)[:, :, None] * np.abs(X)[:, None, :] / np.sqrt(m)


# (n, m, d): tails in every dimension (n not a multiple of 4, m of 64, d of 8), and one problem large
# enough to run on several threads
SHAPES = [(7, 70, 3), (33, 130, 17), (130, 1000, 32), (600, 2048, 40)]


@pytest.mark.parametrize("signs", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_float32_operator_matches_float64_gram(simd_level, rng, shape, signs):
    n, m, d = shape
    X, W, a = problem(rng, n, m, d, signs=signs)
    J = sg.ReLUJacobian(X, W, a, path="dense")
    p = rng.standard_normal(n)
    q32 = _core.gram_apply_f32(J._impl, p, 1)
    q = dense_gram(J) @ p
    # Rounding: float32 sums over n samples (J^T p), then d features and m neurons (J of it), each
    # term bounded by the same product of absolute values |J| |J|^T |p|. The worst case, (n + m + 2d)
    # eps32 times it, is loose enough to hide a dropped neuron; random data stay within about 0.5 eps32
    # of it (measured: 0.04 to 0.42 on every SIMD level), so 4 eps32 is the bound.
    A = abs_jacobian(X, W, a).reshape(n, m * d)
    bound = 4 * F32.eps * (A @ (A.T @ np.abs(p)))
    err = np.abs(q32 - q)
    assert np.all(err <= bound), f"max error / bound = {np.max(err / bound):.3g}"
    # and it is a float32 result, not a float64 one in disguise: typically far inside the bound, yet not
    # float64-accurate
    assert np.max(err / np.maximum(np.abs(q), 1e-300)) > 1e3 * np.finfo(float).eps


def test_float32_operator_is_the_same_for_any_thread_count(rng):
    X, W, a = problem(rng, 1500, 4096, 32)
    J = sg.ReLUJacobian(X, W, a)
    p = rng.standard_normal(1500)
    one = _core.gram_apply_f32(J._impl, p, 1)
    assert np.array_equal(one, _core.gram_apply_f32(J._impl, p, 2))
    assert np.array_equal(one, _core.gram_apply_f32(J._impl, p, 3))


def test_float32_operator_refuses_sparse_patterns_and_huge_entries(rng):
    X, W, a = problem(rng, 20, 128, 8)
    with pytest.raises(ValueError, match="sparse"):
        _core.gram_apply_f32(sg.ReLUJacobian(X, W, a, path="sparse")._impl, np.ones(20), 1)
    with pytest.raises(ValueError, match="float32 range"):
        _core.gram_apply_f32(sg.ReLUJacobian(X * 1e31, W, a)._impl, np.ones(20), 1)


@pytest.mark.parametrize("damping", [0.0, 1e-3, 10.0])
@pytest.mark.parametrize("method", ["sketch", "cg"])
def test_mixed_solve_matches_numpy(simd_level, rng, method, damping):
    n, m, d = 300, 2048, 32
    X, W, a = problem(rng, n, m, d)
    J = sg.ReLUJacobian(X, W, a)
    r = rng.standard_normal(n)
    A = dense_gram(J) + damping * np.eye(n)
    g_ref = np.linalg.solve(A, r)
    res = sg.solve_gn(J, r, method=method, damping=damping, tol=1e-12, precision="mixed")
    assert res.converged and res.residual <= 1e-12, (res.residual, res.message)
    assert np.linalg.norm(A @ res.g - r) / np.linalg.norm(r) <= 1e-11
    assert np.linalg.norm(res.g - g_ref) <= 1e-8 * np.linalg.norm(g_ref)
    # well conditioned: float32 all the way (several rounds to reach 1e-12), no fallback
    assert res.iterations_f32 == res.iterations > 0, (res.iterations, res.iterations_f32, res.message)
    assert res.message == ""


def test_mixed_costs_about_the_iterations_of_double(rng):
    X, W, a = problem(rng, 1000, 4096, 32)
    J = sg.ReLUJacobian(X, W, a)
    r = rng.standard_normal(1000)
    P = sg.SketchPreconditioner(J)
    double = sg.solve_gn(J, r, preconditioner=P, tol=1e-6, precision="double")
    mixed = sg.solve_gn(J, r, preconditioner=P, tol=1e-6, precision="mixed")
    assert double.iterations_f32 == 0 and double.converged and mixed.converged
    # restarting CG at each round loses little: at most a few more iterations than one float64 run
    assert mixed.iterations <= double.iterations + 4, (mixed.iterations, double.iterations)


def test_mixed_falls_back_to_double_where_float32_cannot_resolve_the_system(rng):
    # cond(J J^T) ~ 1e8: a float32 round cannot gain the factor 10 it must; plain CG (no preconditioner
    # to warn it off) tries one round, then float64 products finish the solve.
    n, m, d = 200, 2048, 32
    X, W, a = problem(rng, n, m, d, duplicate_eps=1e-4)
    J = sg.ReLUJacobian(X, W, a)
    G = dense_gram(J)
    assert np.linalg.cond(G) > 1e7
    r = rng.standard_normal(n)
    res = sg.solve_gn(J, r, method="cg", tol=1e-6, precision="mixed")
    assert res.converged and res.residual <= 1e-6, (res.residual, res.message)
    assert np.linalg.norm(G @ res.g - r) / np.linalg.norm(r) <= 1.01e-6
    assert 0 < res.iterations_f32 < res.iterations
    assert "float32" in res.message


def test_sketch_solve_of_an_ill_conditioned_system_starts_in_double(rng):
    # The pivots of R tell the sketch solve that float32 cannot help: no float32 round is wasted.
    n, m, d = 400, 2048, 32
    X, W, a = problem(rng, n, m, d, duplicate_eps=1e-4)
    J = sg.ReLUJacobian(X, W, a)
    r = rng.standard_normal(n)
    res = sg.solve_gn(J, r, tol=1e-6)  # precision="auto": mixed for "sketch" ...
    assert res.converged and res.iterations_f32 == 0 and res.message == ""  # ... but not here
    well = sg.ReLUJacobian(*problem(rng, n, m, d))
    assert sg.solve_gn(well, r, tol=1e-6).iterations_f32 > 0


def test_precision_auto_and_where_float32_does_not_apply(rng):
    X, W, a = problem(rng, 100, 512, 16)
    r = rng.standard_normal(100)
    J = sg.ReLUJacobian(X, W, a)
    assert sg.solve_gn(J, r, method="sketch").iterations_f32 > 0
    assert sg.solve_gn(J, r, method="cg").iterations_f32 == 0
    assert sg.solve_gn(J, r, method="sketch", precision="double").iterations_f32 == 0
    assert sg.solve_gn(J, r, method="exact", precision="mixed").iterations_f32 == 0
    # a sparse pattern: the float64 products (sparse lists), whatever was asked
    res = sg.solve_gn(sg.ReLUJacobian(X, W, a, path="sparse"), r, precision="mixed")
    assert res.converged and res.iterations_f32 == 0


def test_mixed_solve_is_deterministic_for_any_thread_count(rng):
    X, W, a = problem(rng, 1200, 4096, 32)
    J = sg.ReLUJacobian(X, W, a)
    r = rng.standard_normal(1200)
    P = sg.SketchPreconditioner(J, n_threads=1)
    one = sg.solve_gn(J, r, preconditioner=P, tol=1e-8, precision="mixed", n_threads=1)
    two = sg.solve_gn(J, r, preconditioner=P, tol=1e-8, precision="mixed", n_threads=2)
    assert one.iterations_f32 > 0
    assert np.array_equal(one.g, two.g) and one.iterations == two.iterations


@pytest.mark.parametrize("bad", ["single", "float32", "", 32, None, ["mixed"]])
def test_bad_precision_is_refused(rng, bad):
    X, W, a = problem(rng, 10, 64, 4)
    J = sg.ReLUJacobian(X, W, a)
    with pytest.raises(ValueError, match="precision must be one of"):
        sg.solve_gn(J, np.ones(10), precision=bad)
