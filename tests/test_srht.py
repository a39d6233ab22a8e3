"""sg.SRHT against an explicit dense construction from .rows, .signs and scipy.linalg.hadamard."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.linalg

import sketchgn as sg
from conftest import rel_err

F64_EPS = np.finfo(np.float64).eps

# (n_in, n_out): powers of two and not, n_out from 1 to n_pad.
SIZES = [(1, 1), (2, 1), (5, 3), (8, 8), (10, 16), (33, 7), (64, 20), (100, 128), (257, 40), (1000, 64)]


def explicit_dense(S):
    """sqrt(n_pad / n_out) * H_orth[rows] @ diag(signs padded with zeros), cut to n_in columns."""
    n_in, n_out, n_pad = S.n_in, S.shape[0], S.n_pad
    H = scipy.linalg.hadamard(n_pad).astype(np.float64) / np.sqrt(n_pad)
    d = np.zeros(n_pad)
    d[:n_in] = S.signs
    full = np.sqrt(n_pad / n_out) * H[S.rows] @ np.diag(d)  # (n_out, n_pad)
    assert np.all(full[:, n_in:] == 0)
    return full[:, :n_in]


# --------------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_in,n_out", SIZES)
def test_attributes(n_in, n_out):
    S = sg.SRHT(n_in, n_out, seed=11)
    n_pad = 1 << (n_in - 1).bit_length()
    assert S.shape == (n_out, n_in)
    assert S.n_pad == n_pad
    rows = S.rows
    assert rows.dtype == np.int64 and rows.shape == (n_out,)
    assert np.all(np.diff(rows) > 0), "rows must be sorted and distinct"
    assert rows.min() >= 0 and rows.max() < n_pad
    signs = S.signs
    assert signs.dtype.kind == "f" and signs.shape == (n_in,)
    assert np.all(np.abs(signs) == 1)


def test_rows_and_signs_cannot_change_the_sketch():
    S = sg.SRHT(50, 8, seed=6)
    before = S.to_dense()
    for arr in (S.rows, S.signs):
        try:
            arr[...] = 0
        except ValueError:  # read-only views are fine too
            pass
    assert np.array_equal(S.to_dense(), before)


def test_rows_cover_everything_when_n_out_is_n_pad():
    S = sg.SRHT(100, 128, seed=3)
    assert np.array_equal(S.rows, np.arange(128))


def test_signs_and_rows_look_random():
    # Not a statistical test of the generator: catches constant signs, or always the first rows.
    S = sg.SRHT(4096, 256, seed=5)
    assert 0.4 < np.mean(S.signs > 0) < 0.6
    assert S.rows[-1] > 2048 and S.rows[0] < 2048
    assert not np.array_equal(S.rows, np.arange(256))


def test_rows_roughly_uniform_over_seeds():
    # Each of the n_pad rows is kept with probability n_out / n_pad.
    n_pad, n_out, trials = 64, 8, 400
    counts = np.zeros(n_pad)
    for seed in range(trials):
        counts[sg.SRHT(n_pad, n_out, seed=seed).rows] += 1
    expected = trials * n_out / n_pad  # 50
    assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected))


# --------------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_in,n_out", SIZES)
def test_to_dense_matches_explicit_construction(n_in, n_out):
    S = sg.SRHT(n_in, n_out, seed=n_in + n_out)
    dense = S.to_dense()
    assert dense.dtype == np.float64 and dense.shape == (n_out, n_in)
    np.testing.assert_allclose(dense, explicit_dense(S), rtol=0, atol=1e-12 / np.sqrt(n_out))


@pytest.mark.parametrize("n_in,n_out", SIZES)
def test_matmul_matches_dense(rng, n_in, n_out):
    S = sg.SRHT(n_in, n_out, seed=7)
    dense = explicit_dense(S)
    A = rng.standard_normal((n_in, 5))
    got = S @ A
    assert got.shape == (n_out, 5) and got.dtype == np.float64
    np.testing.assert_allclose(got, dense @ A, rtol=0, atol=1e-12 * np.sqrt(n_in) * np.abs(A).max())
    np.testing.assert_allclose(got, S.to_dense() @ A, rtol=0, atol=1e-12 * np.sqrt(n_in) * np.abs(A).max())
    assert np.array_equal(S.apply(A), got)
    # vectors
    v = rng.standard_normal(n_in)
    got_v = S @ v
    assert got_v.shape == (n_out,)
    np.testing.assert_allclose(got_v, dense @ v, rtol=0, atol=1e-12 * np.sqrt(n_in) * np.abs(v).max())


def test_1d_input_gives_1d_output(rng):
    S = sg.SRHT(50, 12, seed=1)
    v = rng.standard_normal(50)
    got = S.apply(v)
    assert got.ndim == 1 and got.shape == (12,)
    assert np.array_equal(got, S.apply(v[:, None])[:, 0])


def test_single_column_and_empty_columns(rng):
    S = sg.SRHT(20, 6, seed=2)
    A = rng.standard_normal((20, 1))
    assert (S @ A).shape == (6, 1)
    empty = S @ np.zeros((20, 0))
    assert empty.shape == (6, 0)


def test_columns_are_independent(rng):
    # Sketching a block equals sketching its columns one at a time.
    S = sg.SRHT(300, 32, seed=9)
    A = rng.standard_normal((300, 6))
    block = S @ A
    for j in range(A.shape[1]):
        assert np.array_equal(block[:, j], S @ np.ascontiguousarray(A[:, j]))


def test_column_norms_are_exactly_one():
    # Every entry of H D e_i has magnitude 1/sqrt(n_pad), so ||S e_i||^2 = n_out * (n_pad / n_out) / n_pad.
    for n_in, n_out in [(10, 4), (100, 33), (1000, 64)]:
        dense = sg.SRHT(n_in, n_out, seed=n_in).to_dense()
        np.testing.assert_allclose(np.linalg.norm(dense, axis=0), 1.0, rtol=1e-12)


def test_linear(rng):
    S = sg.SRHT(77, 16, seed=4)
    x, y = rng.standard_normal((2, 77))
    np.testing.assert_allclose(S @ (2.5 * x - 3 * y), 2.5 * (S @ x) - 3 * (S @ y), rtol=0, atol=1e-12 * 77)


# --------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------


def test_same_seed_same_matrix():
    a = sg.SRHT(300, 40, seed=123)
    b = sg.SRHT(300, 40, seed=123)
    assert np.array_equal(a.rows, b.rows)
    assert np.array_equal(a.signs, b.signs)
    assert np.array_equal(a.to_dense(), b.to_dense())


def test_different_seed_different_matrix():
    dense = [sg.SRHT(300, 40, seed=s).to_dense() for s in (0, 1, 2, 2**63, 2**64 - 1)]
    for i in range(len(dense)):
        for j in range(i):
            assert not np.array_equal(dense[i], dense[j])
    # both the signs and the rows depend on the seed
    a, b = sg.SRHT(300, 40, seed=0), sg.SRHT(300, 40, seed=1)
    assert not np.array_equal(a.signs, b.signs)
    assert not np.array_equal(a.rows, b.rows)


def test_default_seed_is_zero():
    assert np.array_equal(sg.SRHT(64, 8).to_dense(), sg.SRHT(64, 8, seed=0).to_dense())


def test_numpy_integer_seed_and_sizes():
    a = sg.SRHT(np.int64(100), np.int32(10), seed=np.uint64(5))
    b = sg.SRHT(100, 10, seed=5)
    assert a.shape == (10, 100)
    assert np.array_equal(a.to_dense(), b.to_dense())


def test_generator_seed_deterministic():
    a = sg.SRHT(200, 24, seed=np.random.default_rng(42))
    b = sg.SRHT(200, 24, seed=np.random.default_rng(42))
    assert np.array_equal(a.to_dense(), b.to_dense())
    np.testing.assert_allclose(a.to_dense(), explicit_dense(a), rtol=0, atol=1e-12)
    c = sg.SRHT(200, 24, seed=np.random.default_rng(43))
    assert not np.array_equal(a.to_dense(), c.to_dense())


def test_generator_seed_advances_the_generator():
    g = np.random.default_rng(42)
    a = sg.SRHT(200, 24, seed=g)
    b = sg.SRHT(200, 24, seed=g)  # the generator's state has moved on
    assert not np.array_equal(a.to_dense(), b.to_dense())
    # equal generator states give equal sketches, wherever the state came from
    g1 = np.random.default_rng(7)
    g1.standard_normal(3)
    g2 = np.random.default_rng(7)
    g2.standard_normal(3)
    assert np.array_equal(sg.SRHT(64, 8, seed=g1).to_dense(), sg.SRHT(64, 8, seed=g2).to_dense())


# --------------------------------------------------------------------------------------------
# Statistics: subspace embedding and E[S^T S] = I
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 12345])
@pytest.mark.parametrize("n_in,k", [(1000, 10), (4096, 8)])
def test_subspace_embedding(n_in, k, seed):
    Q, _ = np.linalg.qr(np.random.default_rng(seed + 100).standard_normal((n_in, k)))
    S = sg.SRHT(n_in, 8 * k, seed=seed)
    sv = np.linalg.svd(S @ Q, compute_uv=False)
    assert sv.min() >= 0.5 and sv.max() <= 1.5, sv


def test_subspace_embedding_of_coordinate_subspace():
    # The hard case for plain row sampling: a subspace spanned by a few basis vectors.
    n_in, k = 2048, 6
    Q = np.zeros((n_in, k))
    Q[np.arange(k), np.arange(k)] = 1.0
    for seed in range(4):
        sv = np.linalg.svd(sg.SRHT(n_in, 8 * k, seed=seed) @ Q, compute_uv=False)
        assert sv.min() >= 0.5 and sv.max() <= 1.5, sv


def test_norm_preserved_in_expectation(rng):
    # E ||S x||^2 = ||x||^2; one seed has a relative spread of about sqrt(2 / n_out).
    n_in, n_out, trials = 300, 64, 400
    x = rng.standard_normal(n_in)
    x[:5] += 10  # not too spread out
    ratios = [np.sum((sg.SRHT(n_in, n_out, seed=s) @ x) ** 2) for s in range(trials)]
    assert abs(np.mean(ratios) / np.dot(x, x) - 1) < 0.04


def test_expected_gram_is_identity():
    n_in, n_out, trials = 20, 16, 400
    mean = np.zeros((n_in, n_in))
    for s in range(trials):
        d = sg.SRHT(n_in, n_out, seed=s).to_dense()
        mean += d.T @ d
    mean /= trials
    np.testing.assert_allclose(np.diag(mean), 1.0, rtol=1e-12)
    off = mean - np.diag(np.diag(mean))
    assert np.abs(off).max() < 0.1


# --------------------------------------------------------------------------------------------
# Threads, dtypes, layouts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_in,n_out,k", [(100, 10, 3), (1000, 64, 128), (3000, 200, 40), (2**16, 128, 2)])
def test_thread_count_invariance(simd_level, n_in, n_out, k):
    S = sg.SRHT(n_in, n_out, seed=1)
    A = np.random.default_rng(k).standard_normal((n_in, k))
    ref = S.apply(A, n_threads=1)
    for n_threads in (2, 3, None, -1):
        assert np.array_equal(S.apply(A, n_threads=n_threads), ref), n_threads
    A32 = A.astype(np.float32)
    ref32 = S.apply(A32, n_threads=1)
    assert np.array_equal(S.apply(A32, n_threads=2), ref32)
    assert np.array_equal(S.apply(A32, n_threads=None), ref32)


def test_simd_paths_agree(simd_level, at_baseline, rng):
    S = sg.SRHT(3000, 100, seed=2)
    A = rng.standard_normal((3000, 9))
    np.testing.assert_allclose(S @ A, at_baseline(S.apply, A), rtol=0, atol=1e-12 * np.abs(A).max())


@pytest.mark.parametrize("n_in,n_out", [(100, 16), (1000, 64)])
def test_float32_input_gives_close_float32_output(rng, n_in, n_out):
    S = sg.SRHT(n_in, n_out, seed=3)
    A = rng.standard_normal((n_in, 4))
    got = S @ A.astype(np.float32)
    assert got.dtype == np.float32 and got.shape == (n_out, 4)
    assert rel_err(got, S @ A.astype(np.float32).astype(np.float64)) <= 1e-6 * 10
    v = A[:, 0].astype(np.float32)
    got_v = S @ v
    assert got_v.dtype == np.float32 and got_v.shape == (n_out,)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_integer_input_becomes_float64(rng, dtype):
    S = sg.SRHT(40, 8, seed=0)
    A = rng.integers(0, 3, size=(40, 2)).astype(dtype)
    got = S @ A
    assert got.dtype == np.float64
    assert np.array_equal(got, S @ A.astype(np.float64))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: np.asfortranarray(a), id="fortran"),
        pytest.param(lambda a: a[:, ::2], id="column-stride"),
        pytest.param(lambda a: a[::-1, ::-1], id="negative-strides"),
    ],
)
def test_non_contiguous_input(rng, make):
    S = sg.SRHT(64, 16, seed=1)
    A = make(rng.standard_normal((64, 6)))
    assert not A.flags.c_contiguous
    before = A.copy()
    assert np.array_equal(S @ A, S @ np.ascontiguousarray(A))
    assert np.array_equal(A, before)
    v = rng.standard_normal(128)[::2]
    assert np.array_equal(S @ v, S @ v.copy())


def test_input_never_modified(rng):
    S = sg.SRHT(100, 10, seed=1)
    for A in (rng.standard_normal((100, 3)), rng.standard_normal(100).astype(np.float32)):
        before = A.copy()
        S @ A
        S.apply(A, n_threads=2)
        assert np.array_equal(A, before)


# --------------------------------------------------------------------------------------------
# Pickle and repr
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 99, 2**64 - 1, "generator"])
def test_pickle_round_trip(seed):
    if seed == "generator":
        seed = np.random.default_rng(5)
    S = sg.SRHT(123, 17, seed=seed)
    T = pickle.loads(pickle.dumps(S))
    assert isinstance(T, sg.SRHT)
    assert T.shape == S.shape and T.n_pad == S.n_pad
    assert np.array_equal(T.rows, S.rows)
    assert np.array_equal(T.signs, S.signs)
    assert np.array_equal(T.to_dense(), S.to_dense())


def test_repr_mentions_sizes():
    r = repr(sg.SRHT(100, 10, seed=4))
    assert "100" in r and "10" in r


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_in,n_out", [(10, 0), (10, -1), (10, 17), (16, 17), (1, 2), (1000, 1025)])
def test_n_out_out_of_range(n_in, n_out):
    with pytest.raises(ValueError, match="n_out"):
        sg.SRHT(n_in, n_out)


def test_n_out_up_to_n_pad_is_fine():
    assert sg.SRHT(10, 16).shape == (16, 10)
    assert sg.SRHT(1, 1).shape == (1, 1)


@pytest.mark.parametrize("n_in", [0, -5])
def test_n_in_out_of_range(n_in):
    with pytest.raises(ValueError, match="n_in"):
        sg.SRHT(n_in, 1)


@pytest.mark.parametrize("bad", [10.0, 10.5, True, "10", None, np.float64(10)])
def test_non_integer_sizes(bad):
    with pytest.raises(TypeError, match="n_in"):
        sg.SRHT(bad, 4)
    with pytest.raises(TypeError, match="n_out"):
        sg.SRHT(32, bad)


@pytest.mark.parametrize("seed", [-1, 2**64, -(2**70)])
def test_seed_out_of_range(seed):
    with pytest.raises(ValueError, match="seed"):
        sg.SRHT(16, 4, seed=seed)


@pytest.mark.parametrize("seed", [1.0, True, np.bool_(False), "1", None, np.random.RandomState(0)])
def test_seed_wrong_type(seed):
    with pytest.raises(TypeError, match="seed"):
        sg.SRHT(16, 4, seed=seed)


@pytest.mark.parametrize("shape", [(9,), (11, 2), (0,), (1, 10)])
def test_apply_wrong_number_of_rows(shape):
    S = sg.SRHT(10, 4)
    with pytest.raises(ValueError, match=r"\bA\b"):
        S.apply(np.ones(shape))
    with pytest.raises(ValueError, match=r"\bA\b"):
        S @ np.ones(shape)


@pytest.mark.parametrize("shape", [(10, 2, 2), (10, 1, 1, 1)])
def test_apply_3d_input(shape):
    with pytest.raises(ValueError, match=r"\bA\b"):
        sg.SRHT(10, 4).apply(np.ones(shape))


@pytest.mark.parametrize("n_in", [1, 10])
@pytest.mark.parametrize(
    "a",
    [
        pytest.param(np.array(1.0), id="0d-array"),
        pytest.param(np.float64(1.0), id="numpy-scalar"),
        pytest.param(1.0, id="python-float"),
    ],
)
def test_apply_0d_input(n_in, a):
    # A scalar is neither (n_in,) nor (n_in, k), even when n_in == 1.
    with pytest.raises(ValueError, match=r"\bA\b"):
        sg.SRHT(n_in, 1).apply(a)


@pytest.mark.parametrize("dtype", [np.complex128, object, np.float16])
def test_apply_bad_dtype(dtype):
    with pytest.raises(TypeError, match=r"\bA\b"):
        sg.SRHT(10, 4).apply(np.ones((10, 2), dtype=dtype))


@pytest.mark.parametrize("n_threads,exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("1", TypeError)])
def test_apply_bad_n_threads(n_threads, exc):
    with pytest.raises(exc, match="n_threads"):
        sg.SRHT(10, 4).apply(np.ones(10), n_threads=n_threads)
