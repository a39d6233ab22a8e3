"""sg.KroneckerSRHT against an explicit dense construction from .cells, .signs and scipy.linalg.hadamard.

Row j of the sketch is sqrt(m_pad d_pad / n_out) * (H1 D1 u)[p_j] * (H2 D2 x)[q_j], i.e. row
p_j * d_pad + q_j of sqrt(m_pad d_pad / n_out) * kron(H1 D1, H2 D2) with H orthonormal Hadamard matrices
of the padded sizes and D the sign diagonals padded with zeros. Column r * d + c of the sketch (the
row-major index of u (x) x) is column r * d_pad + c of that padded Kronecker product.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.linalg

import sketchgn as sg

# (m, d, n_out): ones, powers of two and not, n_out from 1 to m_pad * d_pad.
SIZES = [
    (1, 1, 1),
    (2, 3, 4),
    (3, 5, 7),
    (4, 4, 16),
    (5, 3, 32),
    (8, 16, 20),
    (13, 6, 50),
    (64, 8, 100),
    (100, 12, 60),
    (33, 1, 64),
    (1, 17, 9),
]


def pad(n):
    return 1 << (n - 1).bit_length()


def explicit_dense(S):
    """sqrt(m_pad d_pad / n_out) kron(H1 D1, H2 D2)[p * d_pad + q], restricted to the real columns."""
    m, d, n_out = S.m, S.d, S.n_out
    m_pad, d_pad = pad(m), pad(d)
    signs_u, signs_x = S.signs
    p, q = S.cells
    D1 = np.zeros(m_pad)
    D1[:m] = signs_u
    D2 = np.zeros(d_pad)
    D2[:d] = signs_x
    H1 = scipy.linalg.hadamard(m_pad).astype(np.float64) / np.sqrt(m_pad)
    H2 = scipy.linalg.hadamard(d_pad).astype(np.float64) / np.sqrt(d_pad)
    full = np.kron(H1 * D1, H2 * D2)  # H @ diag(D): scale the columns
    full = np.sqrt(m_pad * d_pad / n_out) * full[p * d_pad + q]  # (n_out, m_pad d_pad)
    real = (np.arange(m)[:, None] * d_pad + np.arange(d)[None, :]).ravel()  # r * d_pad + c, row-major
    padded = np.setdiff1d(np.arange(m_pad * d_pad), real)
    assert np.all(full[:, padded] == 0)
    return full[:, real]


def kron_columns(U, X):
    """(m d, k) matrix whose column i is np.kron(U[i], X[i])."""
    return np.stack([np.kron(u, x) for u, x in zip(U, X)], axis=1).reshape(U.shape[1] * X.shape[1], -1)


def atol_for(S, U, X):
    # Each sketch entry is a sum of m d terms of size |u_r x_c| / sqrt(n_out) (roughly).
    return 1e-13 * np.sqrt(S.m * S.d) * max(1.0, np.abs(U).max() * np.abs(X).max())


# --------------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,d,n_out", SIZES)
def test_attributes(m, d, n_out):
    S = sg.KroneckerSRHT(m, d, n_out, seed=3)
    assert S.shape == (n_out, m * d)
    assert (S.m, S.d, S.n_out) == (m, d, n_out)
    p, q = S.cells
    assert p.shape == q.shape == (n_out,)
    assert p.dtype.kind == "i" and q.dtype.kind == "i"
    assert p.min() >= 0 and p.max() < pad(m)
    assert q.min() >= 0 and q.max() < pad(d)
    flat = p * pad(d) + q
    assert np.all(np.diff(flat) > 0), "cells must be distinct and sorted by p * d_pad + q"
    signs_u, signs_x = S.signs
    assert signs_u.shape == (m,) and signs_x.shape == (d,)
    assert np.all(np.abs(signs_u) == 1) and np.all(np.abs(signs_x) == 1)


def test_cells_cover_grid_when_full():
    S = sg.KroneckerSRHT(5, 3, 32, seed=1)  # 8 x 4 grid
    p, q = S.cells
    assert np.array_equal(p * 4 + q, np.arange(32))


def test_cells_and_signs_look_random():
    S = sg.KroneckerSRHT(1024, 64, 512, seed=5)
    p, q = S.cells
    signs_u, signs_x = S.signs
    assert 0.4 < np.mean(signs_u > 0) < 0.6
    assert 0.25 < np.mean(signs_x > 0) < 0.75
    # spread over the whole grid, not the first cells
    assert p.min() < 128 and p.max() > 896
    assert len(np.unique(q)) > 32


def test_cells_roughly_uniform_over_seeds():
    # Each cell of the 8 x 8 grid is sampled with probability n_out / 64.
    m, d, n_out, trials = 7, 6, 8, 400
    counts = np.zeros(64)
    for seed in range(trials):
        p, q = sg.KroneckerSRHT(m, d, n_out, seed=seed).cells
        counts[p * 8 + q] += 1
    expected = trials * n_out / 64  # 50
    assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected)), counts


def test_cells_and_signs_cannot_change_the_sketch():
    S = sg.KroneckerSRHT(9, 5, 12, seed=6)
    before = S.to_dense()
    for arr in (*S.cells, *S.signs):
        try:
            arr[...] = 0
        except ValueError:  # read-only views are fine too
            pass
    assert np.array_equal(S.to_dense(), before)


# --------------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,d,n_out", SIZES)
def test_to_dense_matches_explicit_construction(m, d, n_out):
    S = sg.KroneckerSRHT(m, d, n_out, seed=m * 100 + d + n_out)
    dense = S.to_dense()
    assert dense.dtype == np.float64 and dense.shape == (n_out, m * d)
    np.testing.assert_allclose(dense, explicit_dense(S), rtol=0, atol=1e-13)


@pytest.mark.parametrize("m,d,n_out", SIZES)
def test_apply_kron_matches_dense(rng, m, d, n_out):
    S = sg.KroneckerSRHT(m, d, n_out, seed=17)
    k = 7
    U = rng.standard_normal((k, m))
    X = rng.standard_normal((k, d))
    A = kron_columns(U, X)
    assert np.array_equal(A[:, 2], np.kron(U[2], X[2]))
    got = S.apply_kron(U, X)
    assert got.shape == (n_out, k) and got.dtype == np.float64
    atol = atol_for(S, U, X)
    np.testing.assert_allclose(got, explicit_dense(S) @ A, rtol=0, atol=atol)
    np.testing.assert_allclose(got, S.to_dense() @ A, rtol=0, atol=atol)


@pytest.mark.parametrize("m,d,n_out", SIZES)
def test_apply_matches_apply_kron(rng, m, d, n_out):
    S = sg.KroneckerSRHT(m, d, n_out, seed=23)
    U = rng.standard_normal((5, m))
    X = rng.standard_normal((5, d))
    A = kron_columns(U, X)
    got = S.apply(A)
    assert got.shape == (n_out, 5) and got.dtype == np.float64
    np.testing.assert_allclose(got, S.apply_kron(U, X), rtol=0, atol=atol_for(S, U, X))
    assert np.array_equal(S @ A, got)
    # general (non-Kronecker) columns against the explicit matrix
    B = rng.standard_normal((m * d, 3))
    np.testing.assert_allclose(S.apply(B), explicit_dense(S) @ B, rtol=0, atol=1e-13 * np.sqrt(m * d) * 4)


def test_vector_input_gives_vector_output(rng):
    S = sg.KroneckerSRHT(12, 5, 20, seed=1)
    v = rng.standard_normal(60)
    got = S @ v
    assert got.shape == (20,)
    assert np.array_equal(got, S.apply(v[:, None])[:, 0])
    np.testing.assert_allclose(got, explicit_dense(S) @ v, rtol=0, atol=1e-12)


def test_single_and_empty_column_blocks(rng):
    S = sg.KroneckerSRHT(10, 3, 8, seed=2)
    assert S.apply_kron(rng.standard_normal((1, 10)), rng.standard_normal((1, 3))).shape == (8, 1)
    assert S.apply_kron(np.zeros((0, 10)), np.zeros((0, 3))).shape == (8, 0)


def test_columns_are_independent(rng):
    S = sg.KroneckerSRHT(40, 6, 64, seed=9)
    U = rng.standard_normal((6, 40))
    X = rng.standard_normal((6, 6))
    block = S.apply_kron(U, X)
    for i in range(6):
        assert np.array_equal(block[:, i], S.apply_kron(U[i : i + 1], X[i : i + 1])[:, 0])


def test_column_norms_are_exactly_one():
    # Every entry of kron(H1 D1, H2 D2) on a real column has magnitude 1/sqrt(m_pad d_pad).
    for m, d, n_out in [(10, 4, 8), (100, 3, 33), (64, 16, 200)]:
        dense = sg.KroneckerSRHT(m, d, n_out, seed=m).to_dense()
        np.testing.assert_allclose(np.linalg.norm(dense, axis=0), 1.0, rtol=1e-12)


def test_bilinear(rng):
    S = sg.KroneckerSRHT(30, 7, 25, seed=4)
    u1, u2 = rng.standard_normal((2, 1, 30))
    x = rng.standard_normal((1, 7))
    np.testing.assert_allclose(
        S.apply_kron(2.5 * u1 - 3 * u2, x),
        2.5 * S.apply_kron(u1, x) - 3 * S.apply_kron(u2, x),
        rtol=0,
        atol=1e-12 * 30,
    )
    np.testing.assert_allclose(S.apply_kron(u1, 4 * x), 4 * S.apply_kron(u1, x), rtol=1e-14, atol=1e-14)


def test_integer_and_float32_input_computed_in_float64(rng):
    S = sg.KroneckerSRHT(16, 4, 10, seed=0)
    U = rng.integers(-3, 4, size=(3, 16))
    X = rng.integers(-3, 4, size=(3, 4)).astype(np.int32)
    got = S.apply_kron(U, X)
    assert got.dtype == np.float64
    assert np.array_equal(got, S.apply_kron(U.astype(np.float64), X.astype(np.float64)))
    U32 = rng.standard_normal((3, 16)).astype(np.float32)
    X32 = rng.standard_normal((3, 4)).astype(np.float32)
    assert np.array_equal(S.apply_kron(U32, X32), S.apply_kron(U32.astype(np.float64), X32.astype(np.float64)))


def test_non_contiguous_input_and_input_never_modified(rng):
    S = sg.KroneckerSRHT(20, 6, 30, seed=1)
    U = np.asfortranarray(rng.standard_normal((4, 20)))
    X = rng.standard_normal((4, 12))[:, ::2]
    assert not X.flags.c_contiguous
    U0, X0 = U.copy(), X.copy()
    assert np.array_equal(S.apply_kron(U, X), S.apply_kron(np.ascontiguousarray(U), np.ascontiguousarray(X)))
    assert np.array_equal(U, U0) and np.array_equal(X, X0)
    A = rng.standard_normal((120, 6))[:, ::2]
    A0 = A.copy()
    assert np.array_equal(S @ A, S @ np.ascontiguousarray(A))
    assert np.array_equal(A, A0)


# --------------------------------------------------------------------------------------------
# Seeds, pickling
# --------------------------------------------------------------------------------------------


def test_same_seed_same_matrix():
    a = sg.KroneckerSRHT(100, 12, 80, seed=123)
    b = sg.KroneckerSRHT(100, 12, 80, seed=123)
    for x, y in zip((*a.cells, *a.signs), (*b.cells, *b.signs)):
        assert np.array_equal(x, y)
    assert np.array_equal(a.to_dense(), b.to_dense())


def test_different_seed_different_matrix():
    dense = [sg.KroneckerSRHT(100, 12, 80, seed=s).to_dense() for s in (0, 1, 2, 2**63, 2**64 - 1)]
    for i in range(len(dense)):
        for j in range(i):
            assert not np.array_equal(dense[i], dense[j]), (i, j)
    a, b = sg.KroneckerSRHT(100, 12, 80, seed=0), sg.KroneckerSRHT(100, 12, 80, seed=1)
    assert not np.array_equal(a.cells[0] * 16 + a.cells[1], b.cells[0] * 16 + b.cells[1])
    assert not np.array_equal(a.signs[0], b.signs[0])
    assert not np.array_equal(a.signs[1], b.signs[1])


def test_default_seed_is_zero():
    assert np.array_equal(sg.KroneckerSRHT(9, 4, 10).to_dense(), sg.KroneckerSRHT(9, 4, 10, seed=0).to_dense())


def test_generator_seed():
    a = sg.KroneckerSRHT(30, 5, 40, seed=np.random.default_rng(42))
    b = sg.KroneckerSRHT(30, 5, 40, seed=np.random.default_rng(42))
    c = sg.KroneckerSRHT(30, 5, 40, seed=np.random.default_rng(43))
    assert np.array_equal(a.to_dense(), b.to_dense())
    assert not np.array_equal(a.to_dense(), c.to_dense())
    np.testing.assert_allclose(a.to_dense(), explicit_dense(a), rtol=0, atol=1e-13)


@pytest.mark.parametrize("seed", [0, 99, 2**64 - 1, "generator"])
def test_pickle_round_trip(seed):
    if seed == "generator":
        seed = np.random.default_rng(5)
    S = sg.KroneckerSRHT(37, 11, 90, seed=seed)
    T = pickle.loads(pickle.dumps(S))
    assert isinstance(T, sg.KroneckerSRHT)
    assert T.shape == S.shape
    for x, y in zip((*T.cells, *T.signs), (*S.cells, *S.signs)):
        assert np.array_equal(x, y)
    assert np.array_equal(T.to_dense(), S.to_dense())


def test_repr_mentions_sizes():
    r = repr(sg.KroneckerSRHT(100, 12, 33, seed=4))
    assert "100" in r and "12" in r and "33" in r


# --------------------------------------------------------------------------------------------
# Statistics: E[S^T S] = I and subspace embedding
# --------------------------------------------------------------------------------------------


def test_expected_gram_is_identity():
    # m, d not powers of two: the padding must not bias the expectation.
    m, d, n_out, trials = 3, 5, 6, 500
    mean = np.zeros((m * d, m * d))
    for s in range(trials):
        D = sg.KroneckerSRHT(m, d, n_out, seed=s).to_dense()
        mean += D.T @ D
    mean /= trials
    np.testing.assert_allclose(np.diag(mean), 1.0, rtol=1e-12)
    off = mean - np.diag(np.diag(mean))
    # each off-diagonal entry of one S^T S has standard deviation <= 1 / sqrt(n_out) or so
    assert np.abs(off).max() < 5 / np.sqrt(n_out * trials), np.abs(off).max()


def test_norm_preserved_in_expectation(rng):
    m, d, n_out, trials = 20, 6, 24, 400
    u, x = rng.standard_normal(m), rng.standard_normal(d)
    ref = np.dot(u, u) * np.dot(x, x)
    sq = [np.sum(sg.KroneckerSRHT(m, d, n_out, seed=s).apply_kron(u[None], x[None]) ** 2) for s in range(trials)]
    assert abs(np.mean(sq) / ref - 1) < 0.06


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "kind,m,d,k,factor",
    [
        ("kronecker", 64, 16, 10, 16),
        ("kronecker", 33, 9, 8, 16),
        ("kronecker", 256, 8, 25, 16),
        ("random", 100, 12, 20, 8),
        ("random", 64, 16, 10, 8),
    ],
)
def test_subspace_embedding(kind, m, d, k, factor, seed):
    rng = np.random.default_rng(1000 + seed)
    if kind == "kronecker":  # the structure the sketch is built for (columns of J^T)
        A = kron_columns(rng.standard_normal((k, m)), rng.standard_normal((k, d)))
    else:
        A = rng.standard_normal((m * d, k))
    Q, _ = np.linalg.qr(A)
    S = sg.KroneckerSRHT(m, d, factor * k, seed=seed)
    sv = np.linalg.svd(S @ Q, compute_uv=False)
    assert sv.min() >= 0.5 and sv.max() <= 1.5, sv
    # the Kronecker path gives the same embedding
    if kind == "kronecker":
        sv_kron = np.linalg.svd(S.to_dense() @ Q, compute_uv=False)
        np.testing.assert_allclose(sv, sv_kron, rtol=1e-10)


def test_subspace_embedding_of_coordinate_subspace():
    # The hard case for plain row sampling: e_r (x) e_c for a few (r, c).
    m, d, k = 128, 16, 6
    Q = np.zeros((m * d, k))
    for i, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (5, 7), (100, 15), (127, 3)]):
        Q[r * d + c, i] = 1.0
    for seed in range(4):
        sv = np.linalg.svd(sg.KroneckerSRHT(m, d, 16 * k, seed=seed) @ Q, compute_uv=False)
        assert sv.min() >= 0.5 and sv.max() <= 1.5, sv


# --------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,d,n_out,k", [(16, 4, 20, 3), (1024, 16, 800, 64), (3000, 10, 500, 40), (100, 7, 64, 500)])
def test_thread_count_invariance(m, d, n_out, k):
    S = sg.KroneckerSRHT(m, d, n_out, seed=1)
    rng = np.random.default_rng(k)
    U = rng.standard_normal((k, m))
    X = rng.standard_normal((k, d))
    ref = S.apply_kron(U, X, n_threads=1)
    for n_threads in (2, 3, None, -1):
        assert np.array_equal(S.apply_kron(U, X, n_threads=n_threads), ref), n_threads
    A = rng.standard_normal((m * d, 4))
    ref = S.apply(A, n_threads=1)
    for n_threads in (2, 3, None, -1):
        assert np.array_equal(S.apply(A, n_threads=n_threads), ref), n_threads
    v = A[:, 0].copy()
    assert np.array_equal(S.apply(v, n_threads=1), S.apply(v, n_threads=2))


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,d,n_out", [(4, 4, 17), (5, 3, 33), (1, 1, 2), (1000, 10, 16385), (3, 3, 0), (3, 3, -1)])
def test_n_out_out_of_range(m, d, n_out):
    with pytest.raises(ValueError, match="n_out"):
        sg.KroneckerSRHT(m, d, n_out)


def test_n_out_up_to_padded_grid_is_fine():
    assert sg.KroneckerSRHT(5, 3, 32).shape == (32, 15)
    assert sg.KroneckerSRHT(1, 1, 1).shape == (1, 1)


@pytest.mark.parametrize("name,args", [("m", (0, 3, 1)), ("m", (-2, 3, 1)), ("d", (3, 0, 1)), ("d", (3, -1, 1))])
def test_sizes_out_of_range(name, args):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        sg.KroneckerSRHT(*args)


@pytest.mark.parametrize("bad", [4.0, 4.5, True, "4", None, np.float64(4)])
def test_non_integer_sizes(bad):
    with pytest.raises(TypeError, match=r"\bm\b"):
        sg.KroneckerSRHT(bad, 4, 2)
    with pytest.raises(TypeError, match=r"\bd\b"):
        sg.KroneckerSRHT(4, bad, 2)
    with pytest.raises(TypeError, match="n_out"):
        sg.KroneckerSRHT(4, 4, bad)


@pytest.mark.parametrize("seed,exc", [(-1, ValueError), (2**64, ValueError), (1.0, TypeError), ("1", TypeError)])
def test_bad_seed(seed, exc):
    with pytest.raises(exc, match="seed"):
        sg.KroneckerSRHT(4, 4, 2, seed=seed)


@pytest.mark.parametrize(
    "U_shape,X_shape,name",
    [
        ((3, 9), (3, 4), "U"),  # wrong m
        ((3, 10), (3, 5), "X"),  # wrong d
        ((10,), (3, 4), "U"),  # 1-D
        ((3, 10), (4,), "X"),
        ((3, 10, 1), (3, 4), "U"),
        ((3, 10), (2, 4), "rows"),  # mismatched k
        ((1, 10), (3, 4), "rows"),
    ],
)
def test_apply_kron_bad_shapes(U_shape, X_shape, name):
    S = sg.KroneckerSRHT(10, 4, 8)
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        S.apply_kron(np.ones(U_shape), np.ones(X_shape))


def test_apply_kron_bad_dtype():
    S = sg.KroneckerSRHT(10, 4, 8)
    with pytest.raises(TypeError, match=r"\bU\b"):
        S.apply_kron(np.ones((2, 10), dtype=complex), np.ones((2, 4)))
    with pytest.raises(TypeError, match=r"\bX\b"):
        S.apply_kron(np.ones((2, 10)), np.ones((2, 4), dtype=object))


@pytest.mark.parametrize("shape", [(39,), (41, 2), (0,), (4, 10), (40, 2, 2), ()])
def test_apply_bad_shapes(shape):
    S = sg.KroneckerSRHT(10, 4, 8)
    with pytest.raises(ValueError, match=r"\bA\b"):
        S.apply(np.ones(shape))
    with pytest.raises(ValueError, match=r"\bA\b"):
        S @ np.ones(shape)


@pytest.mark.parametrize("n_threads,exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("1", TypeError)])
def test_bad_n_threads(n_threads, exc):
    S = sg.KroneckerSRHT(10, 4, 8)
    with pytest.raises(exc, match="n_threads"):
        S.apply_kron(np.ones((1, 10)), np.ones((1, 4)), n_threads=n_threads)
    with pytest.raises(exc, match="n_threads"):
        S.apply(np.ones(40), n_threads=n_threads)


def test_to_dense_refuses_huge():
    S = sg.KroneckerSRHT(2**14, 2**10, 2**14)
    with pytest.raises(ValueError, match="to_dense"):
        S.to_dense()

