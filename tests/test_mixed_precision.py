"""Mixed-precision CG (solve_gn(precision=...)): the float32 operator J J^T against float64 at every SIMD
level, and the solves it drives against dense NumPy references -- the answer must meet tol in float64
exactly as a float64 solve does, and fall back to float64 where float32 cannot resolve the system.
Also the preconditioner factored in float32 (SketchPreconditioner(precision="single"))."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.linalg

import sketchgn as sg
from sketchgn import _core
from conftest import rel_err
from test_solver import conditioned_problem

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


# --------------------------------------------------------------------------------------------------
# The preconditioner factored in float32 (SketchPreconditioner(precision="single"), which solve_gn's
# mixed precision and the estimator build): R^T R against the Gram of the same sketch formed in NumPy,
# its quality against the float64 R, and the fallbacks to float64.

EPS32 = float(F32.eps)


@pytest.mark.parametrize("n", [300, 2300])  # one potrf call; panels of 256 from n = 2049 on
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cholesky_upper_matches_scipy(rng, n, dtype):
    B = rng.standard_normal((n, n + 40))
    C = (B @ B.T / n).astype(dtype)
    R = C.copy()
    assert _core.cholesky_upper(R) == 0
    ref = scipy.linalg.cholesky(C.astype(np.float64), lower=False)
    assert R.dtype == dtype and np.array_equal(R, np.triu(R))
    eps = np.finfo(dtype).eps
    assert rel_err(R.astype(np.float64), ref) <= 1e3 * eps  # (cond(C) ~ 1e3 here)
    R64 = R.astype(np.float64)
    assert rel_err(R64.T @ R64, C.astype(np.float64)) <= 10 * eps
    # not positive definite: LAPACK's info, the order of the failing minor
    C[5, 5] = -1.0
    assert _core.cholesky_upper(C.copy()) == 6
    with pytest.raises(TypeError, match="float32 or float64"):
        _core.cholesky_upper(np.eye(3, dtype=np.float16))


def sketch_gram(J, P, damping):
    """(S A)^T (S A) + damping I from the explicit sketch of P (float64, NumPy)."""
    T = _core.sketch_jacobian_transpose(J._impl, P.sketch_, P.sketch_size, P.seed, 1)
    return T @ T.T + damping * np.eye(J.n)


@pytest.mark.parametrize("damping", [0.0, 1e-2])
@pytest.mark.parametrize("sketch", ["kronecker_rows", "kronecker", "srht", "gaussian"])
def test_single_preconditioner_factors_the_sketch_gram(rng, sketch, damping):
    n, m, d = 160, 1024, 16
    X, W, a = problem(rng, n, m, d)
    J = sg.ReLUJacobian(X, W, a)
    single = sg.SketchPreconditioner(J, sketch=sketch, damping=damping, seed=3, precision="single")
    double = sg.SketchPreconditioner(J, sketch=sketch, damping=damping, seed=3)
    assert (single.precision_, single.precision, double.precision_) == ("single", "single", "double")
    assert single.sketch_ == double.sketch_ and single.factorization_ == "cholqr"
    R = single.R
    assert R.dtype == np.float32 and R.flags.c_contiguous and np.array_equal(R, np.triu(R))
    assert double.R.dtype == np.float64
    G = sketch_gram(J, single, damping)
    R64 = R.astype(np.float64)
    # Rounding: the Gram's entries (sums over s / d_pad rows or s cells) and the Cholesky's (sums over
    # n), each within a few eps32 of the products of norms; measured 0.6-0.7 eps32 for R^T R, and R
    # within 1.5-2 eps32 of the float64 R (cond(R) ~ 10 here), for every sketch and damping.
    err = rel_err(R64.T @ R64, G)
    assert err <= 5 * EPS32, err / EPS32
    assert rel_err(double.R.T @ double.R, G) <= 1e-12
    assert rel_err(R64, double.R) <= 20 * EPS32
    # its solves, as the float64 one's, against SciPy's on the same (float32) R
    z = rng.standard_normal(n)
    assert rel_err(single.solve(z), scipy.linalg.solve_triangular(R64, z)) <= 1e-10
    assert rel_err(single.solve_transpose(z), scipy.linalg.solve_triangular(R64, z, trans="T")) <= 1e-10
    assert "precision_='single'" in repr(single)


@pytest.mark.parametrize("target", [1e2, 1e5])
def test_single_preconditioner_preconditions_like_double(target):
    J, r, cond = conditioned_problem(target, n=400, m=2048, d=8)
    single = sg.SketchPreconditioner(J, precision="single", seed=1)
    double = sg.SketchPreconditioner(J, seed=1)
    assert single.precision_ == "single"
    # (float64 products: only the preconditioner differs)
    a = sg.solve_gn(J, r, preconditioner=single, tol=1e-8, precision="double")
    b = sg.solve_gn(J, r, preconditioner=double, tol=1e-8, precision="double")
    assert a.converged and b.converged
    assert abs(a.iterations - b.iterations) <= 1, (cond, a.iterations, b.iterations)
    G = dense_gram(J)
    assert np.linalg.norm(G @ a.g - r) <= 1.01e-8 * np.linalg.norm(r)


def test_single_preconditioner_falls_back_to_double_when_ill_conditioned():
    # cond ~ 1e8: R's pivot ratio is ~1e3 > 100, so the float32 factorization is not kept.
    J, r, cond = conditioned_problem(1e8, n=400, m=2048, d=8)
    single = sg.SketchPreconditioner(J, precision="single", seed=2)
    double = sg.SketchPreconditioner(J, seed=2)
    assert single.precision_ == "double" and single.R.dtype == np.float64
    assert np.array_equal(single.R, double.R)
    res = sg.solve_gn(J, r, tol=1e-6, seed=2)  # (mixed precision asks for "single" ...)
    assert res.converged and res.preconditioner.precision_ == "double"  # ... and gets float64


@pytest.mark.parametrize("case", ["huge X", "tiny X", "huge damping", "qr"])
def test_single_preconditioner_falls_back_to_double_out_of_float32_range(rng, case):
    n, m, d = 80, 512, 8
    X, W, a = problem(rng, n, m, d)
    damping, factorization = 0.0, "auto"
    if case == "huge X":
        X = X * 1e18  # Gram entries ~1e36: beyond what float32 keeps in range with headroom
    elif case == "tiny X":
        X = X * 1e-18
    elif case == "huge damping":
        damping = 1e200
    else:
        factorization = "qr"
    J = sg.ReLUJacobian(X, W, a)
    single = sg.SketchPreconditioner(J, precision="single", damping=damping, factorization=factorization)
    double = sg.SketchPreconditioner(J, damping=damping, factorization=factorization)
    assert single.precision_ == "double" and np.array_equal(single.R, double.R)
    r = rng.standard_normal(n)
    res = sg.solve_gn(J, r, damping=damping, tol=1e-8)
    assert res.converged, res.message
    assert res.preconditioner.precision_ == ("single" if case == "qr" else "double")


def test_solve_gn_builds_a_single_preconditioner_only_for_mixed_precision(rng):
    X, W, a = problem(rng, 300, 2048, 16)
    J = sg.ReLUJacobian(X, W, a)
    r = rng.standard_normal(300)
    mixed = sg.solve_gn(J, r, tol=1e-10)
    double = sg.solve_gn(J, r, tol=1e-10, precision="double")
    assert mixed.preconditioner.precision_ == "single" and mixed.preconditioner.R.dtype == np.float32
    assert double.preconditioner.precision_ == "double"
    ref = np.linalg.solve(dense_gram(J), r)
    assert rel_err(mixed.g, ref) <= 1e-7 and rel_err(double.g, ref) <= 1e-7
    assert abs(mixed.iterations - double.iterations) <= 4


def test_single_preconditioner_is_the_same_for_any_thread_count_and_survives_pickle(rng):
    X, W, a = problem(rng, 700, 4096, 32)
    J = sg.ReLUJacobian(X, W, a)
    one = sg.SketchPreconditioner(J, precision="single", n_threads=1)
    two = sg.SketchPreconditioner(J, precision="single", n_threads=2)
    assert one.precision_ == "single" and np.array_equal(one.R, two.R)
    back = pickle.loads(pickle.dumps(two))
    assert back.precision_ == "single" and back.R.dtype == np.float32 and np.array_equal(back.R, two.R)
    assert np.array_equal(back.refresh(J).R, two.R)


@pytest.mark.parametrize("bad", ["mixed", "float32", "auto", "", 32, None])
def test_bad_preconditioner_precision_is_refused(rng, bad):
    X, W, a = problem(rng, 10, 64, 4)
    J = sg.ReLUJacobian(X, W, a)
    with pytest.raises(ValueError, match="precision must be one of"):
        sg.SketchPreconditioner(J, precision=bad)


@pytest.mark.parametrize("scale", [1e-22, 1e19])
def test_single_row_gram_keeps_its_precision_whatever_the_scale_of_a(rng, scale):
    # J's entries are |a| |x| / sqrt(m): a tiny a with a huge X (or the reverse) is a well-scaled J, but
    # the neuron factor Uhat carries a's scale, and its float32 SYRK would under- (over-)flow unless
    # Uhat is rescaled first (found in review: R kept in "single" yet 3-7% off the float64 R).
    n, m, d = 200, 2048, 16
    X, W, a = problem(rng, n, m, d)
    J = sg.ReLUJacobian(X / scale, W, a * scale)
    single = sg.SketchPreconditioner(J, sketch="kronecker_rows", precision="single", seed=1)
    double = sg.SketchPreconditioner(J, sketch="kronecker_rows", seed=1)
    assert single.precision_ == "single"
    R64 = single.R.astype(np.float64)
    G = sketch_gram(J, single, 0.0)
    assert rel_err(R64.T @ R64, G) <= 5 * EPS32
    assert rel_err(R64, double.R) <= 20 * EPS32


def test_a_preconditioner_that_fell_back_refreshes_in_double(rng):
    J_ill, _, _ = conditioned_problem(1e8, n=400, m=2048, d=8)
    P = sg.SketchPreconditioner(J_ill, precision="single", seed=2)
    assert P.precision == "single" and P.precision_ == "double"
    J_well = sg.ReLUJacobian(*problem(rng, 400, 2048, 8))
    assert sg.SketchPreconditioner(J_well, precision="single", seed=2).precision_ == "single"
    # (a refusal is remembered: the next Jacobians of a fit are close to this one)
    assert P.refresh(J_well).precision_ == "double" and P.R.dtype == np.float64


def test_unpickling_a_preconditioner_from_before_the_precision_option(rng):
    J = sg.ReLUJacobian(*problem(rng, 60, 256, 8))
    P = sg.SketchPreconditioner(J)
    state = dict(P.__dict__)
    del state["precision"], state["precision_"]
    old = object.__new__(sg.SketchPreconditioner)
    old.__setstate__(state)
    assert (old.precision, old.precision_) == ("double", "double") and "precision_='double'" in repr(old)
    assert np.array_equal(old.refresh(J).R, P.R)
