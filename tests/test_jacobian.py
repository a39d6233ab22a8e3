"""sg.ReLUJacobian against an explicitly formed dense Jacobian and plain NumPy formulas.

The reference Jacobian is built row by row as the Kronecker product of the paper,
J_i = (1/sqrt(m)) * (a o D[i, :]) (x) x_i with D = (X @ W.T > threshold), and every product is checked
against it with an element-wise bound rtol * (|J| @ |v|) (the natural size of a rounding error of the
sum). Patterns are compared only on data where no pre-activation lies within 1e-9 of the threshold, so
the library's and NumPy's different summation orders cannot flip an activation.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import scipy.sparse.linalg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sketchgn as sg
from conftest import SIMD_LEVELS
from sketchgn import _core

RTOL = 1e-12
MARGIN = 1e-9

# (n, m, d): ones, primes, m not a multiple of 64, d not a multiple of 8, m over one 512-neuron block,
# n over one 128-row block of the transposed product.
SIZES = [
    (1, 1, 1),
    (7, 3, 5),
    (37, 70, 13),
    (64, 128, 16),
    (50, 257, 9),
    (3, 5, 33),
    (9, 1100, 3),
    (130, 600, 2),
]
THRESHOLD_KINDS = ["zero", "negative", "sparse", "empty", "full"]
PATHS = ["dense", "sparse"]


# --------------------------------------------------------------------------------------------
# References and data
# --------------------------------------------------------------------------------------------


def ref_pattern(X, W, threshold):
    return X @ W.T > threshold


def ref_jacobian(X, W, a, threshold):
    """The n x (m d) Jacobian, row i = (1/sqrt(m)) kron(a * D[i], x_i) (index r * d + j)."""
    n, d = X.shape
    m = W.shape[0]
    D = ref_pattern(X, W, threshold)
    J = np.empty((n, m * d))
    for i in range(n):
        J[i] = np.kron(a * D[i], X[i])
    return J / np.sqrt(m)


def ref_forward(X, W, a, threshold):
    return np.maximum(X @ W.T - threshold, 0.0) @ a / np.sqrt(W.shape[0])


def forward_scale(X, W, a, threshold):
    """sum_r |a_r| D_ir (|x_i| . |w_r| + |t|) / sqrt(m): the size of the rounding error of f."""
    D = ref_pattern(X, W, threshold)
    return ((np.abs(X) @ np.abs(W).T + abs(threshold)) * D) @ np.abs(a) / np.sqrt(W.shape[0])


def assert_within(got, ref, scale, rtol=RTOL, what=""):
    """|got - ref| <= rtol * scale element-wise (so entries with scale 0 must be exactly 0)."""
    got = np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    assert got.dtype == np.float64, f"{what}: dtype {got.dtype}"
    err = np.abs(got - ref)
    bound = rtol * np.asarray(scale)
    bad = ~(err <= bound)  # also catches NaN
    if np.any(bad):
        idx = np.argwhere(bad)[0]
        pytest.fail(
            f"{what}: {bad.sum()} entries out of tolerance; first at {tuple(idx)}: got "
            f"{got[tuple(idx)]!r}, expected {ref[tuple(idx)]!r} (bound {bound[tuple(idx)]!r})"
        )


def threshold_for(Z, kind):
    """A threshold of the given kind, halfway between two pre-activations when data-dependent."""
    if kind == "zero":
        return 0.0
    if kind == "empty":
        return 1e6
    if kind == "full":
        return -1e6
    q = {"negative": 0.3, "sparse": 0.95}[kind]
    v = np.unique(Z)
    if v.size == 1:
        return float(v[0] + (0.5 if q >= 0.5 else -0.5))
    k = min(int(q * v.size), v.size - 2)
    return float((v[k] + v[k + 1]) / 2)


def make_problem(rng, n, m, d, kind="zero", a_kind="normal", margin=MARGIN):
    """X (n, d), W (m, d), a (m,) and a threshold with no pre-activation within margin of it."""
    for _ in range(50):
        X = rng.standard_normal((n, d))
        W = rng.standard_normal((m, d))
        a = rng.standard_normal(m) if a_kind == "normal" else rng.choice([-1.0, 1.0], m)
        Z = X @ W.T
        t = threshold_for(Z, kind)
        if np.min(np.abs(Z - t)) > margin:
            return X, W, a, t
    raise RuntimeError("could not draw data away from the threshold")


@contextlib.contextmanager
def simd(level):
    previous = _core.simd_level()
    _core.set_simd_level(level)
    try:
        yield
    finally:
        _core.set_simd_level(previous)


# --------------------------------------------------------------------------------------------
# Against the explicit dense Jacobian
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", THRESHOLD_KINDS)
@pytest.mark.parametrize("n,m,d", SIZES)
def test_pattern_forward_and_attributes(simd_level, rng, n, m, d, kind, path):
    X, W, a, t = make_problem(rng, n, m, d, kind)
    J = sg.ReLUJacobian(X, W, a, threshold=t, path=path)
    D = ref_pattern(X, W, t)
    if kind == "empty":
        assert not D.any()
    if kind == "full":
        assert D.all()

    assert J.shape == (n, m * d)
    assert (J.n, J.m, J.d) == (n, m, d)
    assert J.threshold == t
    assert J.path == path
    P = J.pattern()
    assert P.dtype == np.bool_ and P.shape == (n, m)
    assert np.array_equal(P, D)
    assert J.nnz == int(D.sum())
    assert J.density == D.sum() / (n * m)

    f = J.forward()
    assert_within(f, ref_forward(X, W, a, t), forward_scale(X, W, a, t), what="forward")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", THRESHOLD_KINDS)
@pytest.mark.parametrize("n,m,d", SIZES)
def test_products_match_dense_jacobian(simd_level, rng, n, m, d, kind, path):
    X, W, a, t = make_problem(rng, n, m, d, kind)
    J = sg.ReLUJacobian(X, W, a, threshold=t, path=path)
    Jd = ref_jacobian(X, W, a, t)
    Ja = np.abs(Jd)
    k = 3

    V = rng.standard_normal((m, d))
    v = V.reshape(-1)
    got = J.matvec(V)
    assert_within(got, Jd @ v, Ja @ np.abs(v), what="matvec")
    assert np.array_equal(J.matvec(v), got), "matvec of (m*d,) and (m, d) differ"

    u = rng.standard_normal(n)
    assert_within(J.rmatvec(u), (Jd.T @ u).reshape(m, d), (Ja.T @ np.abs(u)).reshape(m, d), what="rmatvec")

    Vs = rng.standard_normal((m, d, k))
    flat = Vs.reshape(m * d, k)
    got = J.matmat(Vs)
    assert_within(got, Jd @ flat, Ja @ np.abs(flat), what="matmat")
    assert np.array_equal(J.matmat(flat), got), "matmat of (m*d, k) and (m, d, k) differ"

    U = rng.standard_normal((n, k))
    got = J.rmatmat(U)
    assert_within(got, (Jd.T @ U).reshape(m, d, k), (Ja.T @ np.abs(U)).reshape(m, d, k), what="rmatmat")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", THRESHOLD_KINDS)
@pytest.mark.parametrize("n,m,d", SIZES)
def test_gram_matches_dense_jacobian_with_sign_weights(simd_level, rng, n, m, d, kind, path):
    # a in {-1, +1}^m, the paper's setting.
    X, W, a, t = make_problem(rng, n, m, d, kind, a_kind="sign")
    J = sg.ReLUJacobian(X, W, a, threshold=t, path=path)
    Jd = ref_jacobian(X, W, a, t)
    G = J.gram()
    assert G.shape == (n, n)
    assert np.array_equal(G, G.T), "gram() is not exactly symmetric"
    Ja = np.abs(Jd)
    assert_within(G, Jd @ Jd.T, Ja @ Ja.T, what="gram")


@pytest.mark.parametrize("path", PATHS)
def test_gram_with_general_output_weights(rng, path):
    # The constructor accepts any finite a ("any finite values work"), and gram() is documented as the
    # exact J @ J.T. Then J J^T = ((D diag(a^2) D^T) o (X X^T)) / m, not ((D D^T) o (X X^T)) / m.
    n, m, d = 12, 40, 3
    X, W, a, t = make_problem(rng, n, m, d, "zero")
    a = a * 3.0  # far from +-1
    J = sg.ReLUJacobian(X, W, a, threshold=t, path=path)
    Jd = ref_jacobian(X, W, a, t)
    G = J.gram()
    assert np.array_equal(G, G.T)
    Ja = np.abs(Jd)
    assert_within(G, Jd @ Jd.T, Ja @ Ja.T, what="gram with a not in {-1, +1}")


def test_gram_equals_gram_of_operator_columns(rng):
    # Independent of the dense reference: G e_j = J (J^T e_j).
    n, m, d = 20, 90, 7
    X, W, a, t = make_problem(rng, n, m, d, "zero", a_kind="sign")
    J = sg.ReLUJacobian(X, W, a, threshold=t)
    G = J.gram()
    JJt = J.matmat(J.rmatmat(np.eye(n)))
    scale = np.abs(ref_jacobian(X, W, a, t))
    assert_within(G, JJt, scale @ scale.T, rtol=1e-11, what="gram vs J (J^T I)")


def test_zero_rows_and_zero_neurons(simd_level, rng):
    # Pre-activations that are exactly 0: active iff 0 > threshold (strict).
    n, m, d = 11, 70, 6
    for t in (0.0, 0.5, -0.5):
        X, W, a, _ = make_problem(rng, n, m, d, "zero")
        X[[0, 5]] = 0.0
        W[[3, 64, 69]] = 0.0
        Z = X @ W.T
        near = (np.abs(Z - t) < MARGIN) & (Z != 0)
        assert not near.any()
        for path in PATHS:
            J = sg.ReLUJacobian(X, W, a, threshold=t, path=path)
            D = ref_pattern(X, W, t)
            assert np.array_equal(J.pattern(), D), (t, path)
            assert J.nnz == D.sum()
            assert_within(J.forward(), ref_forward(X, W, a, t), forward_scale(X, W, a, t), what="forward")
            Jd = ref_jacobian(X, W, a, t)
            V = rng.standard_normal((m, d))
            assert_within(J.matvec(V), Jd @ V.ravel(), np.abs(Jd) @ np.abs(V.ravel()), what="matvec")
            u = rng.standard_normal(n)
            assert_within(
                J.rmatvec(u),
                (Jd.T @ u).reshape(m, d),
                (np.abs(Jd).T @ np.abs(u)).reshape(m, d),
                what="rmatvec",
            )


@pytest.mark.parametrize("path", PATHS)
def test_inactive_neurons_with_overflowing_preactivations_contribute_nothing(simd_level, path):
    # Finite inputs whose products overflow on inactive neurons only: relu(-inf) = 0, and an inactive
    # neuron's entries of J are 0, so f and J v stay finite (the AVX-512 kernels mask such lanes out).
    X = np.array([[1e200, 1.0]])
    W = np.array([[0.0, 1.0], [-1e200, 0.0]])  # neuron 0: z = 1 (active), neuron 1: z = -1e400 (inactive)
    a = np.array([1.0, 1.0])
    V = np.array([[0.0, 1.0], [1e200, 0.0]])  # x . v_1 = 1e400 on the inactive neuron
    with np.errstate(over="ignore", invalid="ignore"):
        f_ref = ref_forward(X, W, a, 0.0)
        Jd = ref_jacobian(X, W, a, 0.0)
        Jv_ref = Jd @ V.ravel()
    assert np.all(np.isfinite(f_ref)) and np.all(np.isfinite(Jv_ref))
    J = sg.ReLUJacobian(X, W, a, path=path)
    assert np.array_equal(J.pattern(), [[True, False]])
    np.testing.assert_allclose(J.forward(), f_ref, rtol=1e-15)
    np.testing.assert_allclose(J.matvec(V), Jv_ref, rtol=1e-15)
    np.testing.assert_allclose(J.matmat(V[:, :, None])[:, 0], Jv_ref, rtol=1e-15)


def test_forward_returns_a_new_array(rng):
    X, W, a, t = make_problem(rng, 5, 9, 4)
    J = sg.ReLUJacobian(X, W, a, threshold=t)
    f = J.forward()
    before = f.copy()
    f[...] = 123.0
    assert np.array_equal(J.forward(), before)
    P = J.pattern()
    P[...] = ~P
    assert np.array_equal(J.pattern(), ref_pattern(X, W, t))


def test_auto_path_boundary():
    # d = 1, X = 1, threshold 0: neuron r is active on every sample iff w_r > 0, so the density is
    # (number of positive w) / m. auto picks "sparse" iff density <= 0.1.
    n, m = 3, 20
    X = np.ones((n, 1))
    a = np.ones(m)
    for positives, expected in [(0, "sparse"), (1, "sparse"), (2, "sparse"), (3, "dense"), (20, "dense")]:
        W = -np.ones((m, 1))
        W[:positives] = 1.0
        J = sg.ReLUJacobian(X, W, a)
        assert J.density == positives / m
        assert J.nnz == n * positives
        assert J.path == expected, (positives, J.density)
        for path in PATHS:
            assert sg.ReLUJacobian(X, W, a, path=path).path == path


def test_threshold_kinds_pick_paths(rng):
    X, W, a, _ = make_problem(rng, 30, 80, 5)
    assert sg.ReLUJacobian(X, W, a, threshold=1e6).path == "sparse"
    assert sg.ReLUJacobian(X, W, a, threshold=-1e6).path == "dense"
    assert sg.ReLUJacobian(X, W, a, threshold=1e6).density == 0.0
    assert sg.ReLUJacobian(X, W, a, threshold=-1e6).density == 1.0


# --------------------------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 40),
    m=st.integers(1, 140),
    d=st.integers(1, 20),
    threshold=st.one_of(st.floats(-3.0, 3.0), st.sampled_from([0.0, -1e6, 1e6])),
    path=st.sampled_from(["auto", "dense", "sparse"]),
    level=st.sampled_from(SIMD_LEVELS),
    seed=st.integers(0, 2**32 - 1),
)
def test_adjointness(n, m, d, threshold, path, level, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((m, d))
    a = rng.standard_normal(m)
    V = rng.standard_normal((m, d))
    u = rng.standard_normal(n)
    with simd(level):
        J = sg.ReLUJacobian(X, W, a, threshold=threshold, path=path)
        Jv = J.matvec(V)
        Jtu = J.rmatvec(u)
        Vs = rng.standard_normal((m, d, 2))
        U = rng.standard_normal((n, 2))
        JVs = J.matmat(Vs)
        JtU = J.rmatmat(U)
    # Bound on every term |u_i a_r x_ij v_rj| / sqrt(m), active or not.
    absX = np.abs(X)
    scale = np.abs(u) @ (absX @ np.abs(V).T) @ np.abs(a) / np.sqrt(m)
    lhs, rhs = Jv @ u, np.sum(V * Jtu)
    assert abs(lhs - rhs) <= RTOL * scale, (lhs, rhs, scale)
    for j in range(2):
        scale = np.abs(U[:, j]) @ (absX @ np.abs(Vs[:, :, j]).T) @ np.abs(a) / np.sqrt(m)
        lhs, rhs = JVs[:, j] @ U[:, j], np.sum(Vs[:, :, j] * JtU[:, :, j])
        assert abs(lhs - rhs) <= RTOL * scale, (j, lhs, rhs, scale)


MATMAT_SIZES = [(1, 1, 1), (37, 70, 13), (64, 128, 16), (50, 257, 9), (600, 700, 20)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n,m,d", MATMAT_SIZES)
def test_matmat_is_stacked_matvec(simd_level, rng, n, m, d, path):
    # Dense path: each column of a block product uses the same summation order as the single
    # product, so the results are bitwise equal. (64, 128, 16): matvec runs on one thread, matmat of
    # k = 3 on several.
    X, W, a, t = make_problem(rng, n, m, d, "zero")
    J = sg.ReLUJacobian(X, W, a, threshold=t, path=path)
    k = 3
    Vs = rng.standard_normal((m, d, k))
    U = rng.standard_normal((n, k))
    got = J.matmat(Vs)
    cols = np.stack([J.matvec(Vs[:, :, j]) for j in range(k)], axis=1)
    rgot = J.rmatmat(U)
    rcols = np.stack([J.rmatvec(U[:, j]) for j in range(k)], axis=2)
    assert got.shape == (n, k) and rgot.shape == (m, d, k)
    if path == "dense":
        assert np.array_equal(got, cols), "dense matmat differs from stacked matvec"
        assert np.array_equal(rgot, rcols), "dense rmatmat differs from stacked rmatvec"
    else:
        scale = np.abs(ref_jacobian(X, W, a, t)) if n * m * d < 10**6 else None
        if scale is not None:
            assert_within(got, cols, scale @ np.abs(Vs.reshape(m * d, k)), what="sparse matmat")
            assert_within(rgot, rcols, (scale.T @ np.abs(U)).reshape(m, d, k), what="sparse rmatmat")
        else:
            np.testing.assert_allclose(got, cols, rtol=1e-12, atol=1e-12 * np.abs(cols).max())
            np.testing.assert_allclose(rgot, rcols, rtol=1e-12, atol=1e-12 * np.abs(rcols).max())


def test_matmat_with_zero_directions(rng):
    X, W, a, t = make_problem(rng, 6, 10, 3)
    for path in PATHS:
        J = sg.ReLUJacobian(X, W, a, threshold=t, path=path)
        assert J.matmat(np.zeros((10, 3, 0))).shape == (6, 0)
        assert J.matmat(np.zeros((30, 0))).shape == (6, 0)
        assert J.rmatmat(np.zeros((6, 0))).shape == (10, 3, 0)


def test_linear_operator_matches_dense(rng):
    n, m, d = 23, 45, 6
    X, W, a, t = make_problem(rng, n, m, d, "negative")
    J = sg.ReLUJacobian(X, W, a, threshold=t)
    A = J.aslinearoperator()
    assert isinstance(A, scipy.sparse.linalg.LinearOperator)
    assert A.shape == (n, m * d)
    assert A.dtype == np.float64
    Jd = ref_jacobian(X, W, a, t)
    Ja = np.abs(Jd)
    v = rng.standard_normal(m * d)
    u = rng.standard_normal(n)
    M = rng.standard_normal((m * d, 4))
    U = rng.standard_normal((n, 4))
    assert_within(A.matvec(v), Jd @ v, Ja @ np.abs(v), what="A.matvec")
    assert_within(A @ v, Jd @ v, Ja @ np.abs(v), what="A @ v")
    assert_within(A.matvec(v[:, None]).reshape(-1), Jd @ v, Ja @ np.abs(v), what="A.matvec (N, 1)")
    assert_within(A.rmatvec(u), Jd.T @ u, Ja.T @ np.abs(u), what="A.rmatvec")
    assert_within(A.T @ u, Jd.T @ u, Ja.T @ np.abs(u), what="A.T @ u")
    assert_within(A.H @ u, Jd.T @ u, Ja.T @ np.abs(u), what="A.H @ u")
    assert_within(A.matmat(M), Jd @ M, Ja @ np.abs(M), what="A.matmat")
    assert_within(A @ M, Jd @ M, Ja @ np.abs(M), what="A @ M")
    assert_within(A.rmatmat(U), Jd.T @ U, Ja.T @ np.abs(U), what="A.rmatmat")
    assert_within(A.T @ U, Jd.T @ U, Ja.T @ np.abs(U), what="A.T @ U")


@pytest.mark.parametrize("n,m,d,kind", [(200, 6, 3, "zero"), (20, 30, 4, "zero"), (60, 9, 5, "negative")])
def test_linear_operator_with_lsqr(rng, n, m, d, kind):
    # A consistent system b = J x_true: lsqr from 0 converges to the minimum-norm solution, as
    # numpy.linalg.lstsq on the dense Jacobian.
    X, W, a, t = make_problem(rng, n, m, d, kind, a_kind="sign")
    J = sg.ReLUJacobian(X, W, a, threshold=t)
    Jd = ref_jacobian(X, W, a, t)
    x_true = rng.standard_normal(m * d)
    b = Jd @ x_true
    ref, *_ = np.linalg.lstsq(Jd, b, rcond=None)
    result = scipy.sparse.linalg.lsqr(J.aslinearoperator(), b, atol=1e-15, btol=1e-15, iter_lim=20000)
    x = result[0]
    assert result[1] in (1, 2, 4, 5), f"lsqr stopped with istop={result[1]}"
    assert np.linalg.norm(Jd @ x - b) <= 1e-9 * np.linalg.norm(b)
    assert np.linalg.norm(x - ref) <= 1e-7 * np.linalg.norm(ref)
    if np.linalg.matrix_rank(Jd) == m * d:
        assert np.linalg.norm(x - x_true) <= 1e-7 * np.linalg.norm(x_true)


# --------------------------------------------------------------------------------------------
# Finite differences
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("threshold", [0.0, 0.7, -0.5])
def test_matvec_is_directional_derivative(rng, threshold, path):
    n, m, d, eps, margin = 30, 100, 5, 1e-6, 1e-3
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    for _ in range(1000):  # redraw neurons with a pre-activation within margin of the threshold
        near = np.any(np.abs(X @ W.T - threshold) < margin, axis=0)
        if not near.any():
            break
        W[near] = rng.standard_normal((near.sum(), d))
    assert np.min(np.abs(X @ W.T - threshold)) >= margin
    V = rng.standard_normal((m, d))
    assert eps * np.max(np.abs(X @ V.T)) < margin / 10

    J = sg.ReLUJacobian(X, W, a, threshold=threshold, path=path)
    Jp = sg.ReLUJacobian(X, W + eps * V, a, threshold=threshold, path=path)
    Jm = sg.ReLUJacobian(X, W - eps * V, a, threshold=threshold, path=path)
    assert np.array_equal(Jp.pattern(), J.pattern()) and np.array_equal(Jm.pattern(), J.pattern())
    fd = (Jp.forward() - Jm.forward()) / (2 * eps)
    # f is linear in W near W here, so only rounding of f (relative ~1e-16 of its scale) divided by
    # 2 eps separates the two.
    D = ref_pattern(X, W, threshold)
    scale = ((np.abs(X) @ (np.abs(W) + eps * np.abs(V)).T + abs(threshold)) * D) @ np.abs(a) / np.sqrt(m)
    Jv = J.matvec(V)
    assert np.all(np.abs(fd - Jv) <= 1e-8 * scale), np.max(np.abs(fd - Jv) / scale)
    assert np.abs(Jv).max() > 1e4 * 1e-8 * scale.max()  # the tolerance is far below the size of J v


# --------------------------------------------------------------------------------------------
# Paths and threads
# --------------------------------------------------------------------------------------------

BIG = (600, 700, 20)


@pytest.mark.parametrize("kind", ["zero", "sparse"])
def test_dense_and_sparse_paths_agree(simd_level, rng, kind):
    n, m, d = BIG
    X, W, a, t = make_problem(rng, n, m, d, kind, a_kind="sign")
    Jd = sg.ReLUJacobian(X, W, a, threshold=t, path="dense")
    Js = sg.ReLUJacobian(X, W, a, threshold=t, path="sparse")
    assert (Jd.path, Js.path) == ("dense", "sparse")
    assert np.array_equal(Jd.pattern(), Js.pattern())
    assert Jd.nnz == Js.nnz
    assert np.array_equal(Jd.forward(), Js.forward())
    ref = ref_jacobian(X, W, a, t)
    Ra = np.abs(ref)
    V = rng.standard_normal((m, d, 2))
    U = rng.standard_normal((n, 2))
    flat = V.reshape(m * d, 2)
    sv = Ra @ np.abs(flat)
    su = (Ra.T @ np.abs(U)).reshape(m, d, 2)
    for J, name in ((Jd, "dense"), (Js, "sparse")):
        assert_within(J.matmat(V), ref @ flat, sv, what=f"{name} matmat")
        assert_within(J.rmatmat(U), (ref.T @ U).reshape(m, d, 2), su, what=f"{name} rmatmat")
        assert_within(J.matvec(V[:, :, 0]), ref @ flat[:, 0], sv[:, 0], what=f"{name} matvec")
        rref = (ref.T @ U[:, 0]).reshape(m, d)
        assert_within(J.rmatvec(U[:, 0]), rref, su[:, :, 0], what=f"{name} rmatvec")
    assert_within(Jd.matmat(V), Js.matmat(V), sv, what="dense vs sparse matmat")
    assert_within(Jd.rmatmat(U), Js.rmatmat(U), su, what="dense vs sparse rmatmat")
    assert np.array_equal(Jd.gram(), Js.gram())


@pytest.mark.parametrize("path", PATHS)
def test_thread_counts_give_identical_results(simd_level, rng, path):
    n, m, d = BIG
    X, W, a, t = make_problem(rng, n, m, d, "zero", a_kind="sign")
    V = rng.standard_normal((m, d))
    u = rng.standard_normal(n)
    Vs = rng.standard_normal((m, d, 3))
    U = rng.standard_normal((n, 3))

    def everything(J, nt):
        return {
            "forward": J.forward(),
            "pattern": J.pattern(),
            "matvec": J.matvec(V, n_threads=nt),
            "rmatvec": J.rmatvec(u, n_threads=nt),
            "matmat": J.matmat(Vs, n_threads=nt),
            "rmatmat": J.rmatmat(U, n_threads=nt),
            "gram": J.gram(n_threads=nt),
        }

    results = {}
    for nt in (1, 2, 3, -1, None):
        J = sg.ReLUJacobian(X, W, a, threshold=t, path=path, n_threads=nt)
        results[f"construct {nt}, call None"] = everything(J, None)
        results[f"construct {nt}, call 1"] = everything(J, 1)
        J1 = sg.ReLUJacobian(X, W, a, threshold=t, path=path, n_threads=1)
        results[f"construct 1, call {nt}"] = everything(J1, nt)
    first_key = "construct 1, call 1"
    first = results[first_key]
    for key, res in results.items():
        for name, value in res.items():
            assert np.array_equal(value, first[name]), f"{name}: {key} differs from {first_key}"
    # and the single-threaded results are right
    ref = ref_jacobian(X, W, a, t)
    assert_within(first["matvec"], ref @ V.ravel(), np.abs(ref) @ np.abs(V.ravel()), what="matvec")
    scale = (np.abs(ref).T @ np.abs(u)).reshape(m, d)
    assert_within(first["rmatvec"], (ref.T @ u).reshape(m, d), scale, what="rmatvec")


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def small(rng, n=6, m=10, d=3):
    X, W, a, t = make_problem(rng, n, m, d)
    return X, W, a


def named(name):
    """Regex for an error message naming the argument: at the start, or after a colon or quote."""
    return rf"(^|[:`'\"(]\s*){name}\b"


@pytest.mark.parametrize(
    "case,exc,name",
    [
        ("X 1-D", ValueError, "X"),
        ("X 3-D", ValueError, "X"),
        ("X 0-D", ValueError, "X"),
        ("W 1-D", ValueError, "W"),
        ("W wrong d", ValueError, "W"),
        ("a wrong length", ValueError, "a"),
        ("a 2-D", ValueError, "a"),
        ("a 0-D", ValueError, "a"),
        ("X nan", ValueError, "X"),
        ("X inf", ValueError, "X"),
        ("W nan", ValueError, "W"),
        ("W -inf", ValueError, "W"),
        ("a nan", ValueError, "a"),
        ("a inf", ValueError, "a"),
        ("n = 0", ValueError, "X"),
        ("m = 0", ValueError, "W"),
        ("d = 0", ValueError, "X"),
        ("X complex", TypeError, "X"),
        ("W complex", TypeError, "W"),
        ("a complex", TypeError, "a"),
        ("X object", TypeError, "X"),
        ("W object", TypeError, "W"),
        ("a object", TypeError, "a"),
        ("X strings", TypeError, "X"),
        ("X float16", TypeError, "X"),
        ("threshold nan", ValueError, "threshold"),
        ("threshold inf", ValueError, "threshold"),
        ("threshold -inf", ValueError, "threshold"),
        ("threshold str", TypeError, "threshold"),
        ("threshold None", TypeError, "threshold"),
        ("threshold complex", TypeError, "threshold"),
        ("path unknown", ValueError, "path"),
        ("path None", ValueError, "path"),
        ("n_threads 0", ValueError, "n_threads"),
        ("n_threads -2", ValueError, "n_threads"),
        ("n_threads float", TypeError, "n_threads"),
    ],
)
def test_bad_constructor_arguments(rng, case, exc, name):
    X, W, a = small(rng)
    n, d = X.shape
    m = W.shape[0]
    kwargs = {}
    if case == "X 1-D":
        X = X[:, 0]
    elif case == "X 3-D":
        X = X[None]
    elif case == "X 0-D":
        X = np.float64(1.0)
    elif case == "W 1-D":
        W = W[:, 0]
    elif case == "W wrong d":
        W = rng.standard_normal((m, d + 1))
    elif case == "a wrong length":
        a = rng.standard_normal(m + 1)
    elif case == "a 2-D":
        a = a[:, None]
    elif case == "a 0-D":
        a = np.float64(1.0)
    elif case.endswith(("nan", "inf")) and case.split()[0] in ("X", "W", "a"):
        value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[case.split()[1]]
        arr = {"X": X, "W": W, "a": a}[case.split()[0]]
        arr.flat[arr.size // 2] = value
    elif case == "n = 0":
        X = np.zeros((0, d))
    elif case == "m = 0":
        W, a = np.zeros((0, d)), np.zeros(0)
    elif case == "d = 0":
        X, W = np.zeros((n, 0)), np.zeros((m, 0))
    elif case.endswith("complex") and case[0] in "XWa":
        if case[0] == "X":
            X = X.astype(np.complex128)
        elif case[0] == "W":
            W = W.astype(np.complex128)
        else:
            a = a.astype(np.complex128)
    elif case.endswith("object"):
        if case[0] == "X":
            X = X.astype(object)
        elif case[0] == "W":
            W = W.astype(object)
        else:
            a = a.astype(object)
    elif case == "X strings":
        X = X.astype(str)
    elif case == "X float16":
        X = X.astype(np.float16)
    elif case.startswith("threshold"):
        kwargs["threshold"] = {
            "nan": float("nan"),
            "inf": float("inf"),
            "-inf": -np.inf,
            "str": "0.5",
            "None": None,
            "complex": 1 + 0j,
        }[case.split()[1]]
    elif case == "path unknown":
        kwargs["path"] = "csr"
    elif case == "path None":
        kwargs["path"] = None
    elif case.startswith("n_threads"):
        kwargs["n_threads"] = {"0": 0, "-2": -2, "float": 2.0}[case.split()[1]]
    else:
        raise AssertionError(case)
    with pytest.raises(exc, match=named(name)):
        sg.ReLUJacobian(X, W, a, **kwargs)


@pytest.mark.parametrize("path", PATHS)
def test_bad_product_arguments(rng, path):
    X, W, a = small(rng)
    n, d = X.shape
    m = W.shape[0]
    J = sg.ReLUJacobian(X, W, a, path=path)

    bad_V = (np.zeros((m, d + 1)), np.zeros((m + 1, d)), np.zeros(m * d + 1), np.zeros((m, d, 1)), np.zeros(m), 1.0)
    for V in bad_V:
        with pytest.raises(ValueError, match=named("V")):
            J.matvec(V)
    for u in (np.zeros(n + 1), np.zeros((n, 1)), np.zeros((1, n)), np.zeros((n, 2)), 1.0):
        with pytest.raises(ValueError, match=named("u")):
            J.rmatvec(u)
    bad_Vs = (np.zeros((m, d)), np.zeros((m, d + 1, 2)), np.zeros((m * d + 1, 2)), np.zeros(m * d), np.zeros((2, m, d)))
    for Vs in bad_Vs:
        with pytest.raises(ValueError, match=named("Vs")):
            J.matmat(Vs)
    for U in (np.zeros(n), np.zeros((n + 1, 2)), np.zeros((n, 2, 1)), np.zeros((2, n + 1))):
        with pytest.raises(ValueError, match=named("U")):
            J.rmatmat(U)

    for bad in (np.nan, np.inf, -np.inf):
        V = np.zeros((m, d))
        V[m - 1, d - 1] = bad
        with pytest.raises(ValueError, match=named("V")):
            J.matvec(V)
        with pytest.raises(ValueError, match=named("V")):
            J.matvec(V.ravel())
        Vs = np.zeros((m, d, 2))
        Vs[0, 0, 1] = bad
        with pytest.raises(ValueError, match=named("Vs")):
            J.matmat(Vs)
        with pytest.raises(ValueError, match=named("Vs")):
            J.matmat(Vs.reshape(m * d, 2))
        u = np.zeros(n)
        u[n // 2] = bad
        with pytest.raises(ValueError, match=named("u")):
            J.rmatvec(u)
        U = np.zeros((n, 2))
        U[n - 1, 1] = bad
        with pytest.raises(ValueError, match=named("U")):
            J.rmatmat(U)

    for dtype in (np.complex128, object):
        with pytest.raises(TypeError, match=named("V")):
            J.matvec(np.zeros((m, d), dtype=dtype))
        with pytest.raises(TypeError, match=named("u")):
            J.rmatvec(np.zeros(n, dtype=dtype))
        with pytest.raises(TypeError, match=named("Vs")):
            J.matmat(np.zeros((m, d, 2), dtype=dtype))
        with pytest.raises(TypeError, match=named("U")):
            J.rmatmat(np.zeros((n, 2), dtype=dtype))

    V, u = np.ones((m, d)), np.ones(n)
    for nt, exc in ((0, ValueError), (-3, ValueError), (1.0, TypeError), ("2", TypeError)):
        with pytest.raises(exc, match=named("n_threads")):
            J.matvec(V, n_threads=nt)
        with pytest.raises(exc, match=named("n_threads")):
            J.rmatvec(u, n_threads=nt)
        with pytest.raises(exc, match=named("n_threads")):
            J.matmat(V[:, :, None], n_threads=nt)
        with pytest.raises(exc, match=named("n_threads")):
            J.rmatmat(u[:, None], n_threads=nt)
        with pytest.raises(exc, match=named("n_threads")):
            J.gram(n_threads=nt)


# --------------------------------------------------------------------------------------------
# Input conversion and layouts
# --------------------------------------------------------------------------------------------


def all_outputs(J, V, u, Vs, U):
    return {
        "pattern": J.pattern(),
        "forward": J.forward(),
        "matvec": J.matvec(V),
        "rmatvec": J.rmatvec(u),
        "matmat": J.matmat(Vs),
        "rmatmat": J.rmatmat(U),
        "gram": J.gram(),
        "nnz": J.nnz,
    }


def assert_same_outputs(got, ref, what):
    for key in ref:
        assert np.array_equal(got[key], ref[key]), f"{what}: {key} differs"


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint16, np.bool_])
def test_integer_and_bool_inputs_are_converted(rng, dtype):
    n, m, d = 9, 20, 4
    if dtype == np.bool_:
        X = rng.random((n, d)) < 0.5
        W = rng.random((m, d)) < 0.5
        a = rng.random(m) < 0.7
        V = rng.random((m, d)) < 0.5
        u = rng.random(n) < 0.5
        t = 0.5
    else:
        lo = 0 if np.dtype(dtype).kind == "u" else -5
        X = rng.integers(lo, 6, (n, d)).astype(dtype)
        W = rng.integers(lo, 6, (m, d)).astype(dtype)
        a = rng.integers(lo, 6, m).astype(dtype)
        V = rng.integers(lo, 6, (m, d)).astype(dtype)
        u = rng.integers(lo, 6, n).astype(dtype)
        t = 2.5  # integer pre-activations are never within 0.5 of it
    Vs, U = np.stack([V, V], axis=2), np.stack([u, u], axis=1)
    f64 = [np.asarray(arr, dtype=np.float64) for arr in (X, W, a, V, u, Vs, U)]
    for path in PATHS:
        J = sg.ReLUJacobian(X, W, a, threshold=t, path=path)
        Jf = sg.ReLUJacobian(*f64[:3], threshold=t, path=path)
        got = all_outputs(J, V, u, Vs, U)
        assert_same_outputs(got, all_outputs(Jf, *f64[3:]), f"{np.dtype(dtype)} vs float64")
        # and the float answer is right (integer data: exact up to the 1/sqrt(m) scaling)
        Xf, Wf, af, Vf, uf = f64[:5]
        assert np.array_equal(got["pattern"], ref_pattern(Xf, Wf, t))
        np.testing.assert_allclose(got["forward"], ref_forward(Xf, Wf, af, t), rtol=1e-14, atol=1e-14)
        Jd = ref_jacobian(Xf, Wf, af, t)
        np.testing.assert_allclose(got["matvec"], Jd @ Vf.ravel(), rtol=1e-14, atol=1e-13)
        np.testing.assert_allclose(got["rmatvec"], (Jd.T @ uf).reshape(m, d), rtol=1e-14, atol=1e-13)


def test_integer_threshold_and_numpy_scalars(rng):
    X, W, a = small(rng)
    Z = X @ W.T
    assert np.min(np.abs(Z - 1)) > MARGIN
    ref = sg.ReLUJacobian(X, W, a, threshold=1.0)
    for t in (1, np.int64(1), np.float32(1.0), np.float64(1.0)):
        J = sg.ReLUJacobian(X, W, a, threshold=t)
        assert J.threshold == 1.0 and isinstance(J.threshold, float)
        assert np.array_equal(J.pattern(), ref.pattern())
        assert np.array_equal(J.forward(), ref.forward())


def test_float32_inputs_are_widened(rng):
    X, W, a = (arr.astype(np.float32) for arr in small(rng, 8, 30, 5))
    Z = X.astype(np.float64) @ W.astype(np.float64).T
    t = threshold_for(Z, "negative")
    assert np.min(np.abs(Z - t)) > MARGIN
    V = rng.standard_normal((30, 5)).astype(np.float32)
    u = rng.standard_normal(8).astype(np.float32)
    Vs, U = np.stack([V, -V], axis=2), np.stack([u, 2 * u], axis=1)
    J = sg.ReLUJacobian(X, W, a, threshold=t)
    Jf = sg.ReLUJacobian(X.astype(np.float64), W.astype(np.float64), a.astype(np.float64), threshold=t)
    assert_same_outputs(
        all_outputs(J, V, u, Vs, U),
        all_outputs(Jf, *(arr.astype(np.float64) for arr in (V, u, Vs, U))),
        "float32 vs float64",
    )


def test_inputs_are_not_modified(rng):
    n, m, d = 13, 70, 9
    X, W, a, t = make_problem(rng, n, m, d)
    V, u = rng.standard_normal((m, d)), rng.standard_normal(n)
    Vs, U = rng.standard_normal((m, d, 2)), rng.standard_normal((n, 2))
    arrays = (X, W, a, V, u, Vs, U)
    copies = [arr.copy() for arr in arrays]
    for path in PATHS:
        J = sg.ReLUJacobian(X, W, a, threshold=t, path=path)
        J.forward()
        J.matvec(V)
        J.matvec(V.reshape(-1))
        J.rmatvec(u)
        J.matmat(Vs)
        J.matmat(Vs.reshape(m * d, 2))
        J.rmatmat(U)
        J.gram()
        A = J.aslinearoperator()
        A.matvec(V.reshape(-1))
        A.rmatvec(u)
        A.matmat(Vs.reshape(m * d, 2))
        A.rmatmat(U)
    for arr, copy in zip(arrays, copies):
        assert np.array_equal(arr, copy)
    # the operator keeps its own copy: changing the inputs afterwards changes nothing
    J = sg.ReLUJacobian(X, W, a, threshold=t)
    before = all_outputs(J, V, u, Vs, U)
    X[...] = 0.0
    W[...] = 0.0
    a[...] = 0.0
    after = all_outputs(J, *copies[3:])
    assert_same_outputs(after, before, "after changing the inputs")


def test_non_contiguous_and_fortran_inputs(rng):
    n, m, d = 17, 75, 7
    X, W, a, t = make_problem(rng, n, m, d)
    V, u = rng.standard_normal((m, d)), rng.standard_normal(n)
    Vs, U = rng.standard_normal((m, d, 3)), rng.standard_normal((n, 3))
    for path in PATHS:
        ref = all_outputs(sg.ReLUJacobian(X, W, a, threshold=t, path=path), V, u, Vs, U)

        def strided(arr):
            # same values, every other element of a larger buffer
            big = np.zeros(arr.shape[:-1] + (2 * arr.shape[-1],))
            big[..., ::2] = arr
            out = big[..., ::2]
            assert not out.flags.c_contiguous
            return out

        def reversed_view(arr):
            out = arr[::-1].copy()[::-1]
            assert out.strides[0] < 0
            return out

        layouts = {
            "fortran": np.asfortranarray,
            "strided": strided,
            "reversed": reversed_view,
            "byteswapped": lambda arr: arr.astype(arr.dtype.newbyteorder(">")),
        }
        for name, layout in layouts.items():
            J = sg.ReLUJacobian(layout(X), layout(W), layout(a), threshold=t, path=path)
            got = all_outputs(J, layout(V), layout(u), layout(Vs), layout(U))
            assert_same_outputs(got, ref, f"{name} ({path})")
        # a transposed view of a (d, n) array
        Xt, Wt = np.ascontiguousarray(X.T).T, np.ascontiguousarray(W.T).T
        J = sg.ReLUJacobian(Xt, Wt, a, threshold=t, path=path)
        assert_same_outputs(all_outputs(J, V, u, Vs, U), ref, f"transposed view ({path})")


def test_list_inputs(rng):
    X, W, a = small(rng, 4, 6, 2)
    J = sg.ReLUJacobian(X.tolist(), W.tolist(), a.tolist())
    ref = sg.ReLUJacobian(X, W, a)
    assert np.array_equal(J.forward(), ref.forward())
    V = rng.standard_normal((6, 2))
    assert np.array_equal(J.matvec(V.tolist()), ref.matvec(V))
    u = rng.standard_normal(4)
    assert np.array_equal(J.rmatvec(u.tolist()), ref.rmatvec(u))


# --------------------------------------------------------------------------------------------
# 64-bit indexing
# --------------------------------------------------------------------------------------------


def test_pattern_with_more_than_2_31_entries():
    # n * m just above 2**31 (pattern of ~270 MB). d = 1, threshold 0: D[i, r] = 1 iff x_i and w_r
    # have the same sign (products of O(1) nonzero doubles never round to 0), which gives exact
    # NumPy references in O(n + m); a few rows and the last neurons are also checked by forming
    # their part of D explicitly.
    rng = np.random.default_rng(2**31)
    n, m = 2**16 + 3, 2**15 + 64
    assert n * m > 2**31
    x = rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 2.0, n)
    w = rng.choice([-1.0, 1.0], m) * rng.uniform(0.5, 2.0, m)
    a = rng.choice([-1.0, 1.0], m)
    s = 1.0 / np.sqrt(m)
    J = sg.ReLUJacobian(x[:, None], w[:, None], a)
    assert J.shape == (n, m) and (J.n, J.m, J.d) == (n, m, 1)
    xp, wp = x > 0, w > 0
    nnz = int(xp.sum()) * int(wp.sum()) + int((~xp).sum()) * int((~wp).sum())
    assert J.nnz == nnz
    assert J.density == nnz / (n * m)
    assert abs(J.density - 0.5) < 0.01
    assert J.path == "dense"

    # forward: f_i = s * x_i * sum_{r: sign w_r = sign x_i} a_r w_r
    f = J.forward()
    aw = a * w
    per_sign = np.where(xp, aw[wp].sum(), aw[~wp].sum())
    scale_sign = np.where(xp, np.abs(aw[wp]).sum(), np.abs(aw[~wp]).sum())
    assert_within(f, s * x * per_sign, s * np.abs(x) * scale_sign, what="forward")

    # rows where i * m crosses 2**31, and the last rows: D formed explicitly
    i_cross = 2**31 // m
    rows = np.r_[0:64, i_cross - 32 : i_cross + 32, n - 64 : n]
    Drows = np.outer(x[rows], w) > 0
    Zrows = np.outer(x[rows], w)
    assert_within(
        f[rows], s * (np.maximum(Zrows, 0.0) @ a), s * (np.abs(Zrows) * Drows) @ np.abs(a), what="forward rows"
    )

    # matvec, as a block of 2: a random V, and a V supported on the last 64 neurons
    V = np.zeros((m, 1, 2))
    V[:, 0, 0] = rng.standard_normal(m)
    V[m - 64 :, 0, 1] = rng.standard_normal(64)
    out = J.matmat(V)
    assert out.shape == (n, 2)
    av = a * V[:, 0, 0]
    ref = s * x * np.where(xp, av[wp].sum(), av[~wp].sum())
    sc = s * np.abs(x) * np.where(xp, np.abs(av[wp]).sum(), np.abs(av[~wp]).sum())
    assert_within(out[:, 0], ref, sc, what="matvec (random V)")
    sc_rows = s * np.abs(x[rows]) * (Drows @ np.abs(av))
    assert_within(out[rows, 0], s * x[rows] * (Drows @ av), sc_rows, what="matvec rows")
    Dlast = np.outer(x, w[m - 64 :]) > 0  # (n, 64), explicit
    av_last = a[m - 64 :] * V[m - 64 :, 0, 1]
    sc_last = s * np.abs(x) * (Dlast @ np.abs(av_last))
    assert_within(out[:, 1], s * x * (Dlast @ av_last), sc_last, what="matvec (last neurons)")

    # rmatvec, as a block of 2: a random u, and a unit vector on a row where i * m crosses 2**31 ...
    U = np.zeros((n, 2))
    U[:, 0] = rng.standard_normal(n)
    U[i_cross, 1] = 1.0
    G = J.rmatmat(U)
    assert G.shape == (m, 1, 2)
    ux = U[:, 0] * x
    ref = s * a * np.where(wp, ux[xp].sum(), ux[~xp].sum())
    sc = s * np.where(wp, np.abs(ux[xp]).sum(), np.abs(ux[~xp]).sum())
    assert_within(G[:, 0, 0], ref, sc, what="rmatvec (random u)")
    ref_last = s * a[m - 64 :] * (Dlast.T @ ux)
    assert_within(G[m - 64 :, 0, 0], ref_last, s * (Dlast.T @ np.abs(ux)), what="rmatvec (last neurons)")
    # ... which is row i of J: s * a * D[i, :] * x_i
    row = s * a * (np.outer(x[i_cross : i_cross + 1], w)[0] > 0) * x[i_cross]
    np.testing.assert_allclose(G[:, 0, 1], row, rtol=1e-14, atol=0)
    # ... and the very last row, with a single product
    e = np.zeros(n)
    e[n - 1] = 1.0
    row = s * a * (x[n - 1] * w > 0) * x[n - 1]
    np.testing.assert_allclose(J.rmatvec(e)[:, 0], row, rtol=1e-14, atol=0)
