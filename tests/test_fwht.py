"""sg.fwht against scipy.linalg.hadamard and an O(n log n) NumPy reference.

Kernel tests take the `simd_level` fixture, so they run under every SIMD path this CPU supports.
Sizes above 256 KiB per transform (2^16 float64, 2^17 float32 and up) take the blocked large-transform
code path; smaller ones the in-cache one.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sketchgn as sg
from conftest import log2n, ref_fwht, rel_err

F64_EPS = np.finfo(np.float64).eps
F32_EPS = np.finfo(np.float32).eps

SMALL_SIZES = [2**k for k in range(0, 11)]  # 1 .. 1024: dense Hadamard matrices are cheap
# In-cache boundary (2^15 f64 = 256 KiB) and blocked sizes up to 2^20.
BIG_SIZES_F64 = [2**15, 2**16, 2**17, 2**18, 2**20]
BIG_SIZES_F32 = [2**16, 2**17, 2**18, 2**20]

PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _float_tol(dtype, n):
    eps = F64_EPS if np.dtype(dtype) == np.float64 else F32_EPS
    return 4 * eps * log2n(n)


# --------------------------------------------------------------------------------------------
# Correctness against references
# --------------------------------------------------------------------------------------------


def test_reference_matches_scipy_hadamard(rng):
    # The test's own reference must itself be right (natural / Sylvester order).
    for n in SMALL_SIZES:
        x = rng.standard_normal((3, n))
        H = scipy.linalg.hadamard(n).astype(np.float64)
        np.testing.assert_allclose(ref_fwht(x), x @ H.T, rtol=0, atol=1e-12 * n)


@pytest.mark.parametrize("n", SMALL_SIZES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_integer_valued_input_is_exact(simd_level, rng, n, dtype):
    # Small integers: every partial sum is exactly representable, so the result must be exact.
    x = rng.integers(-8, 9, size=(3, n)).astype(dtype)
    H = scipy.linalg.hadamard(n).astype(np.int64)
    expected = (x.astype(np.int64) @ H.T).astype(dtype)
    got = sg.fwht(x)
    assert got.dtype == dtype
    assert got.shape == x.shape
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("n", SMALL_SIZES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("normalize", [False, True])
def test_matches_scipy_hadamard(simd_level, rng, n, dtype, normalize):
    x = rng.standard_normal((2, n)).astype(dtype)
    H = scipy.linalg.hadamard(n).astype(np.float64)
    if normalize:
        H /= np.sqrt(n)
    expected = x.astype(np.float64) @ H.T
    got = sg.fwht(x, normalize=normalize)
    assert got.dtype == dtype
    assert rel_err(got, expected) <= _float_tol(dtype, n)


@pytest.mark.parametrize("n", BIG_SIZES_F64)
def test_large_float64_matches_reference(simd_level, n):
    x = np.random.default_rng(n).standard_normal(n)
    expected = ref_fwht(x)
    got = sg.fwht(x)
    assert got.dtype == np.float64 and got.shape == (n,)
    assert rel_err(got, expected) <= _float_tol(np.float64, n)
    # Also element-wise: no single entry may be off (the norm-wise bound could hide a few).
    np.testing.assert_allclose(got, expected, rtol=0, atol=64 * F64_EPS * np.sqrt(n) * log2n(n))


@pytest.mark.parametrize("n", BIG_SIZES_F32)
def test_large_float32_matches_reference(simd_level, n):
    x = np.random.default_rng(n + 1).standard_normal(n).astype(np.float32)
    expected = ref_fwht(x)
    got = sg.fwht(x)
    assert got.dtype == np.float32 and got.shape == (n,)
    assert rel_err(got, expected) <= 1e-6 * log2n(n)
    np.testing.assert_allclose(got, expected, rtol=0, atol=64 * F32_EPS * np.sqrt(n) * log2n(n))


@pytest.mark.parametrize("shape", [(3, 2**16), (2, 2**17)])
def test_large_batched_normalized_matches_reference(simd_level, shape):
    x = np.random.default_rng(sum(shape)).standard_normal(shape)
    got = sg.fwht(x, normalize=True)
    expected = ref_fwht(x, normalize=True)
    for row_got, row_ref in zip(got, expected):
        assert rel_err(row_got, row_ref) <= _float_tol(np.float64, shape[-1])


@pytest.mark.parametrize("n", [2**k for k in (1, 3, 5, 8, 12, 16, 17, 18, 20)])
@pytest.mark.parametrize("normalize", [False, True])
def test_float32_error_bound(simd_level, n, normalize):
    # float32 computed in float32, compared with a float64 reference of the same float32 input.
    x = np.random.default_rng(3 * n).standard_normal(n).astype(np.float32)
    got = sg.fwht(x, normalize=normalize)
    assert got.dtype == np.float32
    assert rel_err(got, ref_fwht(x, normalize=normalize)) <= 1e-6 * log2n(n)


@pytest.mark.parametrize("n", [1, 2, 16, 1024, 2**16, 2**17])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normalize_is_unnormalized_over_sqrt_n(simd_level, rng, n, dtype):
    x = rng.standard_normal((2, n)).astype(dtype)
    scaled = sg.fwht(x).astype(np.float64) / np.sqrt(n)
    assert rel_err(sg.fwht(x, normalize=True), scaled) <= _float_tol(dtype, n)


@pytest.mark.parametrize("n", [1, 2, 4, 64, 2**15, 2**16, 2**17, 2**20])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normalized_is_an_involution(simd_level, n, dtype):
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    y = sg.fwht(x, normalize=True)
    # Orthonormal: the norm is preserved ...
    assert abs(np.linalg.norm(y.astype(np.float64)) / np.linalg.norm(x.astype(np.float64)) - 1) <= _float_tol(dtype, n)
    # ... and applying it twice gives x back.
    assert rel_err(sg.fwht(y, normalize=True), x) <= 2 * _float_tol(dtype, n)


def test_every_simd_path_matches_baseline(simd_level, at_baseline):
    cases = [
        (np.float64, (1,)),
        (np.float64, (5, 2)),
        (np.float64, (4, 8)),
        (np.float64, (3, 64)),
        (np.float64, (2, 4096)),
        (np.float64, (2, 2**16)),
        (np.float64, (2**18,)),
        (np.float32, (7, 4)),
        (np.float32, (3, 16)),
        (np.float32, (3, 512)),
        (np.float32, (2, 2**17)),
        (np.float32, (2**19,)),
    ]
    for dtype, shape in cases:
        x = np.random.default_rng(shape[-1]).standard_normal(shape).astype(dtype)
        for normalize in (False, True):
            base = at_baseline(sg.fwht, x, normalize=normalize)
            got = sg.fwht(x, normalize=normalize)
            assert got.dtype == base.dtype and got.shape == base.shape
            n = shape[-1]
            scale = np.sqrt(n) if not normalize else 1.0
            np.testing.assert_allclose(
                got, base, rtol=0, atol=8 * _float_tol(dtype, n) * scale * np.abs(x).max(),
                err_msg=f"{simd_level} vs baseline, {np.dtype(dtype)} {shape} normalize={normalize}",
            )


# --------------------------------------------------------------------------------------------
# Shapes, dtypes, batches
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8,), (1,), (5, 1), (2, 3, 16), (4, 1, 2, 32), (1, 1, 1)])
def test_batch_shapes(simd_level, rng, shape):
    x = rng.standard_normal(shape)
    got = sg.fwht(x)
    assert got.shape == x.shape
    n = shape[-1]
    # Row by row against the dense matrix: the batch axes must not mix.
    H = scipy.linalg.hadamard(n).astype(np.float64)
    expected = (x.reshape(-1, n) @ H.T).reshape(shape)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * n)


def test_n_equal_one_is_identity(rng):
    x = rng.standard_normal((4, 1))
    assert np.array_equal(sg.fwht(x), x)
    assert np.array_equal(sg.fwht(x, normalize=True), x)
    assert np.array_equal(sg.fwht(np.array([2.5])), np.array([2.5]))


@pytest.mark.parametrize("shape", [(0, 8), (0, 1), (3, 0, 4), (0, 0, 2**16)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty_batch(shape, dtype):
    x = np.zeros(shape, dtype=dtype)
    got = sg.fwht(x)
    assert got.shape == shape and got.dtype == dtype
    out = np.empty(shape, dtype=dtype)
    assert sg.fwht(x, out=out) is out


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64, np.bool_])
def test_integer_and_bool_input_become_float64(rng, dtype):
    x = rng.integers(0, 2, size=(3, 32)).astype(dtype)
    got = sg.fwht(x)
    assert got.dtype == np.float64
    assert np.array_equal(got, sg.fwht(x.astype(np.float64)))
    assert np.array_equal(got, x.astype(np.float64) @ scipy.linalg.hadamard(32).T)


def test_python_list_input():
    got = sg.fwht([[1, 2, 3, 4], [0.5, 0, 0, 0]])
    assert got.dtype == np.float64
    assert np.array_equal(got, np.array([[10.0, -2.0, -4.0, 0.0], [0.5, 0.5, 0.5, 0.5]]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(rng, dtype):
    x = rng.standard_normal((2, 64)).astype(dtype)
    assert sg.fwht(x).dtype == dtype
    assert sg.fwht(x, normalize=True).dtype == dtype


# --------------------------------------------------------------------------------------------
# out=, in place, aliasing, input left untouched
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16,), (3, 128), (2, 2**16), (2**17,)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("normalize", [False, True])
def test_in_place_out_and_default_agree(simd_level, rng, shape, dtype, normalize):
    x = rng.standard_normal(shape).astype(dtype)
    x_before = x.copy()

    default = sg.fwht(x, normalize=normalize)
    assert np.array_equal(x, x_before), "x modified although out=None"
    assert not np.may_share_memory(default, x)

    out = np.full(shape, np.nan, dtype=dtype)
    returned = sg.fwht(x, normalize=normalize, out=out)
    assert returned is out
    assert np.array_equal(out, default)
    assert np.array_equal(x, x_before), "x modified although out is another array"

    inplace = x.copy()
    returned = sg.fwht(inplace, normalize=normalize, out=inplace)
    assert returned is inplace
    assert np.array_equal(inplace, default)

    assert rel_err(default, ref_fwht(x_before, normalize=normalize)) <= _float_tol(dtype, shape[-1])


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: a, id="contiguous-f64"),
        pytest.param(lambda a: a.astype(np.float32), id="contiguous-f32"),
        pytest.param(lambda a: np.round(a * 10).astype(np.int64), id="int64"),
        pytest.param(lambda a: a[:, ::2], id="strided"),
        pytest.param(lambda a: np.asfortranarray(a), id="fortran"),
        pytest.param(lambda a: a[::-1, ::-1], id="negative-strides"),
    ],
)
def test_input_never_modified(rng, make):
    x = make(rng.standard_normal((8, 64)))
    before = x.copy()
    sg.fwht(x)
    sg.fwht(x, normalize=True)
    assert np.array_equal(x, before)


def test_read_only_input_is_accepted(rng):
    x = rng.standard_normal((2, 32))
    x.flags.writeable = False
    np.testing.assert_allclose(sg.fwht(x), ref_fwht(x), rtol=0, atol=1e-12 * 32)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda b: b[:, ::2], id="strided-last-axis"),
        pytest.param(lambda b: b[::2, :32], id="strided-rows"),
        pytest.param(lambda b: np.asfortranarray(b[:, :32]), id="fortran-order"),
        pytest.param(lambda b: b[::-1, :32], id="negative-row-stride"),
        pytest.param(lambda b: b[:, 63:31:-1], id="negative-last-axis-stride"),
        pytest.param(lambda b: b[:, :32].T.copy().T, id="transposed-view"),
        pytest.param(lambda b: b.reshape(4, 4, 64).transpose(1, 0, 2)[:, :, :32], id="3d-transposed"),
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_non_contiguous_input(rng, make, dtype):
    base = rng.standard_normal((16, 64)).astype(dtype)
    x = make(base)
    assert not x.flags.c_contiguous
    got = sg.fwht(x)
    assert np.array_equal(got, sg.fwht(np.ascontiguousarray(x)))
    assert rel_err(got, ref_fwht(x)) <= _float_tol(dtype, x.shape[-1])
    # out= with a non-contiguous input
    out = np.empty(x.shape, dtype=dtype)
    assert np.array_equal(sg.fwht(x, out=out), got)


@pytest.mark.parametrize("n", [8, 256, 2**16])
@pytest.mark.parametrize("shift", [1, 3])
def test_out_overlapping_input(rng, n, shift):
    # x and out are overlapping C-contiguous windows of one buffer.
    rows = 4
    buf = rng.standard_normal((rows + shift) * n)
    x = buf[: rows * n].reshape(rows, n)
    out = buf[shift * n : (rows + shift) * n].reshape(rows, n)
    expected = ref_fwht(x)
    got = sg.fwht(x, out=out)
    assert got is out
    assert rel_err(out, expected) <= _float_tol(np.float64, n)
    # and the other way around: out before x in memory
    buf = rng.standard_normal((rows + shift) * n)
    x = buf[shift * n :].reshape(rows, n)
    out = buf[: rows * n].reshape(rows, n)
    expected = ref_fwht(x)
    sg.fwht(x, out=out, normalize=True)
    assert rel_err(out, expected / np.sqrt(n)) <= _float_tol(np.float64, n)


def test_out_overlapping_within_a_row(rng):
    # Offsets smaller than one row: every output row overlaps two input rows.
    n = 64
    buf = rng.standard_normal(3 * n + 5)
    x = buf[:3 * n].reshape(3, n)
    out = buf[5:].reshape(3, n)
    expected = ref_fwht(x)
    sg.fwht(x, out=out)
    assert rel_err(out, expected) <= _float_tol(np.float64, n)


def test_unaligned_input_and_out(rng):
    # Views one byte off the allocation's alignment are still valid float64 arrays.
    n = 1024
    raw = np.zeros(n * 8 + 1, dtype=np.uint8)
    x = raw[1:].view(np.float64)
    x[:] = rng.standard_normal(n)
    assert not x.flags.aligned
    expected = ref_fwht(x)
    assert rel_err(sg.fwht(x), expected) <= _float_tol(np.float64, n)
    raw_out = np.zeros(n * 8 + 1, dtype=np.uint8)
    out = raw_out[1:].view(np.float64)
    sg.fwht(x, out=out)
    assert rel_err(out, expected) <= _float_tol(np.float64, n)


# --------------------------------------------------------------------------------------------
# Threads: results bitwise identical for any n_threads
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype,shape",
    [
        (np.float64, (1024,)),
        (np.float64, (64, 1024)),  # batch * n >= 2^15: the batch is split across threads
        (np.float64, (7, 4096)),
        (np.float64, (2**16,)),  # blocked large transform, threads share the panels
        (np.float64, (3, 2**17)),
        (np.float64, (2**20,)),
        (np.float32, (33, 2048)),
        (np.float32, (2**17,)),
        (np.float32, (2, 2**19)),
    ],
)
@pytest.mark.parametrize("normalize", [False, True])
def test_thread_count_invariance(simd_level, dtype, shape, normalize):
    x = np.random.default_rng(shape[-1]).standard_normal(shape).astype(dtype)
    ref = sg.fwht(x, normalize=normalize, n_threads=1)
    for n_threads in (2, 3, None, -1):
        got = sg.fwht(x, normalize=normalize, n_threads=n_threads)
        assert np.array_equal(got, ref), f"n_threads={n_threads} differs from n_threads=1"
    inplace = x.copy()
    sg.fwht(inplace, normalize=normalize, out=inplace, n_threads=2)
    assert np.array_equal(inplace, ref)


def test_numpy_integer_n_threads(rng):
    x = rng.standard_normal((4, 256))
    assert np.array_equal(sg.fwht(x, n_threads=np.int64(2)), sg.fwht(x, n_threads=1))


# --------------------------------------------------------------------------------------------
# Property tests (Hypothesis)
# --------------------------------------------------------------------------------------------

shapes = st.tuples(
    st.lists(st.integers(0, 3), min_size=0, max_size=2),  # batch shape
    st.integers(0, 11),  # log2 n
)


@PROPERTY_SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float64, np.float32]))
def test_property_matches_reference(simd_level, shape, seed, dtype):
    batch, log_n = shape
    n = 2**log_n
    x = np.random.default_rng(seed).standard_normal((*batch, n)).astype(dtype)
    got = sg.fwht(x)
    assert got.shape == x.shape and got.dtype == dtype
    if x.size:
        assert rel_err(got, ref_fwht(x)) <= _float_tol(dtype, n)


@PROPERTY_SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float64, np.float32]))
def test_property_involution(shape, seed, dtype):
    batch, log_n = shape
    n = 2**log_n
    x = np.random.default_rng(seed).standard_normal((*batch, n)).astype(dtype)
    back = sg.fwht(sg.fwht(x, normalize=True), normalize=True)
    assert back.shape == x.shape
    if x.size:
        assert rel_err(back, x) <= 2 * _float_tol(dtype, n)
    # Unnormalised: H H = n I
    back = sg.fwht(sg.fwht(x)) / n
    if x.size:
        assert rel_err(back, x) <= 2 * _float_tol(dtype, n)


@PROPERTY_SETTINGS
@given(
    shape=shapes,
    seed=st.integers(0, 2**32 - 1),
    a=st.floats(-4, 4, allow_nan=False),
    b=st.floats(-4, 4, allow_nan=False),
)
def test_property_linearity(shape, seed, a, b):
    batch, log_n = shape
    n = 2**log_n
    g = np.random.default_rng(seed)
    x = g.standard_normal((*batch, n))
    y = g.standard_normal((*batch, n))
    lhs = sg.fwht(a * x + b * y)
    rhs = a * sg.fwht(x) + b * sg.fwht(y)
    scale = (abs(a) + abs(b)) * np.sqrt(n) * max(1.0, np.abs(x).max(initial=0), np.abs(y).max(initial=0))
    # (+ the smallest normal: with subnormal a or b the bound itself underflows to 0)
    atol = 16 * F64_EPS * log2n(n) * scale * np.sqrt(n) + np.finfo(np.float64).tiny
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=atol)


@PROPERTY_SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), n_threads=st.sampled_from([2, 3, None]))
def test_property_thread_invariance(shape, seed, n_threads):
    batch, log_n = shape
    x = np.random.default_rng(seed).standard_normal((*batch, 2**log_n))
    assert np.array_equal(sg.fwht(x, n_threads=n_threads), sg.fwht(x, n_threads=1))


# --------------------------------------------------------------------------------------------
# Bad input: TypeError / ValueError naming the parameter
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 5, 6, 12, 100, 1000, 2**16 + 2])
def test_length_not_power_of_two(n):
    with pytest.raises(ValueError, match=r"\bx\b.*power"):
        sg.fwht(np.ones((2, n)))
    with pytest.raises(ValueError, match=r"\bx\b"):
        sg.fwht(np.ones(n, dtype=np.float32))


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 0)])
def test_length_zero(shape):
    with pytest.raises(ValueError, match=r"\bx\b"):
        sg.fwht(np.ones(shape))


@pytest.mark.parametrize(
    "x",
    [
        pytest.param(np.array(4.0), id="0d-array"),
        pytest.param(np.array(4, dtype=np.int64), id="0d-int-array"),
        pytest.param(np.float64(4.0), id="numpy-scalar"),
        pytest.param(np.float32(4.0), id="numpy-float32-scalar"),
        pytest.param(4.0, id="python-float"),
        pytest.param(4, id="python-int"),
    ],
)
def test_zero_dimensional_input(x):
    with pytest.raises(ValueError, match=r"\bx\b.*dimension"):
        sg.fwht(x)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, object, np.float16, "U4", np.longdouble])
def test_unsupported_dtype(dtype):
    with pytest.raises(TypeError, match=r"\bx\b"):
        sg.fwht(np.ones((2, 8), dtype=dtype))


def test_complex_python_list():
    with pytest.raises(TypeError, match=r"\bx\b"):
        sg.fwht([1 + 1j, 2.0])


def test_out_wrong_shape():
    x = np.ones((2, 8))
    for shape in [(2, 4), (8,), (1, 2, 8), (16,)]:
        with pytest.raises(ValueError, match=r"\bout\b.*shape"):
            sg.fwht(x, out=np.empty(shape))


def test_out_wrong_dtype():
    with pytest.raises(TypeError, match=r"\bout\b.*float64"):
        sg.fwht(np.ones(8), out=np.empty(8, dtype=np.float32))
    with pytest.raises(TypeError, match=r"\bout\b.*float32"):
        sg.fwht(np.ones(8, dtype=np.float32), out=np.empty(8))
    # Integer input computes in float64, so out must be float64 too.
    with pytest.raises(TypeError, match=r"\bout\b"):
        sg.fwht(np.ones(8, dtype=np.int64), out=np.empty(8, dtype=np.int64))


def test_out_not_an_array():
    with pytest.raises(TypeError, match=r"\bout\b"):
        sg.fwht(np.ones(4), out=[0.0] * 4)


def test_out_non_contiguous():
    x = np.ones((4, 8))
    with pytest.raises(ValueError, match=r"\bout\b.*contiguous"):
        sg.fwht(x, out=np.empty((4, 16))[:, ::2])
    with pytest.raises(ValueError, match=r"\bout\b.*contiguous"):
        sg.fwht(x, out=np.asfortranarray(np.empty((4, 8))))
    # A reversed view of x is not C-contiguous either (and would alias x).
    y = np.arange(8.0)
    with pytest.raises(ValueError, match=r"\bout\b"):
        sg.fwht(y, out=y[::-1])
    assert np.array_equal(y, np.arange(8.0))


def test_out_read_only():
    out = np.empty(8)
    out.flags.writeable = False
    with pytest.raises(ValueError, match=r"\bout\b.*(writeable|read-only)"):
        sg.fwht(np.ones(8), out=out)
    x = np.ones(8)
    x.flags.writeable = False
    with pytest.raises(ValueError, match=r"\bout\b"):
        sg.fwht(x, out=x)
    assert np.array_equal(x, np.ones(8))


def test_failed_call_leaves_out_untouched():
    out = np.full(8, 7.0)
    with pytest.raises(ValueError):
        sg.fwht(np.ones(8), out=out, n_threads=0)
    assert np.array_equal(out, np.full(8, 7.0))


@pytest.mark.parametrize("n_threads", [0, -2, -100])
def test_n_threads_bad_value(n_threads):
    with pytest.raises(ValueError, match="n_threads"):
        sg.fwht(np.ones(8), n_threads=n_threads)


@pytest.mark.parametrize("n_threads", [1.5, 2.0, "2", True, [2]])
def test_n_threads_bad_type(n_threads):
    with pytest.raises(TypeError, match="n_threads"):
        sg.fwht(np.ones(8), n_threads=n_threads)


@pytest.mark.parametrize("normalize", [1, "yes", None, 0.0])
def test_normalize_must_be_bool(normalize):
    with pytest.raises(TypeError, match="normalize"):
        sg.fwht(np.ones(8), normalize=normalize)


def test_normalize_accepts_numpy_bool(rng):
    x = rng.standard_normal(16)
    assert np.array_equal(sg.fwht(x, normalize=np.bool_(True)), sg.fwht(x, normalize=True))


def test_keyword_only_arguments():
    with pytest.raises(TypeError):
        sg.fwht(np.ones(8), True)  # noqa: FBT003 - normalize is keyword-only
    with pytest.raises(TypeError):
        sg.fwht(np.ones(8), normalise=True)  # misspelt keyword
    with pytest.raises(TypeError):
        sg.fwht()


def test_x_as_keyword(rng):
    x = rng.standard_normal((2, 16))
    out = np.empty_like(x)
    assert sg.fwht(x=x, n_threads=1, out=out, normalize=True) is out
    assert np.array_equal(out, sg.fwht(x, normalize=True))
