"""Property-based fuzzing of the whole public API against NumPy references.

Every public function and class of API.md is called with arguments drawn by Hypothesis: arbitrary
shapes (including 0 and 1), dtypes (float16/32/64, byte-swapped floats, ints, bool, complex, object,
strings, long double, datetime), memory layouts (Fortran order, non-contiguous, negative strides,
read-only, unaligned, zero-stride broadcasts, Python lists), values (NaN, +-Inf, huge, float max,
subnormal), thread counts and seeds. The contract checked for every call:

* a call the API documents as valid returns a result that matches a NumPy reference (element-wise
  rounding bounds, computed independently of the library: scipy.linalg.hadamard for the transforms
  and sketches, the explicit Kronecker-row Jacobian for ReLUJacobian, numpy.linalg for the solves);
* anything else raises TypeError, ValueError or MemoryError -- never another exception, never a crash;
* the caller's arrays are never written to (unless passed as ``out``).

Where IEEE arithmetic decides (NaN/Inf through a transform, overflow of huge values), the check is
the invariant that holds for any summation order: a transform row with a non-finite input is wholly
non-finite; values that could overflow are not compared.

Thread counts are drawn from small values (up to 64) and invalid ones; the largest accepted count is
tested in a subprocess (test_limits.py), as it can kill the process.

Run with ``--hypothesis-show-statistics`` to see the number of examples per test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import sketchgn as sg
from conftest import log2n, ref_fwht

EXPECTED_ERRORS = (TypeError, ValueError, MemoryError)
F64 = np.finfo(np.float64)
F32 = np.finfo(np.float32)

FUZZ = settings(
    deadline=None,
    # (no "explain" phase: it re-runs a failing test hundreds of times for a few lines of report)
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# --------------------------------------------------------------------------------------------
# Argument strategies
# --------------------------------------------------------------------------------------------


def weighted(*pairs):
    """A strategy choosing among values or strategies with integer weights (shrinks to the first)."""
    items = [(w, v if isinstance(v, st.SearchStrategy) else st.just(v)) for w, v in pairs]
    total = sum(w for w, _ in items)

    def pick(i):
        for w, strategy in items:
            if i < w:
                return strategy
            i -= w
        raise AssertionError(i)

    return st.integers(0, total - 1).flatmap(pick)


def valid_or_not(valid, invalid, p_invalid=10):
    """Mostly valid values (so that most calls get past validation), sometimes an invalid one."""
    return weighted((100 - p_invalid, valid), (p_invalid, invalid))


# Weights: most arrays are valid float64, so that most calls reach the kernels; every other kind
# still comes up several times per test.
DTYPES = weighted(
    (30, "float64"), (10, "float32"), (3, ">f8"), (2, ">f4"), (4, "int64"), (2, "int32"), (2, "int8"),
    (2, "uint8"), (2, "uint64"), (3, "bool"), (2, "float16"), (2, "complex128"), (1, "complex64"),
    (2, "object"), (1, "U12"), (1, "longdouble"), (1, "datetime64[s]"),
)
VALUE_KINDS = weighted(
    (40, "normal"), (5, "zeros"), (8, "ints"), (5, "huge"), (3, "max"), (6, "subnormal"), (5, "mixed"),
    (4, "nan"), (4, "inf"),
)
LAYOUTS = weighted(
    (30, "C"), (8, "F"), (8, "strided"), (8, "reversed"), (8, "readonly"), (8, "unaligned"),
    (4, "unaligned_readonly"), (6, "broadcast"), (6, "list"),
)

VALID_THREADS = st.sampled_from([None, 1, 2, 3, -1, np.int64(2), 4, 7, 64])
INVALID_THREADS = st.sampled_from([0, -2, -100, 2**16 + 1, 2**70, 1.5, 2.0, True, np.bool_(True), "2", [2]])
THREADS = valid_or_not(VALID_THREADS, INVALID_THREADS)

VALID_SEEDS = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, np.uint64(2**64 - 1), np.int32(7)]),
                        st.integers(0, 2**32).map(np.random.default_rng))
INVALID_SEEDS = st.sampled_from([-1, 2**64, 2**70, 1.5, True, "0", None, np.float64(3.0), [1]])
SEEDS = valid_or_not(VALID_SEEDS, INVALID_SEEDS)


def is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def valid_threads(v):
    return v is None or (is_int(v) and (int(v) == -1 or 1 <= int(v) <= 2**16))


def valid_seed(v):
    return isinstance(v, np.random.Generator) or (is_int(v) and 0 <= int(v) < 2**64)


def is_real(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _low_precision(dtype):
    return dtype.kind in "fc" and dtype.itemsize <= (8 if dtype.kind == "c" else 4)


def _values(shape, kind, dtype, seed):
    rng = np.random.default_rng(seed)
    if dtype.kind in "iu":
        lo = 0 if dtype.kind == "u" else -50
        return rng.integers(lo, 50, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind == "M":
        return rng.integers(0, 10**9, size=shape).astype(dtype)
    low = _low_precision(dtype)
    huge, big, sub = (1e37, F32.max, 1e-40) if low else (1e300, F64.max, 1e-310)
    x = rng.standard_normal(shape)
    size = x.size
    flat = x.reshape(-1)
    if kind == "zeros":
        x[...] = 0.0
    elif kind == "ints":
        x = rng.integers(-3, 4, size=shape).astype(np.float64)
    elif kind == "nan" and size:
        flat[rng.integers(size)] = np.nan
    elif kind == "inf" and size:
        flat[rng.integers(size)] = rng.choice([np.inf, -np.inf])
    elif kind == "huge":
        x *= huge
    elif kind == "max" and size:
        flat[rng.integers(size)] = big * rng.choice([-1.0, 1.0])
    elif kind == "subnormal":
        x *= sub
    elif kind == "mixed" and size:
        x *= rng.choice(np.array([1.0, huge, sub, 0.0]), size=shape)
    with np.errstate(all="ignore"):
        if dtype.kind == "c":
            return (x + 1j * rng.standard_normal(shape)).astype(dtype)
        if dtype.kind in "OU":
            return x.astype(dtype)
        return x.astype(dtype)


def _layout(base, layout):
    if layout == "C" or base.ndim == 0:
        return base
    if layout == "F":
        return np.asfortranarray(base)
    if layout == "strided":
        return np.repeat(base, 2, axis=-1)[..., ::2]
    if layout == "reversed":
        flip = (slice(None, None, -1),) * base.ndim
        return base[flip].copy()[flip]
    if layout == "readonly":
        c = base.copy()
        c.flags.writeable = False
        return c
    if layout in ("unaligned", "unaligned_readonly"):
        if base.dtype.hasobject or base.dtype.itemsize == 1:
            return base
        buf = bytearray(base.nbytes + 1)
        v = np.frombuffer(buf, dtype=base.dtype, count=base.size, offset=1).reshape(base.shape)
        v[...] = base
        if layout == "unaligned_readonly":
            v = np.frombuffer(bytes(buf), dtype=base.dtype, count=base.size, offset=1).reshape(base.shape)
        return v
    if layout == "broadcast":
        return base if base.shape[0] == 0 else np.broadcast_to(base[:1], base.shape)
    if layout == "list":  # (an empty list cannot hold the shape (0, k): keep the array)
        return base.tolist() if base.size or base.ndim == 1 else base
    raise AssertionError(layout)


def draw_array(data, shape, label, *, dtypes=DTYPES, kinds=VALUE_KINDS, layouts=LAYOUTS):
    dtype = np.dtype(data.draw(dtypes, label=f"{label}.dtype"))
    kind = data.draw(kinds, label=f"{label}.values")
    layout = data.draw(layouts, label=f"{label}.layout")
    seed = data.draw(st.integers(0, 2**32 - 1), label=f"{label}.seed")
    return _layout(_values(shape, kind, dtype, seed), layout)


def supported(arr):
    """dtype accepted by the array functions: float32/float64 (any byte order), integers, bool."""
    dt = arr.dtype
    return (dt.kind == "f" and dt.itemsize in (4, 8)) or dt.kind in "biu"


def as_f64(arg):
    return np.array(arg, dtype=np.float64)


def snapshot(arg):
    """A private copy of an array argument, to check that the call did not write into it."""
    return np.array(arg, copy=True) if isinstance(arg, np.ndarray) else None


def assert_unchanged(arg, before, what):
    if before is not None:
        assert np.ascontiguousarray(arg).tobytes() == np.ascontiguousarray(before).tobytes(), (
            f"{what} was modified by the call"
        )


def call(fn, *args, **kwargs):
    """(True, result) or (False, exception) for TypeError/ValueError/MemoryError; anything else
    propagates and fails the test."""
    try:
        return True, fn(*args, **kwargs)
    except EXPECTED_ERRORS as exc:
        return False, exc


def expect(valid, ok, out, what):
    if valid:
        assert ok, f"{what}: valid input rejected with {type(out).__name__}: {out}"
    else:
        assert not ok, f"{what}: invalid input accepted (returned {type(out).__name__})"


def assert_close(got, ref, bound, what, intermediate=None):
    """|got - ref| <= bound element-wise where bound and ref are finite (elsewhere overflow decides),
    and where no intermediate result of any summation order can overflow (`intermediate`: the size
    of the largest one)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    with np.errstate(all="ignore"):
        checked = np.isfinite(bound) & np.isfinite(ref) & (np.asarray(bound) < 1e300)
        if intermediate is not None:
            checked &= np.asarray(intermediate) <= F64.max / 16
        bad = checked & ~(np.abs(got - ref) <= bound)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        pytest.fail(f"{what}: {int(bad.sum())} entries off; first at {i}: got {got[i]!r}, "
                    f"expected {ref[i]!r} +- {np.asarray(bound)[i]!r}")


def pow2(n):
    return n >= 1 and n & (n - 1) == 0


def next_pow2(n):
    return 1 << (n - 1).bit_length()


# --------------------------------------------------------------------------------------------
# sg.fwht
# --------------------------------------------------------------------------------------------

FWHT_LAST = valid_or_not(st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 2**13]),
                         st.one_of(st.sampled_from([0, 3, 6, 12, 2**13 - 1]), st.integers(0, 40)), 15)


def _check_fwht_rows(got, x64, dtype, normalize):
    n = x64.shape[-1]
    rows_x = x64.reshape(-1, n)
    rows_got = np.asarray(got, dtype=np.float64).reshape(-1, n)
    finfo = F32 if dtype == np.float32 else F64
    with np.errstate(all="ignore"):
        ref = ref_fwht(rows_x, normalize=normalize)
        finite_in = np.isfinite(rows_x).all(axis=1)
        # A row with a NaN or Inf input: every output combines every input with +-1, so every output
        # of the row is NaN or Inf, in any summation order.
        assert not np.isfinite(rows_got[~finite_in]).any(), "a row with a non-finite input gave a finite output"
        # Rows that cannot overflow: norm-wise error bound relative to the row (scaled, so that norms
        # of huge rows do not overflow), plus an absolute term for subnormal results.
        scale = np.abs(rows_x).max(axis=1, initial=0.0)
        safe = finite_in & (scale * n <= finfo.max / 4)
        s = np.where(scale > 0, scale, 1.0)[:, None]
        err = np.linalg.norm((rows_got - ref) / s, axis=1)
        size = np.linalg.norm(ref / s, axis=1)
        tol = 8 * finfo.eps * log2n(n) * size + 4 * n * finfo.smallest_subnormal / s[:, 0]
    bad = safe & ~(err <= tol)
    assert not bad.any(), (f"{int(bad.sum())} rows off the reference; first row {int(np.argmax(bad))}: "
                           f"relative error {err[bad][0] / max(size[bad][0], 1e-300):.3g}")


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_fuzz_fwht(data):
    lead = data.draw(st.lists(st.integers(0, 3), max_size=2), label="leading axes")
    ndim0 = data.draw(weighted((95, False), (5, True)), label="0-d")
    n = data.draw(FWHT_LAST, label="n")
    shape = () if ndim0 else (*lead, n)
    x = draw_array(data, shape, "x")
    normalize = data.draw(valid_or_not(st.sampled_from([False, True, np.bool_(True), np.bool_(False)]),
                                       st.sampled_from([0, 1, None, "yes", 1.0])), label="normalize")
    n_threads = data.draw(THREADS, label="n_threads")
    out_kind = data.draw(weighted((50, "none"), (12, "fresh"), (12, "self"), (5, "unaligned"), (3, "wrong_dtype"),
                                  (3, "wrong_shape"), (3, "strided"), (3, "readonly"), (2, "list")), label="out")

    arr = np.asarray(x)
    res_dtype = np.dtype(np.float32) if arr.dtype.kind == "f" and arr.dtype.itemsize == 4 else np.dtype(np.float64)
    out = None
    if out_kind == "fresh":
        out = np.full(arr.shape, np.nan, res_dtype)
    elif out_kind == "self":
        out = x
    elif out_kind == "wrong_dtype":
        out = np.empty(arr.shape, np.float32 if res_dtype == np.float64 else np.float64)
    elif out_kind == "wrong_shape":
        out = np.empty(arr.shape + (2,), res_dtype)
    elif out_kind == "strided":
        out = np.empty(arr.shape + (2,), res_dtype)[..., 0]
    elif out_kind == "readonly":
        out = np.empty(arr.shape, res_dtype)
        out.flags.writeable = False
    elif out_kind == "unaligned":
        out = np.frombuffer(bytearray(arr.size * res_dtype.itemsize + 1), dtype=res_dtype, count=arr.size,
                            offset=1).reshape(arr.shape)
    elif out_kind == "list":
        out = np.zeros(arr.shape).tolist()

    valid_out = out is None or (
        isinstance(out, np.ndarray) and out.dtype == res_dtype and out.shape == arr.shape
        and out.flags.c_contiguous and out.flags.writeable
    )
    valid = (
        arr.ndim >= 1 and supported(arr) and pow2(arr.shape[-1]) and valid_threads(n_threads)
        and isinstance(normalize, (bool, np.bool_)) and valid_out
    )
    before = snapshot(x)
    x64 = as_f64(x) if supported(arr) else None
    kwargs = {} if out is None else {"out": out}
    ok, y = call(sg.fwht, x, normalize=normalize, n_threads=n_threads, **kwargs)
    if valid and not ok and isinstance(out, np.ndarray) and not out.flags.aligned:
        # an unaligned out may be refused, if the message says why
        assert isinstance(y, ValueError) and "align" in str(y), y
        return
    expect(valid, ok, y, "fwht")
    if out is not x:
        assert_unchanged(x, before, "x")
    if not ok:
        return
    if out is not None:
        assert y is out
    assert isinstance(y, np.ndarray) and y.dtype == res_dtype and y.shape == arr.shape
    if y.size:
        _check_fwht_rows(y, x64, res_dtype, bool(normalize))
    # Bitwise the same for any thread count (on finite data: NaN payloads may differ).
    if y.size and np.isfinite(x64).all() and n_threads not in (None, 1):
        again = sg.fwht(np.array(x64, dtype=res_dtype), normalize=bool(normalize), n_threads=1)
        assert np.array_equal(again, y) or not np.isfinite(again).all()


# --------------------------------------------------------------------------------------------
# sg.SRHT
# --------------------------------------------------------------------------------------------

SMALL_N_IN = st.one_of(st.integers(1, 40), st.sampled_from([63, 64, 65, 100, 255, 256, 300]))
BAD_COUNTS = st.sampled_from([0, -1, -2**63, 2**40 + 1, 2**64, 1.0, 4.5, True, np.bool_(False), "4", None])


def srht_reference(S):
    """sqrt(n_pad / n_out) H_orth[rows] diag(signs) = H[rows, :n_in] * signs / sqrt(n_out)."""
    H = scipy.linalg.hadamard(S.n_pad).astype(np.float64)
    return H[np.asarray(S.rows)][:, : S.n_in] * np.asarray(S.signs)[None, :] / math.sqrt(S.n_out)


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_fuzz_srht(data):
    n_in = data.draw(valid_or_not(st.one_of(SMALL_N_IN, SMALL_N_IN.map(np.int64)), BAD_COUNTS), label="n_in")
    n_pad = next_pow2(int(n_in)) if is_int(n_in) and n_in >= 1 else 1
    n_out = data.draw(valid_or_not(st.one_of(st.integers(1, n_pad), st.just(n_pad)),
                                   st.one_of(st.just(n_pad + 1), BAD_COUNTS)), label="n_out")
    seed = data.draw(SEEDS, label="seed")
    valid = (is_int(n_in) and 1 <= n_in <= 2**40 and is_int(n_out) and 1 <= n_out <= n_pad and valid_seed(seed))
    ok, S = call(sg.SRHT, n_in, n_out, seed=seed)
    expect(valid, ok, S, "SRHT()")
    if not ok:
        return
    assert S.shape == (n_out, n_in) and S.n_pad == n_pad
    rows = np.asarray(S.rows)
    assert rows.shape == (n_out,) and np.all(np.diff(rows) > 0) and rows[0] >= 0 and rows[-1] < n_pad
    assert set(np.unique(S.signs)) <= {-1.0, 1.0}
    ref = srht_reference(S)

    kind = data.draw(weighted((40, "vector"), (40, "matrix"), (8, "empty"), (4, "wrong_rows"), (4, "3d"), (4, "0d")),
                     label="A shape")
    k = data.draw(st.integers(1, 5), label="k")
    shape = {"vector": (n_in,), "matrix": (n_in, k), "empty": (n_in, 0), "wrong_rows": (n_in + 1, k),
             "3d": (n_in, k, 1), "0d": ()}[kind]
    A = draw_array(data, shape, "A")
    n_threads = data.draw(THREADS, label="n_threads")
    arr = np.asarray(A)
    valid = supported(arr) and arr.ndim in (1, 2) and arr.shape[0] == n_in and valid_threads(n_threads)
    before = snapshot(A)
    ok, out = call(S.apply, A, n_threads=n_threads)
    expect(valid, ok, out, "SRHT.apply")
    assert_unchanged(A, before, "A")
    if not ok:
        return
    res_dtype = np.float32 if arr.dtype.kind == "f" and arr.dtype.itemsize == 4 else np.float64
    assert out.dtype == res_dtype and out.shape == (n_out,) + arr.shape[1:]
    A64 = as_f64(A).reshape(n_in, -1)
    got = np.asarray(out, dtype=np.float64).reshape(n_out, -1)
    eps = (F32 if res_dtype == np.float32 else F64).eps
    with np.errstate(all="ignore"):
        bad_cols = ~np.isfinite(A64).all(axis=0)
        assert not np.isfinite(got[:, bad_cols]).any(), "a column with NaN/Inf gave a finite sketch entry"
        lim = (F32 if res_dtype == np.float32 else F64).max / (4 * n_pad)
        cols = ~bad_cols & (np.abs(A64).max(axis=0, initial=0) <= lim)
        bound = 8 * eps * (log2n(n_pad) + 2) * (np.abs(ref) @ np.abs(A64)) + 4 * n_pad * (
            F32 if res_dtype == np.float32 else F64).smallest_subnormal
    assert_close(got[:, cols], (ref @ np.where(np.isfinite(A64), A64, 0))[:, cols], bound[:, cols], "SRHT.apply")
    if arr.ndim in (1, 2) and valid_threads(n_threads):
        same = S @ A
        assert np.array_equal(same, out, equal_nan=True), "S @ A differs from S.apply(A)"


# --------------------------------------------------------------------------------------------
# sg.KroneckerSRHT
# --------------------------------------------------------------------------------------------

SMALL_FACTOR = st.one_of(st.integers(1, 9), st.sampled_from([16, 17, 32]))


def kron_reference(S):
    """Row j: sqrt(m_pad d_pad / n_out) (H_orth D1)[p_j] (x) (H_orth D2)[q_j] = Hm[p_j] s1 (x) Hd[q_j] s2 / sqrt(n_out)."""
    m, d = S.m, S.d
    p, q = (np.asarray(c) for c in S.cells)
    s1, s2 = (np.asarray(s) for s in S.signs)
    Hm = scipy.linalg.hadamard(next_pow2(m)).astype(np.float64)[:, :m] * s1
    Hd = scipy.linalg.hadamard(next_pow2(d)).astype(np.float64)[:, :d] * s2
    return Hm[p], Hd[q]


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_fuzz_kronecker_srht(data):
    m = data.draw(valid_or_not(SMALL_FACTOR, BAD_COUNTS), label="m")
    d = data.draw(valid_or_not(st.one_of(SMALL_FACTOR, SMALL_FACTOR.map(np.int32)), BAD_COUNTS), label="d")
    cells = next_pow2(int(m)) * next_pow2(int(d)) if is_int(m) and is_int(d) and m >= 1 and d >= 1 else 1
    n_out = data.draw(valid_or_not(st.one_of(st.integers(1, cells), st.just(cells)),
                                   st.one_of(st.just(cells + 1), BAD_COUNTS)), label="n_out")
    seed = data.draw(SEEDS, label="seed")
    valid = (is_int(m) and 1 <= m <= 2**40 and is_int(d) and 1 <= d <= 2**40 and is_int(n_out)
             and 1 <= n_out <= cells and valid_seed(seed))
    ok, S = call(sg.KroneckerSRHT, m, d, n_out, seed=seed)
    expect(valid, ok, S, "KroneckerSRHT()")
    if not ok:
        return
    m, d = int(m), int(d)
    assert S.shape == (n_out, m * d)
    p, q = (np.asarray(c) for c in S.cells)
    assert len(set(zip(p.tolist(), q.tolist()))) == n_out, "the sampled cells are not distinct"
    Pu, Px = kron_reference(S)
    scale = 1.0 / math.sqrt(n_out)

    # apply_kron(U, X)
    k = data.draw(st.integers(0, 4), label="k")
    bad_shape = data.draw(valid_or_not(st.none(), st.sampled_from(["U cols", "X cols", "rows", "1d"])),
                          label="bad shape")
    U_shape = {"U cols": (k, m + 1), "1d": (m,)}.get(bad_shape, (k, m))
    X_shape = {"X cols": (k, d + 1), "rows": (k + 1, d)}.get(bad_shape, (k, d))
    U = draw_array(data, U_shape, "U")
    X = draw_array(data, X_shape, "X")
    n_threads = data.draw(THREADS, label="n_threads")
    Ua, Xa = np.asarray(U), np.asarray(X)
    valid = (supported(Ua) and supported(Xa) and bad_shape is None and valid_threads(n_threads))
    before_U, before_X = snapshot(U), snapshot(X)
    ok, out = call(S.apply_kron, U, X, n_threads=n_threads)
    expect(valid, ok, out, "KroneckerSRHT.apply_kron")
    assert_unchanged(U, before_U, "U")
    assert_unchanged(X, before_X, "X")
    if ok:
        assert out.shape == (n_out, k) and out.dtype == np.float64
        U64, X64 = as_f64(U), as_f64(X)
        with np.errstate(all="ignore"):
            bad_cols = ~(np.isfinite(U64).all(axis=1) & np.isfinite(X64).all(axis=1))
            assert not np.isfinite(out[:, bad_cols]).any(), "a column with NaN/Inf gave a finite entry"
            U0, X0 = np.where(np.isfinite(U64), U64, 0), np.where(np.isfinite(X64), X64, 0)
            ref = (Pu @ U0.T) * (Px @ X0.T) * scale
            size_u, size_x = np.abs(Pu) @ np.abs(U0).T, np.abs(Px) @ np.abs(X0).T
            # relative rounding of the two transforms and the product, plus the absolute rounding of a
            # subnormal factor or partial product, magnified by the other factor
            bound = size_u * size_x * scale * 8 * F64.eps * (log2n(next_pow2(m)) + log2n(next_pow2(d)) + 2) + (
                4 * F64.smallest_subnormal * (size_u + size_x + 1))
        assert_close(out[:, ~bad_cols], ref[:, ~bad_cols], bound[:, ~bad_cols], "apply_kron")

    # apply(A): ordinary columns of length m*d
    a_kind = data.draw(weighted((45, "vector"), (45, "matrix"), (10, "wrong")), label="A shape")
    A_shape = {"vector": (m * d,), "matrix": (m * d, k), "wrong": (m * d + 1,)}[a_kind]
    A = draw_array(data, A_shape, "A")
    Aa = np.asarray(A)
    valid = supported(Aa) and a_kind != "wrong" and valid_threads(n_threads)
    before = snapshot(A)
    ok, out = call(S.apply, A, n_threads=n_threads)
    expect(valid, ok, out, "KroneckerSRHT.apply")
    assert_unchanged(A, before, "A")
    if ok:
        dense = np.einsum("jr,jc->jrc", Pu, Px).reshape(n_out, m * d) * scale
        A64 = as_f64(A).reshape(m * d, -1)
        got = out.reshape(n_out, -1)
        with np.errstate(all="ignore"):
            bad_cols = ~np.isfinite(A64).all(axis=0)
            assert not np.isfinite(got[:, bad_cols]).any(), "a column with NaN/Inf gave a finite entry"
            A0 = np.where(np.isfinite(A64), A64, 0)
            bound = (np.abs(dense) @ np.abs(A0)) * 8 * F64.eps * (log2n(cells) + 2) + (
                4 * (cells + 1) * F64.smallest_subnormal)
        assert_close(got[:, ~bad_cols], (dense @ A0)[:, ~bad_cols], bound[:, ~bad_cols], "KroneckerSRHT.apply")


# --------------------------------------------------------------------------------------------
# sg.ReLUJacobian
# --------------------------------------------------------------------------------------------

THRESHOLDS = valid_or_not(
    st.one_of(st.sampled_from([0.0, 0.5, -0.5, 1, np.float32(0.25), np.int64(0), 1e300, 5e-324, -1e-300]),
              st.floats(-3, 3, allow_nan=False)),
    st.sampled_from([np.nan, np.inf, -np.inf, True, "0", None, 1 + 0j, [0.0]]),
)


def valid_matrix(arr, ndim):
    with np.errstate(all="ignore"):
        return supported(arr) and arr.ndim == ndim and bool(np.isfinite(arr.astype(np.float64)).all())


def dense_jacobian(X, a, D):
    """Row i: (1/sqrt(m)) kron(a * D[i], x_i), index r*d + j.

    a_r x_ij is formed before the division by sqrt(m): a subnormal a_r divided first would be rounded
    in the subnormal range (found: a_r ~ 1e-311 with x ~ 1e299 gave a reference off by 2e-13 relative,
    while the library, which applies 1/sqrt(m) last, was exact)."""
    n, d = X.shape
    m = a.shape[0]
    with np.errstate(all="ignore"):
        coef = np.where(D, a[None, :], 0.0)  # (n, m)
        return (coef[:, :, None] * X[:, None, :]).reshape(n, m * d) / math.sqrt(m)


def jacobian_problem(data, *, fuzz=True):
    """(kwargs for sg.ReLUJacobian, valid)"""
    n = data.draw(weighted((85, st.integers(1, 6)), (10, st.sampled_from([17, 40])), (5, 0)), label="n")
    d = data.draw(weighted((85, st.integers(1, 4)), (10, 9), (5, 0)), label="d")
    m = data.draw(weighted((85, st.integers(1, 8)), (10, st.sampled_from([65, 130])), (5, 0)), label="m")
    bad = data.draw(valid_or_not(st.none(), st.sampled_from(["W cols", "a len", "X 1d", "X 3d"])), label="bad shape")
    X = draw_array(data, {"X 1d": (n,), "X 3d": (n, d, 1)}.get(bad, (n, d)), "X")
    W = draw_array(data, (m, d + 1) if bad == "W cols" else (m, d), "W")
    a = draw_array(data, (m + 1,) if bad == "a len" else (m,), "a")
    threshold = data.draw(THRESHOLDS, label="threshold")
    n_threads = data.draw(THREADS, label="n_threads")
    path = data.draw(weighted((40, "auto"), (25, "dense"), (25, "sparse"), (5, "bogus")), label="path")
    valid = (
        bad is None and valid_matrix(np.asarray(X), 2) and valid_matrix(np.asarray(W), 2)
        and valid_matrix(np.asarray(a), 1) and n >= 1 and d >= 1 and m >= 1 and is_real(threshold)
        and math.isfinite(float(threshold)) and valid_threads(n_threads) and path != "bogus"
    )
    return dict(X=X, W=W, a=a, threshold=threshold, n_threads=n_threads, path=path), valid


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_fuzz_relu_jacobian(data):
    kw, valid = jacobian_problem(data)
    befores = {k: snapshot(kw[k]) for k in ("X", "W", "a")}
    ok, J = call(sg.ReLUJacobian, **kw)
    expect(valid, ok, J, "ReLUJacobian()")
    for k in ("X", "W", "a"):
        assert_unchanged(kw[k], befores[k], k)
    if not ok:
        return
    X, W, a = as_f64(kw["X"]), as_f64(kw["W"]), as_f64(kw["a"])
    b = float(kw["threshold"])
    n, d = X.shape
    m = W.shape[0]
    assert J.shape == (n, m * d) and (J.n, J.m, J.d) == (n, m, d)

    # The pattern, away from ties (the library's and NumPy's summation orders may differ there).
    D = J.pattern()
    assert D.shape == (n, m) and D.dtype == bool
    with np.errstate(all="ignore"):
        pre = X @ W.T
        size = np.abs(X) @ np.abs(W).T
        tie = ~np.isfinite(size) | ~np.isfinite(pre) | (size > 1e300) | (
            np.abs(pre - b) <= 1e-12 * (size + abs(b)) + 8 * d * F64.smallest_subnormal)
    wrong = (D != (pre > b)) & ~tie
    assert not wrong.any(), f"activation pattern differs from X @ W.T > threshold at {np.argwhere(wrong)[0]}"
    assert J.nnz == int(D.sum()) and J.density == pytest.approx(D.mean(), abs=1e-15)
    Jd = dense_jacobian(X, a, D)
    absJ = np.abs(Jd)
    # max(|x_ij|, 1) max(|a_r|, 1) on active pairs: bounds every partial product and sum of J v, J^T u
    # and J J^T in any order (a kernel may multiply a_r into v before x, apply the 1/sqrt(m) last...).
    # Inactive pairs stay 0: they must contribute exactly nothing, however large their factors.
    Jbig = dense_jacobian(np.maximum(np.abs(X), 1.0), np.maximum(np.abs(a), 1.0) * math.sqrt(m), D)
    # the pattern as 0/1 entries: an entry of J (here or in the library) that is subnormal carries an
    # absolute error of about the smallest subnormal, which a product multiplies by |v|
    Jone = dense_jacobian(np.ones_like(X), np.full(m, math.sqrt(m)), D)
    rtol = 8 * F64.eps * (m * d + m + 8)
    tiny = 8 * (m * d + 8) * F64.smallest_subnormal

    def tiny_for(ones_times_v):
        with np.errstate(all="ignore"):
            return tiny * (1.0 + ones_times_v)

    # forward: (1/sqrt m) sum_r a_r D_ir (w_r.x_i - b)
    with np.errstate(all="ignore"):
        f_ref = np.where(D, pre - b, 0.0) @ a / math.sqrt(m)
        f_scale = np.where(D, size + abs(b), 0.0) @ np.abs(a) / math.sqrt(m)
        f_big = np.where(D, size + abs(b), 0.0) @ np.maximum(np.abs(a), 1.0)
    f = J.forward()
    assert f.shape == (n,) and f.dtype == np.float64
    assert_close(f, f_ref, rtol * f_scale + tiny_for(D @ np.maximum(np.abs(a), 1.0)), "forward", f_big)

    which = data.draw(st.sampled_from(["matvec", "rmatvec", "matmat", "rmatmat", "gram", "linop"]), label="product")
    k = data.draw(st.integers(0, 3), label="k")
    n_threads = data.draw(THREADS, label="product n_threads")
    if which == "gram":
        ok, G = call(J.gram, n_threads=n_threads)
        expect(valid_threads(n_threads), ok, G, "gram")
        if ok:
            assert G.shape == (n, n)
            with np.errstate(all="ignore"):
                assert_close(G, Jd @ Jd.T, rtol * (absJ @ absJ.T) + tiny_for(Jone @ absJ.T + absJ @ Jone.T), "gram",
                             Jbig @ Jbig.T)
            assert np.array_equal(G, G.T, equal_nan=True) or not np.isfinite(G).all()
        return
    if which == "linop":
        L = J.aslinearoperator()
        v = np.random.default_rng(k).standard_normal(m * d)
        u = np.random.default_rng(k + 1).standard_normal(n)
        with np.errstate(all="ignore"):
            assert_close(L.matvec(v), Jd @ v, rtol * (absJ @ np.abs(v)) + tiny_for(Jone @ np.abs(v)),
                         "LinearOperator.matvec", Jbig @ np.abs(v))
            assert_close(L.rmatvec(u), Jd.T @ u, rtol * (absJ.T @ np.abs(u)) + tiny_for(Jone.T @ np.abs(u)),
                         "LinearOperator.rmatvec", Jbig.T @ np.abs(u))
        return
    shape_kind = data.draw(weighted((45, "natural"), (45, "flat"), (10, "wrong")), label="direction shape")
    if which == "matvec":
        shape = {"natural": (m, d), "flat": (m * d,), "wrong": (m, d + 1)}[shape_kind]
    elif which == "matmat":
        shape = {"natural": (m, d, k), "flat": (m * d, k), "wrong": (m * d,)}[shape_kind]
    elif which == "rmatvec":
        shape = {"natural": (n,), "flat": (n,), "wrong": (n + 1,)}[shape_kind]
    else:
        shape = {"natural": (n, k), "flat": (n, k), "wrong": (n,)}[shape_kind]
    V = draw_array(data, shape, "V")
    Va = np.asarray(V)
    with np.errstate(all="ignore"):
        finite = supported(Va) and bool(np.isfinite(Va.astype(np.float64)).all())
    valid = finite and shape_kind != "wrong" and valid_threads(n_threads)
    before = snapshot(V)
    ok, out = call(getattr(J, which), V, n_threads=n_threads)
    expect(valid, ok, out, which)
    assert_unchanged(V, before, "the direction")
    if not ok:
        return
    V64 = as_f64(V)
    with np.errstate(all="ignore"):
        if which in ("matvec", "matmat"):
            Vs = V64.reshape(m * d, -1)
            ref, bound, big, ones = Jd @ Vs, absJ @ np.abs(Vs), Jbig @ np.abs(Vs), Jone @ np.abs(Vs)
            want = (n,) if which == "matvec" else (n, k)
        else:
            Us = V64.reshape(n, -1)
            ref, bound, big, ones = Jd.T @ Us, absJ.T @ np.abs(Us), Jbig.T @ np.abs(Us), Jone.T @ np.abs(Us)
            want = (m, d) if which == "rmatvec" else (m, d, k)
    assert out.shape == want and out.dtype == np.float64
    # (tiny_for(big): a product of a subnormal factor -- a_r, x_ij or a_r / sqrt(m) -- with the others is
    # rounded in the subnormal range, in whichever order the library or the reference forms it)
    assert_close(out, ref.reshape(want), (rtol * bound + tiny_for(ones) + tiny_for(big)).reshape(want), which,
                 big.reshape(want))


# --------------------------------------------------------------------------------------------
# Problems for the solver: small valid Jacobians (their inputs are fuzzed above)
# --------------------------------------------------------------------------------------------


def small_jacobian(data):
    n = data.draw(st.integers(1, 12), label="n")
    m = data.draw(st.sampled_from([1, 2, 3, 8, 16, 33]), label="m")
    d = data.draw(st.integers(1, 4), label="d")
    seed = data.draw(st.integers(0, 2**16), label="problem seed")
    dup = data.draw(st.booleans(), label="duplicate samples")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    if dup and n >= 2:
        X[n // 2:] = X[: n - n // 2]
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    threshold = data.draw(st.sampled_from([0.0, 0.0, -0.5, 0.3]), label="problem threshold")
    J = sg.ReLUJacobian(X, W, a, threshold=threshold, n_threads=1)
    return J, dense_jacobian(X, a, J.pattern())


DAMPINGS = valid_or_not(st.sampled_from([0.0, 0.0, 1e-3, 1.0, 1e-300, 5e-324, 1e300, 1, np.float32(0.5), -0.0]),
                        st.sampled_from([-1.0, np.nan, np.inf, True, "1", None, 1j]))


def valid_damping(v):
    return is_real(v) and math.isfinite(float(v)) and float(v) >= 0


# --------------------------------------------------------------------------------------------
# sg.SketchPreconditioner
# --------------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_fuzz_sketch_preconditioner(data):
    J, Jd = small_jacobian(data)
    n = J.n
    sketch = data.draw(valid_or_not(st.sampled_from(["auto", "kronecker", "kronecker_rows", "srht", "gaussian"]),
                                    st.sampled_from(["bogus", None, 3])), label="sketch")
    sketch_size = data.draw(weighted((40, None), (30, st.sampled_from([n, 2 * n, 4 * n, 64 * max(n, 16), 1])),
                                     (20, st.integers(-2, 300)), (10, st.sampled_from([2.0, True, "8"]))),
                            label="sketch_size")
    damping = data.draw(DAMPINGS, label="damping")
    seed = data.draw(SEEDS, label="seed")
    n_threads = data.draw(THREADS, label="n_threads")
    precision = data.draw(valid_or_not(st.sampled_from(["double", "single"]), st.sampled_from(["mixed", None, 1])),
                          label="precision")
    pass_J = data.draw(weighted((90, "J"), (5, "array"), (5, "None")), label="J kind")
    arg = {"J": J, "array": Jd, "None": None}[pass_J]
    m_pad, d_pad = next_pow2(J.m), next_pow2(J.d)
    kind = sketch
    if sketch == "auto":  # documented: whole grid rows when the sketch has at least 128 of them
        s0 = sketch_size if is_int(sketch_size) else 4 * n
        kind = "kronecker_rows" if s0 // d_pad >= 128 else "kronecker"
    limit = {"kronecker": m_pad * d_pad, "kronecker_rows": m_pad * d_pad,
             "srht": next_pow2(J.m * J.d)}.get(kind, 2**62)
    limit = min(limit, 64 * max(n, 16))
    if kind == "kronecker_rows":  # (whole rows: sizes are multiples of d_pad)
        limit = max(limit // d_pad * d_pad, d_pad)
    clearly_valid_size = sketch_size is None or (is_int(sketch_size) and n <= sketch_size <= limit)
    clearly_invalid_size = sketch_size is not None and (not is_int(sketch_size) or sketch_size < 1
                                                         or sketch_size > limit)
    base_valid = (pass_J == "J" and sketch in ("auto", "kronecker", "kronecker_rows", "srht", "gaussian") and valid_damping(damping)
                  and valid_seed(seed) and valid_threads(n_threads) and precision in ("double", "single"))
    # (when the sketch grid is smaller than n, the default size is the whole grid: accepted; an explicit
    # size below n there is refused or accepted -- both are documented readings)
    ok, P = call(sg.SketchPreconditioner, arg, sketch=sketch, sketch_size=sketch_size, damping=damping,
                 seed=seed, n_threads=n_threads, precision=precision)
    if not base_valid or clearly_invalid_size:
        expect(False, ok, P, "SketchPreconditioner()")
        return
    if clearly_valid_size and (sketch_size is not None or limit >= n or True):
        expect(True, ok, P, "SketchPreconditioner()")
    if not ok:
        assert "sketch_size" in str(P), P
        return
    R = np.asarray(P.R)
    # float32 only when asked for and kept (well conditioned, in range); then R^T R is the sketch's Gram to
    # float32 accuracy (tests/test_mixed_precision.py), and its solves are float64 solves with that R
    assert P.precision_ in (("double", "single") if precision == "single" else ("double",)), P.precision_
    assert R.dtype == (np.float32 if P.precision_ == "single" else np.float64), R.dtype
    if P.precision_ == "single":
        pivots = np.abs(np.diagonal(R)).astype(np.float64)
        assert pivots.max() <= 100 * pivots.min(), "a float32 R kept beyond the documented pivot ratio"
        R = R.astype(np.float64)
    assert R.shape == (n, n) and np.isfinite(R).all(), "R is not a finite (n, n) matrix"
    assert np.array_equal(R, np.triu(R)), "R is not upper triangular"
    assert np.all(np.diagonal(R) != 0), "R is singular"
    assert P.sketch_size >= 1

    z = draw_array(data, data.draw(weighted((90, (n,)), (5, (n + 1,)), (5, (n, 1))), label="z shape"), "z")
    za = np.asarray(z)
    with np.errstate(all="ignore"):
        zvalid = supported(za) and za.shape == (n,) and bool(np.isfinite(za.astype(np.float64)).all())
    nt2 = data.draw(THREADS, label="solve n_threads")
    for name, transpose in (("solve", False), ("solve_transpose", True)):
        ok, y = call(getattr(P, name), z, n_threads=nt2)
        expect(zvalid and valid_threads(nt2), ok, y, f"SketchPreconditioner.{name}")
        if ok:
            z64 = as_f64(z)
            with np.errstate(all="ignore"):
                ref = scipy.linalg.solve_triangular(R, z64, trans=1 if transpose else 0, lower=False)
                Rt = R.T if transpose else R
                # backward-stable triangular solve: |R y - z| <= c n eps |R| |y|, plus |R| times the
                # absolute error of entries of y that underflow
                resid = np.abs(Rt @ y - z64)
                bound = 8 * n * F64.eps * (np.abs(Rt) @ np.abs(y)) + 8 * F64.smallest_subnormal * (
                    np.abs(Rt).sum(axis=1) + 1)
            assert y.shape == (n,) and y.dtype == np.float64
            if np.isfinite(ref).all() and np.abs(ref).max(initial=0) < 1e300:
                assert np.all(resid <= bound), f"{name}: R y != z beyond rounding"

    # refresh with another Jacobian of the same shape, and with one of another shape
    other = sg.ReLUJacobian(np.ones((n + 1, J.d)), np.ones((J.m, J.d)), np.ones(J.m))
    ok, err = call(P.refresh, other)
    assert not ok and isinstance(err, ValueError)
    ok, same = call(P.refresh, J)
    assert ok and same is P and np.array_equal(P.R, R), "refresh with the same J and seed changed R"


# --------------------------------------------------------------------------------------------
# sg.solve_gn
# --------------------------------------------------------------------------------------------

TOLS = valid_or_not(st.sampled_from([1e-6, 1e-6, 1e-10, 1e-2, 0.5, 1e-300, 1e300, np.float32(1e-3)]),
                    st.sampled_from([0.0, -1e-6, np.nan, np.inf, True, "1e-6", None]))
MAXITERS = valid_or_not(weighted((60, None), (40, st.sampled_from([0, 1, 3, 1000, np.int64(50)]))),
                        st.sampled_from([-1, 2.5, True, "10"]))


def _scaled_norm(v):
    """||v|| without overflow or underflow in the squares (inf if v is not finite)."""
    s = np.abs(v).max(initial=0.0)
    if not np.isfinite(s):
        return np.inf
    with np.errstate(over="ignore"):
        return 0.0 if s == 0 else s * float(np.linalg.norm(v / s))


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_fuzz_solve_gn(data):
    J, Jd = small_jacobian(data)
    n = J.n
    method = data.draw(valid_or_not(st.sampled_from(["sketch", "cg", "exact"]), st.sampled_from(["bogus", None]), 5),
                       label="method")
    r = draw_array(data, data.draw(weighted((90, (n,)), (5, (n + 1,)), (5, (n, 1))), label="r shape"), "r")
    damping = data.draw(DAMPINGS, label="damping")
    tol = data.draw(TOLS, label="tol")
    maxiter = data.draw(MAXITERS, label="maxiter")
    x0_kind = data.draw(weighted((60, "none"), (35, "array"), (5, "wrong")), label="x0")
    x0 = None if x0_kind == "none" else draw_array(data, (n,) if x0_kind == "array" else (n + 1,), "x0")
    pre_kind = data.draw(weighted((60, "none"), (30, "same"), (5, "other shape"), (5, "junk")), label="preconditioner")
    n_threads = data.draw(THREADS, label="n_threads")
    seed = data.draw(VALID_SEEDS, label="seed")
    sketch = data.draw(st.sampled_from(["auto", "kronecker", "kronecker_rows", "srht", "gaussian"]), label="sketch")
    precision = data.draw(valid_or_not(st.sampled_from(["auto", "double", "mixed"]),
                                       st.sampled_from(["single", None, 32]), 5), label="precision")
    P = None
    if pre_kind == "same":
        P = sg.SketchPreconditioner(J, sketch=sketch, seed=1, n_threads=1)
    elif pre_kind == "other shape":
        P = sg.SketchPreconditioner(sg.ReLUJacobian(np.ones((n + 1, J.d)), np.ones((J.m, J.d)), np.ones(J.m)))
    elif pre_kind == "junk":
        P = np.eye(n)

    def vector_ok(v):
        va = np.asarray(v)
        with np.errstate(all="ignore"):
            return supported(va) and va.shape == (n,) and bool(np.isfinite(va.astype(np.float64)).all())

    valid = (
        method in ("sketch", "cg", "exact") and vector_ok(r) and valid_damping(damping)
        and is_real(tol) and math.isfinite(float(tol)) and tol > 0
        and (maxiter is None or (is_int(maxiter) and maxiter >= 0))
        and (x0 is None or vector_ok(x0)) and valid_threads(n_threads)
        and (pre_kind == "none" or (pre_kind == "same" and method == "sketch"))
        and precision in ("auto", "double", "mixed")
    )
    before_r, before_x0 = snapshot(r), snapshot(x0)
    ok, res = call(sg.solve_gn, J, r, method=method, damping=damping, tol=tol, maxiter=maxiter,
                   preconditioner=P, x0=x0, seed=seed, n_threads=n_threads, sketch=sketch, precision=precision)
    expect(valid, ok, res, "solve_gn")
    assert_unchanged(r, before_r, "r")
    assert_unchanged(x0, before_x0, "x0")
    if not ok:
        return
    g = res.g
    assert isinstance(g, np.ndarray) and g.shape == (n,) and g.dtype == np.float64
    assert isinstance(res.iterations, int) and res.iterations >= 0
    assert isinstance(res.converged, bool)
    if method == "exact":
        assert res.iterations == 0 and res.preconditioner is None
    else:
        assert res.iterations <= (maxiter if maxiter is not None else 10 * n)
    if method == "sketch":
        assert isinstance(res.preconditioner, sg.SketchPreconditioner)
        if P is not None:
            assert res.preconditioner is P
    r64 = as_f64(r)
    lam = float(damping)
    G = Jd @ Jd.T + lam * np.eye(n)
    r_norm = _scaled_norm(r64)
    # ||g|| <= ||r|| / lambda_min(J J^T + damping I): beyond 1e290 the solution itself may overflow.
    with np.errstate(over="ignore"):
        g_exact_scale = r_norm / max(lam + np.linalg.eigvalsh(Jd @ Jd.T)[0], 1e-300) if r_norm else 0.0
    if g_exact_scale >= 1e290:
        return
    if x0 is not None and np.abs(G).max() * np.abs(as_f64(x0)).max(initial=0) * n >= 1e290:
        return  # an initial guess whose residual r - G x0 overflows: any outcome but an exception
    assert np.isfinite(g).all(), f"g is not finite: {g}"
    assert math.isfinite(res.residual), f"residual {res.residual} for finite data ({res.message!r})"
    if r_norm == 0:
        if x0 is None:
            assert np.all(g == 0), "r = 0 without x0 must give g = 0"
        return
    true_res = _scaled_norm(r64 - G @ g) / r_norm
    # rounding in forming r - G g: eps (|r| + |G| |g|) / |r|, and for subnormal r and g the spacing of
    # the subnormals (this reference computes r - G g at the scale of r; the library measures the same
    # g's residual scaled up by a power of two, without that underflow)
    noise = 64 * F64.eps * (1 + _scaled_norm(np.abs(G) @ np.abs(g)) / r_norm)
    noise += 8 * n * F64.smallest_subnormal * (1 + np.abs(G).sum(axis=1).max()) / r_norm
    assert abs(res.residual - true_res) <= 1e-3 * true_res + noise, (
        f"reported residual {res.residual!r}, true relative residual {true_res!r}")
    assert res.converged == (res.residual <= tol), (res.converged, res.residual, tol)
    # Well-conditioned systems with the default iteration limit and an attainable tol must converge.
    w = np.linalg.eigvalsh(G)
    cond = w[-1] / w[0] if w[0] > 0 else np.inf
    if maxiter is None and cond < 1e6 and tol >= 1e4 * F64.eps * cond and w[0] > 1e-200:
        assert res.converged, (f"{method}: did not converge on a system with cond {cond:.3g} to tol {tol} "
                               f"(residual {res.residual}, {res.iterations} iterations, {res.message!r})")


# --------------------------------------------------------------------------------------------
# sg.GaussNewtonRegressor
# --------------------------------------------------------------------------------------------

EST_DTYPES = weighted((50, "float64"), (8, "float32"), (6, "int64"), (4, "bool"), (4, "float16"), (4, ">f8"),
                      (4, "object"), (3, "complex128"), (2, "U12"))


def ref_predict(X, W, a, threshold):
    with np.errstate(all="ignore"):
        return np.maximum(X @ W.T - threshold, 0.0) @ a / math.sqrt(W.shape[0])


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_fuzz_estimator(data):
    n = data.draw(weighted((50, st.integers(1, 4)), (45, st.sampled_from([8, 20])), (5, 0)), label="n")
    d = data.draw(weighted((95, st.integers(1, 3)), (5, 0)), label="d")
    y_kind = data.draw(weighted((70, "1d"), (12, "2d"), (12, "column"), (6, "short")), label="y shape")
    X = draw_array(data, (n, d), "X", dtypes=EST_DTYPES)
    y = draw_array(data, {"1d": (n,), "2d": (n, 2), "column": (n, 1), "short": (n + 1,)}[y_kind], "y",
                   dtypes=EST_DTYPES)
    params = dict(
        width=data.draw(valid_or_not(st.sampled_from([1, 2, 16, 64]), st.sampled_from([0, -1, 2.5, True]), 5),
                        label="width"),
        solver=data.draw(valid_or_not(st.sampled_from(["auto", "sketch", "exact", "cg", "gd"]), "bogus", 5),
                         label="solver"),
        max_iter=data.draw(valid_or_not(st.sampled_from([0, 1, 2, 3]), -1, 5), label="max_iter"),
        damping=data.draw(valid_or_not(st.sampled_from(["auto", "auto", 0.0, 1e-3]),
                                       st.sampled_from([-1.0, np.nan, "x"]), 5), label="damping"),
        threshold=data.draw(valid_or_not(st.sampled_from([0.0, 0.3, -0.2]), st.sampled_from([np.nan, True]), 5),
                            label="threshold"),
        tol=data.draw(valid_or_not(st.sampled_from([1e-6, 1e-12]), st.sampled_from([0.0, -1.0]), 5), label="tol"),
        random_state=data.draw(valid_or_not(st.sampled_from([0, 1, "RandomState(3)"]), st.sampled_from([-1, "x"]), 5),
                               label="random_state"),
        n_threads=data.draw(THREADS, label="n_threads"),
        sketch=data.draw(st.sampled_from(["auto", "kronecker", "kronecker_rows", "srht", "gaussian"]), label="sketch"),
    )
    if params["random_state"] == "RandomState(3)":  # a fresh one per example (it has state)
        params["random_state"] = np.random.RandomState(3)
    est = sg.GaussNewtonRegressor(**params)

    def numeric_finite(v):
        va = np.asarray(v)
        if va.dtype.kind not in "biufOU":
            return False
        try:
            with np.errstate(all="ignore"):
                return bool(np.isfinite(va.astype(np.float64)).all())
        except (TypeError, ValueError):
            return False

    p = params
    valid = (
        n >= 1 and d >= 1 and y_kind != "short" and numeric_finite(X) and numeric_finite(y)
        and is_int(p["width"]) and p["width"] >= 1 and p["solver"] != "bogus" and p["max_iter"] >= 0
        and (p["damping"] == "auto" or valid_damping(p["damping"])) and is_real(p["threshold"])
        and math.isfinite(p["threshold"]) and p["tol"] > 0 and not (isinstance(p["random_state"], (int, str))
                                                                     and p["random_state"] in (-1, "x"))
        and valid_threads(p["n_threads"])
    )
    Xa = np.asarray(X)
    # Numbers as strings: scikit-learn's validate_data may convert them (dtype=float64) or refuse them.
    either = valid and (Xa.dtype.kind == "U" or np.asarray(y).dtype.kind == "U")
    with np.errstate(all="ignore"):
        huge = valid and (np.abs(Xa.astype(np.float64)).max(initial=0) > 1e150
                          or np.abs(np.asarray(y).astype(np.float64)).max(initial=0) > 1e150)
    before_X, before_y = snapshot(X), snapshot(y)
    ok, fitted = call(est.fit, X, y)
    assert_unchanged(X, before_X, "X")
    assert_unchanged(y, before_y, "y")
    if (huge or either) and not ok:
        return  # overflowing data, or numbers as strings: a ValueError is an acceptable answer
    expect(valid, ok, fitted, "fit")
    if not ok:
        return
    assert fitted is est
    X64, Y64 = as_f64(X), as_f64(y)
    single = Y64.ndim == 1
    thr = float(p["threshold"])
    pred = est.predict(X)
    if single:
        ref = ref_predict(X64, est.W_, est.a_, thr)
        assert est.W_.shape == (p["width"], d) and est.a_.shape == (p["width"],)
    else:  # one hidden layer shared by the outputs, one row of signs a_ per output
        assert est.W_.shape == (p["width"], d) and est.a_.shape == (Y64.shape[1], p["width"])
        ref = np.stack([ref_predict(X64, est.W_, a, thr) for a in est.a_], axis=1)
    assert pred.shape == ref.shape
    with np.errstate(all="ignore"):
        scale = (np.abs(X64) @ np.abs(est.W_).T + abs(thr)).max(axis=1, initial=0) * math.sqrt(p["width"])
    bound = np.broadcast_to((64 * F64.eps * (d + p["width"]) * scale + 1e-300).reshape(-1, *([1] * (ref.ndim - 1))),
                            ref.shape)
    assert_close(pred, ref, bound, "predict")
    if huge:
        return
    assert 0 <= est.n_iter_ <= p["max_iter"]
    assert est.solver_ in ("sketch", "exact", "cg", "gd")
    curve = est.loss_curve_
    assert all(np.isfinite(curve)), curve
    assert len(curve) == est.n_iter_ + 1 and len(est.history_) == est.n_iter_
    loss = 0.5 * float(np.sum((pred - Y64) ** 2))
    assert curve[-1] == pytest.approx(loss, rel=1e-9, abs=1e-12), "loss_curve_[-1] is not the loss of predict"
    assert all(b <= a for a, b in zip(curve, curve[1:])), f"loss increased: {curve}"
    # predict validates its input
    ok, err = call(est.predict, np.ones((2, d + 1)))
    assert not ok and isinstance(err, ValueError)
    nan_X = np.ones((2, d))
    nan_X[0, 0] = np.nan
    ok, err = call(est.predict, nan_X)
    assert not ok and isinstance(err, ValueError)


# --------------------------------------------------------------------------------------------
# Deterministic cases for what fuzzing found (each fails until its bug is fixed)
# --------------------------------------------------------------------------------------------


def unaligned(a):
    """A writeable view of a's values one byte off the allocation's alignment."""
    a = np.ascontiguousarray(a)
    v = np.frombuffer(bytearray(a.nbytes + 1), dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    v[...] = a
    assert not v.flags.aligned or a.dtype.itemsize == 1
    return v


def test_unaligned_views_of_every_array_argument():
    # Valid float arrays (C-contiguous, one byte off): every entry point must give the aligned result.
    # (The sanitizer run of .ci/run checks that no kernel reads them through a misaligned pointer.)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 64))
    for dtype in (np.float64, np.float32):
        xa = x.astype(dtype)
        assert np.array_equal(sg.fwht(unaligned(xa)), sg.fwht(xa))
        # an unaligned out: transformed into, or refused with a ValueError that says why
        for out, src in ((unaligned(np.zeros_like(xa)), xa), (unaligned(xa),) * 2):
            try:
                sg.fwht(src, out=out, normalize=True)
            except ValueError as exc:
                assert "align" in str(exc), exc
            else:
                assert np.array_equal(out, sg.fwht(xa, normalize=True))
        S = sg.SRHT(100, 16, seed=1)
        A = rng.standard_normal((100, 3)).astype(dtype)
        assert np.array_equal(S.apply(unaligned(A)), S.apply(A))
    K = sg.KroneckerSRHT(8, 5, 20, seed=2)
    U, Xk = rng.standard_normal((3, 8)), rng.standard_normal((3, 5))
    assert np.array_equal(K.apply_kron(unaligned(U), unaligned(Xk)), K.apply_kron(U, Xk))
    A = rng.standard_normal((40, 2))
    assert np.array_equal(K.apply(unaligned(A)), K.apply(A))
    X, W, a = rng.standard_normal((30, 4)), rng.standard_normal((64, 4)), rng.choice([-1.0, 1.0], 64)
    J = sg.ReLUJacobian(X, W, a, n_threads=1)
    Ju = sg.ReLUJacobian(unaligned(X), unaligned(W), unaligned(a), n_threads=1)
    assert np.array_equal(Ju.pattern(), J.pattern()) and np.array_equal(Ju.forward(), J.forward())
    V, u = rng.standard_normal((64, 4)), rng.standard_normal(30)
    assert np.array_equal(J.matvec(unaligned(V)), J.matvec(V))
    assert np.array_equal(J.rmatvec(unaligned(u)), J.rmatvec(u))
    P = sg.SketchPreconditioner(J, n_threads=1)
    assert np.array_equal(P.solve(unaligned(u)), P.solve(u))
    for method in ("sketch", "cg", "exact"):
        ref = sg.solve_gn(J, u, method=method, x0=u, n_threads=1)
        got = sg.solve_gn(J, unaligned(u), method=method, x0=unaligned(u), n_threads=1)
        assert np.array_equal(got.g, ref.g)
    est = sg.GaussNewtonRegressor(32, max_iter=2, random_state=0, n_threads=1)
    ref = est.fit(X, u).predict(X)
    assert np.array_equal(est.fit(unaligned(X), unaligned(u)).predict(unaligned(X)), ref)


@pytest.mark.parametrize("method", ["sketch", "cg", "exact"])
@pytest.mark.parametrize("scale", [1e-200, 1e-160, 1e160, 1e200])
def test_solve_gn_is_scale_invariant(method, scale):
    # (J J^T + damping I) g = r is linear in r: scaling r scales g and leaves the relative residual.
    # Found: with ||r|| beyond ~1e154 or below ~1e-154, "cg" and "sketch" return g = 0 with residual
    # NaN (huge r) or residual 0.0 and converged=True (tiny r), and "exact" reports a NaN residual.
    rng = np.random.default_rng(1)
    X = rng.standard_normal((20, 3))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    J = sg.ReLUJacobian(X, rng.standard_normal((64, 3)), rng.choice([-1.0, 1.0], 64), n_threads=1)
    r = rng.standard_normal(20)
    base = sg.solve_gn(J, r, method=method, damping=1e-3, tol=1e-10, n_threads=1)
    assert base.converged
    got = sg.solve_gn(J, scale * r, method=method, damping=1e-3, tol=1e-10, n_threads=1)
    assert np.isfinite(got.g).all() and math.isfinite(got.residual), (got.g[:3], got.residual, got.message)
    np.testing.assert_allclose(got.g / scale, base.g, rtol=1e-6, atol=1e-12 * np.abs(base.g).max())
    assert got.converged and got.residual <= 1e-10, (got.residual, got.message)


@pytest.mark.parametrize("method", ["sketch", "cg"])
@pytest.mark.parametrize("damping", [1e300, 1e200])
def test_solve_gn_with_huge_damping(method, damping):
    # g = (J J^T + damping I)^-1 r ~ r / damping is representable. Found: PCG breaks down (residual inf).
    rng = np.random.default_rng(2)
    X = rng.standard_normal((10, 2))
    J = sg.ReLUJacobian(X, rng.standard_normal((16, 2)), rng.choice([-1.0, 1.0], 16), n_threads=1)
    r = rng.standard_normal(10)
    got = sg.solve_gn(J, r, method=method, damping=damping, tol=1e-10, x0=np.ones(10), n_threads=1)
    np.testing.assert_allclose(got.g * damping, r, rtol=1e-6)
    assert got.converged and math.isfinite(got.residual), (got.residual, got.message)


@pytest.mark.parametrize("solver", ["auto", "exact", "sketch", "cg", "gd"])
@pytest.mark.parametrize("case", ["zero inputs", "dead network, damping 0"])
def test_fit_with_a_zero_jacobian(solver, case):
    # No step can decrease the loss when J = 0: fit must return (n_iter_ = 0), not fail inside.
    # Found: solvers "exact" and "auto" raise ValueError("u must not contain NaN or Inf") -- g = r /
    # (a damping of ~1e-314) overflows and J.rmatvec rejects it.
    rng = np.random.default_rng(3)
    y = rng.standard_normal(12)
    if case == "zero inputs":
        X, kwargs = np.zeros((12, 3)), {}
    else:
        X, kwargs = rng.standard_normal((12, 3)), {"threshold": 100.0, "damping": 0.0}
    est = sg.GaussNewtonRegressor(32, solver=solver, max_iter=3, random_state=0, n_threads=1, **kwargs)
    est.fit(X, y)
    assert est.n_iter_ == 0 and est.loss_curve_ == [pytest.approx(0.5 * float(y @ y))]
    assert np.array_equal(est.predict(X), np.zeros(12))


@pytest.mark.parametrize("bad", ["inf object", "nan string", "inf string"])
def test_fit_rejects_non_finite_targets_of_any_dtype(bad):
    # Found: y as an object array holding inf, or as strings "nan"/"inf", passes scikit-learn's check
    # (which skips object and string arrays) and the fit "succeeds" with loss_curve_ = [inf] or [nan].
    X = np.random.default_rng(4).standard_normal((5, 2))
    value = {"inf object": np.inf, "nan string": "nan", "inf string": "inf"}[bad]
    if bad == "inf object":
        y = np.array([1.0, 2.0, value, 0.5, 0.1], dtype=object)
    else:
        y = np.array(["1.0", "2.0", value, "0.5", "0.1"])
    with pytest.raises(ValueError):
        sg.GaussNewtonRegressor(16, max_iter=2, random_state=0).fit(X, y)


def test_gram_of_inactive_samples_with_overflowing_factors_is_zero():
    # Rows of J for samples with no active neuron are exactly 0, so are their Gram entries. Found: NaN
    # (0 * inf) when x_i . x_j or a_r^2 overflows.
    J = sg.ReLUJacobian(np.array([[1e300], [-1e300]]), np.array([[1.0]]), np.array([1.0]))
    assert J.pattern().tolist() == [[True], [False]]
    G = J.gram()
    assert G[0, 0] == np.inf and G[0, 1] == 0 and G[1, 0] == 0 and G[1, 1] == 0, G
    J = sg.ReLUJacobian(np.zeros((2, 2)), np.ones((1, 2)), np.array([1e300]))
    assert np.array_equal(J.gram(), np.zeros((2, 2))), J.gram()
