"""Solving the Gauss-Newton system ``(J J^T + damping I) g = r``.

Three methods: "sketch" (the paper's: conjugate gradient preconditioned by the factor R of a sketch of
``[J^T; sqrt(damping) I]``), "cg" (plain conjugate gradient) and "exact" (the Gram matrix and a
Cholesky factorization). The CG loops run in C++ with the GIL released; so do the dense Gram and
Cholesky factorizations, which call the BLAS/LAPACK that SciPy ships (its Cython function pointers,
handed to the C++ core once at import) in blocks, with Ctrl-C polled between blocks.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from scipy.linalg import cython_blas, cython_lapack

from . import _core
from ._jacobian import ReLUJacobian
from ._validation import as_float_array, check_finite, check_int, check_memory, check_seed, resolve_n_threads

__all__ = ["SketchPreconditioner", "SolveResult", "solve_gn"]

SKETCHES = ("auto", "kronecker", "kronecker_rows", "srht", "gaussian")
METHODS = ("sketch", "cg", "exact")
PRECISIONS = ("auto", "double", "mixed")
FACTORIZATIONS = ("auto", "cholqr", "qr")
PRECONDITIONER_PRECISIONS = ("double", "single")

# Default sketch size, as a multiple of n. Measured on Jacobians whose Gram has condition number 1e2,
# 1e5, 1e8 (n=400, m=1024, d=16): CG iterations to a 1e-6 / 1e-2 residual were 38-55 / 15-32 with
# s = 2n, 25-36 / 10-21 with 3n and 21-29 / 8-16 with 4n. The factorization costs s n^2 but is reused
# across Gauss-Newton steps, so 4n.
DEFAULT_SKETCH_FACTOR = 4
# sketch="auto" samples whole rows of the Kronecker grid from this many rows on. Measured
# (preconditioned condition numbers at s = 4n, n = 256..512: 64 rows within 1.25x of uniform cells,
# 16 rows 1.6x, 4 rows 6x worse; CG iterations to 1e-6 the same as cells' from 250 rows on, n = 500 to
# 2000, d = 4 to 32, but 29 against 20 with 100 rows at n = 200).
ROW_SKETCH_MIN_ROWS = 128
# Sketches beyond this multiple of n are refused (memory n * s doubles, time s n^2).
MAX_SKETCH_FACTOR = 64
# Diagonal entries of R below this fraction of its largest are raised to it: R stays invertible on
# singular systems (a preconditioner may be approximate; an infinite one is useless).
R_DIAGONAL_FLOOR = 1e-10
# Pivots of R below this fraction of the largest mean a (numerically) rank-deficient sketch: R is
# recomputed with a shift (SINGULAR_PIVOT * max pivot)^2 on the diagonal of R^T R. (1e-8, a shift of
# 1e-16 relative, let the preconditioner amplify rounding in the null space to O(1): CG on consistent
# singular systems then stagnated or not depending on the last bit of the triangular solves.)
SINGULAR_PIVOT = 1e-6
# precision="single": the float32 R is kept only when both the ratio of its largest to its smallest
# pivot and the ratios sqrt(C_ii) / R_ii stay below this; else the factorization is done again in
# float64. Both are lower bounds of cond(R), not estimates: on Grams of ReLU Jacobians cond(R) measured
# 4 to 9 times the pivot ratio, but an adversarial (Kahan-like) sketch can hide a large cond(R) behind
# small pivot ratios, and then costs CG iterations (never accuracy: the stopping rule is the float64
# residual). The float32 rounding perturbs the preconditioned matrix by about 1e-8 cond(C) (measured
# ||R^-T (R^T R - C) R^-1||: 3e-5, 1e-3, 8e-3, 0.12 and 0.7 at cond(C) 6e2, 6e4, 1e6, 1e7 and 6e7,
# where the pivot ratio was 5, 33, 140, 450 and 1000; CG iterations to 1e-6 were the same as with the
# float64 R in all five, n = 400, m = 2048, d = 8, and at n = 8000, m = 16384, d = 32, pivot ratio 3).
# 1e2 keeps the perturbation near 1e-2 on such Grams.
SINGLE_MAX_PIVOT_RATIO = 1e2


_core._set_lapack(cython_blas.__pyx_capi__["dsyrk"], cython_blas.__pyx_capi__["dtrsm"],
                  cython_lapack.__pyx_capi__["dpotrf"], cython_blas.__pyx_capi__["ssyrk"],
                  cython_blas.__pyx_capi__["strsm"], cython_lapack.__pyx_capi__["spotrf"])


def _cholesky(C):
    """(R, info): R upper triangular with R^T R = C (C's upper triangle is read, C is overwritten;
    float64 or float32); info = 0, or the order of the first leading minor that is not positive
    definite."""
    return C, int(_core.cholesky_upper(C))


class _ExplicitSketch:
    """A sketch S J^T held as T = (S J^T)^T (n, s): its Gram by one SYRK."""

    def __init__(self, T):
        self.T = T
        self.n = T.shape[0]

    def gram(self, shift=0.0, single=False):
        """(S A)^T (S A) + shift I for the sketch S A = T.T, upper triangle (GIL released); single:
        rounded to float32 (T itself stays float64: a float32 copy would hold n s floats)."""
        C = _core.sketch_gram_upper(self.T, float(shift))
        if not single:
            return C
        with np.errstate(over="ignore"):  # (out of float32 range: inf, which the caller refuses)
            return C.astype(np.float32)

    def matrix(self):
        return self.T


class _RowSketch:
    """The "kronecker_rows" sketch held as its factor Uhat (n, rows): the Gram is
    (Uhat Uhat^T o X X^T) / rows, O(n^2 (rows + d)); T itself is formed only if Householder QR needs it."""

    def __init__(self, J, Uhat, s, seed, n_threads):
        self.J, self.Uhat, self.s, self.seed, self.n_threads = J, Uhat, s, seed, n_threads
        self.n = J.n

    def gram(self, shift=0.0, single=False):
        return _core.neuron_rows_gram_upper(self.J._impl, self.Uhat, float(shift), self.n_threads, single)

    def matrix(self):
        check_memory(8 * self.J.n * self.s, f"the explicit sketch ({self.s} rows, n = {self.J.n}) for QR")
        return _core.sketch_jacobian_transpose(self.J._impl, "kronecker_rows", self.s, self.seed, self.n_threads)


def _pow2_scale(v):
    """A power of two near max|v| (1 for a zero vector): dividing by it is exact."""
    top = float(np.max(np.abs(v), initial=0.0))
    if top == 0.0 or not math.isfinite(top):
        return 1.0
    return math.ldexp(1.0, math.frexp(top)[1] - 1)  # <= top: never overflows


def _check_jacobian(J):
    if not isinstance(J, ReLUJacobian):
        raise TypeError(f"J must be a sketchgn.ReLUJacobian, got {type(J).__name__}")
    return J


def _check_real(value, name, *, minimum=None, strict=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return value


def _check_vector(v, name, n):
    arr = np.ascontiguousarray(as_float_array(v, name), dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    check_finite(arr, name)
    return arr


def _grid(J):
    """(m_pad, d_pad) of the Kronecker sketches' grid."""
    return 1 << (J.m - 1).bit_length(), 1 << (J.d - 1).bit_length()


def _resolve_sketch(kind, J, s):
    """"auto": whole grid rows when the sketch has enough of them to embed like uniform cells."""
    if kind != "auto":
        return kind
    return "kronecker_rows" if s // _grid(J)[1] >= ROW_SKETCH_MIN_ROWS else "kronecker"


def _max_sketch_size(kind, J):
    m_pad, d_pad = _grid(J)
    limit = MAX_SKETCH_FACTOR * max(J.n, 16)
    if kind == "kronecker_rows":
        return min(limit // d_pad * d_pad, m_pad * d_pad) or d_pad
    if kind == "kronecker":
        return min(limit, m_pad * d_pad)
    if kind == "srht":
        return min(limit, 1 << (J.m * J.d - 1).bit_length())
    return limit


class SketchPreconditioner:
    """The triangular factor R of a sketch of ``A = [J^T; sqrt(damping) I]``.

    ``S A = Q R`` with ``S`` an ``s x (m d)`` sketch (``s >= n``): then ``A R^-1`` has a condition
    number O(1) with high probability, so conjugate gradient on ``R^-T (J J^T + damping I) R^-1``
    converges in O(log 1/eps) iterations whatever the conditioning of ``J J^T``. Build it once and
    pass it to :func:`solve_gn` for several right-hand sides or several Gauss-Newton steps (it ages
    slowly as the activation pattern changes; :meth:`refresh` re-sketches).

    Parameters
    ----------
    J : ReLUJacobian
    sketch : {"auto", "kronecker", "kronecker_rows", "srht", "gaussian"}, default "auto"
        "kronecker" sketches each column ``u (x) x`` of ``J^T`` from its two factors in
        ``O(m log m + d log d + s)``, sampling ``s`` uniform cells of the ``m_pad x d_pad`` grid;
        "kronecker_rows" samples ``s / d_pad`` whole rows of that grid instead, which lets the Gram
        of the sketch be formed as ``(Uhat Uhat^T o X X^T) / rows`` in ``O(n^2 s / d_pad)`` instead
        of ``O(n^2 s)`` (``s`` is rounded up to a multiple of ``d_pad``); "auto" is
        "kronecker_rows" when that leaves at least 128 rows, else "kronecker". "srht" forms the
        column and uses a full SRHT of R^{md}; "gaussian" a dense Gaussian sketch (``O(s n m d)``,
        for small problems and comparisons).
    sketch_size : int, optional
        ``s``, between ``n`` and ``64 n``. Default ``4 n`` (fewer CG iterations with larger ``s``,
        costlier factorization).
    damping : float, default 0.0
        Levenberg-Marquardt term: the preconditioner is for ``J J^T + damping I``.
    seed : int or numpy.random.Generator, default 0
    n_threads : int or None
    factorization : {"auto", "cholqr", "qr"}, default "auto"
        "cholqr": Cholesky of ``(S A)^T (S A)`` (one SYRK, fastest; squares the condition number);
        "qr": Householder QR (robust); "auto": CholeskyQR, falling back to QR when the Cholesky
        fails or its pivots lose more than half the digits.
    precision : {"double", "single"}, default "double"
        Arithmetic of CholeskyQR. "single": the Cholesky in float32 (about twice as fast), and for
        "kronecker_rows" the Gram of the sketch too (the other sketches form it in float64 and round
        it); R is then float32. Its rounding perturbs the preconditioner by about 1e-8
        cond(J J^T + damping I), which leaves CG's iteration count unchanged while that is small; so
        the float32 R is kept only while its pivot ratios (max/min pivot, sqrt(C_ii) / R_ii) stay
        below 100 -- lower bounds of cond(R), which measured 4-9x that on Jacobian Grams -- and the
        factorization is otherwise done again in float64 (``precision_`` says which ran; a
        preconditioner that had to fall back factors in float64 on its refreshes too). A poor R
        that slips through costs CG iterations, never accuracy. :func:`solve_gn` with mixed
        precision and the estimator build theirs in "single". Householder QR is always float64.

    Attributes
    ----------
    R : ndarray (n, n), upper triangular: float64 (CG applies a float32 copy when its range allows,
        halving the memory traffic of the triangular solves), or float32 when ``precision_`` is
        "single"
    sketch_size, n, damping, seed, sketch, precision
    sketch_ : str, the sketch that ran ("auto" resolved)
    factorization_ : str, the factorization that ran ("cholqr" or "qr")
    precision_ : str, the precision the factorization ran in ("double" or "single")
    timings : dict, seconds of the last build: "sketch", "factorization"
    """

    def __init__(self, J, *, sketch="auto", sketch_size=None, damping=0.0, seed=0, n_threads=None,
                 factorization="auto", precision="double"):
        J = _check_jacobian(J)
        if sketch not in SKETCHES:
            raise ValueError(f"sketch must be one of {SKETCHES}, got {sketch!r}")
        if factorization not in FACTORIZATIONS:
            raise ValueError(f"factorization must be one of {FACTORIZATIONS}, got {factorization!r}")
        if not isinstance(precision, str) or precision not in PRECONDITIONER_PRECISIONS:
            raise ValueError(f"precision must be one of {PRECONDITIONER_PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.sketch = sketch
        self.damping = _check_real(damping, "damping", minimum=0.0)
        self.seed = check_seed(seed)
        self.factorization = factorization
        self._n_threads = n_threads
        resolve_n_threads(n_threads)
        n = J.n
        if sketch_size is not None:
            check_int(sketch_size, "sketch_size")
        kind = _resolve_sketch(sketch, J, DEFAULT_SKETCH_FACTOR * n if sketch_size is None else int(sketch_size))
        limit = _max_sketch_size(kind, J)
        if sketch_size is None:
            # (when m_pad d_pad < n the grid has fewer cells than n; J^T then has rank <= m d and the
            # whole grid, s = m_pad d_pad >= m d, still embeds its range)
            s = min(DEFAULT_SKETCH_FACTOR * n, limit)
        else:
            s = check_int(sketch_size, "sketch_size")
            if s > limit:
                raise ValueError(
                    f"sketch_size must be <= {limit} for sketch={sketch!r} with n={n}, m={J.m}, "
                    f"d={J.d}, got {s}"
                )
        if s < min(n, limit) or (sketch_size is not None and s < n and limit >= n):
            raise ValueError(
                f"sketch_size must be >= n = {n} (a smaller sketch of J^T cannot precondition: its R "
                f"would be singular), got {s}"
                + (
                    ""
                    if sketch_size is not None
                    else f"; the largest {sketch!r} sketch of this Jacobian has {limit} rows"
                )
            )
        if kind == "kronecker_rows":
            d_pad = _grid(J)[1]
            s = min(-(-s // d_pad) * d_pad, limit)
        self.sketch_ = kind
        self.sketch_size = s
        self.refresh(J)

    @property
    def n(self):
        return self._shape[0]

    @property
    def R(self):
        return self._R

    def refresh(self, J, n_threads=None):
        """Re-sketch and re-factor for a new Jacobian of the same shape (same settings and seed)."""
        J = _check_jacobian(J)
        if hasattr(self, "_shape") and (J.n, J.m, J.d) != self._shape:
            raise ValueError(
                f"J must have (n, m, d) = {self._shape} like the Jacobian this preconditioner was built "
                f"for, got {(J.n, J.m, J.d)}"
            )
        nt = resolve_n_threads(self._n_threads if n_threads is None else n_threads)
        # (a preconditioner whose float32 factorization was refused once is not tried in float32 again:
        # the next Jacobians are close to this one, and each refusal costs a float32 factorization)
        precision = "double" if getattr(self, "precision_", None) == "double" else self.precision
        # the sketch T (n, s) (or Uhat (n, rows), and its float32 copy), the Gram of the sketch and R
        # (n, n), and R's float32 copy
        rows = self.sketch_size // _grid(J)[1] if self.sketch_ == "kronecker_rows" else None
        held = J.n * (rows if rows else self.sketch_size)
        check_memory((12 if rows and precision == "single" else 8) * held + 20 * J.n * J.n,
                     f"a sketch of {self.sketch_size} rows for n = {J.n} samples")
        t0 = time.perf_counter()
        if rows:
            sketch = _RowSketch(J, _core.sketch_neuron_rows(J._impl, rows, self.seed, nt), self.sketch_size,
                                self.seed, nt)
        else:
            sketch = _ExplicitSketch(
                _core.sketch_jacobian_transpose(J._impl, self.sketch_, self.sketch_size, self.seed, nt))
        t1 = time.perf_counter()
        R, used, precision = _factor(sketch, self.damping, self.factorization, precision)
        R_apply = _apply_copy(R)
        t2 = time.perf_counter()
        self._R = R
        self._R_apply = R_apply
        self._shape = (J.n, J.m, J.d)
        self.factorization_ = used
        self.precision_ = precision
        self.timings = {"sketch": t1 - t0, "factorization": t2 - t1}
        return self

    def __setstate__(self, state):
        # (pickles from before the precision option: float64)
        state.setdefault("precision", "double")
        state.setdefault("precision_", "double")
        self.__dict__.update(state)

    def solve(self, z, n_threads=None):
        """``R^-1 z``."""
        z = _check_vector(z, "z", self.n)
        return _core.solve_upper(self._R, z, False, resolve_n_threads(n_threads))

    def solve_transpose(self, z, n_threads=None):
        """``R^-T z``."""
        z = _check_vector(z, "z", self.n)
        return _core.solve_upper(self._R, z, True, resolve_n_threads(n_threads))

    def __repr__(self):
        return (
            f"SketchPreconditioner(n={self.n}, sketch={self.sketch!r} ({self.sketch_}), sketch_size={self.sketch_size}, "
            f"damping={self.damping}, factorization_={self.factorization_!r}, precision_={self.precision_!r})"
        )


def _apply_copy(R):
    """The R that CG applies: float32 when its range allows (the triangular solves are memory-bound,
    so this halves their time; the rounding, ~6e-8 relative per entry, perturbs the preconditioned
    matrix by about cond(R) * 6e-8, far below what changes CG's convergence), else R itself (also
    when R is float32 already: precision="single")."""
    if R.size == 0 or R.dtype == np.float32:
        return R
    big = max(float(R.max()), -float(R.min()))  # (no |R| temporary: n^2 doubles of page faults)
    small = float(np.abs(np.diagonal(R)).min())
    if 1e-30 < small and big < 1e30:
        return R.astype(np.float32)
    return R


def _floor_diagonal(R):
    diag = np.abs(np.diagonal(R))
    top = diag.max(initial=0.0)
    floor = R_DIAGONAL_FLOOR * top if top > 0 else 1.0
    small = diag < floor
    if small.any():
        idx = np.flatnonzero(small)
        R[idx, idx] = np.where(R[idx, idx] < 0, -floor, floor)
    return R


def _regularize(R, sketch, damping, used):
    """R with a tiny shift when it is numerically singular (rank-deficient J^T, no damping): the
    preconditioner is then R^T R = (S A)^T (S A) + delta I instead of a matrix with ~0 pivots."""
    diag = np.abs(np.diagonal(R))
    top = diag.max(initial=0.0)
    if top == 0.0 or diag.min() >= SINGULAR_PIVOT * top:
        return R
    delta = (SINGULAR_PIVOT * top) ** 2
    n = R.shape[0]
    if used == "cholqr":
        R2, info = _cholesky(sketch.gram(damping + delta))
        if info == 0:
            return R2
    SA = np.vstack([np.asarray(sketch.matrix().T), math.sqrt(damping + delta) * np.eye(n)])
    R2 = scipy.linalg.qr(SA, mode="r", overwrite_a=True, check_finite=False)[0][:n]
    return np.ascontiguousarray(np.triu(R2))


def _factor(sketch, damping, how, precision="double"):
    """(R, factorization that ran, precision that ran)."""
    if precision == "single" and how in ("auto", "cholqr"):
        R = _factor_single(sketch, damping)
        if R is not None:
            return R, "cholqr", "single"
    R, used = _factor_plain(sketch, damping, how)
    return _floor_diagonal(_regularize(R, sketch, damping, used)), used, "double"


def _factor_single(sketch, damping):
    """CholeskyQR in float32: R (float32), or None when the Cholesky fails, the Gram leaves the range
    where float32 keeps its relative precision, or R's pivot ratios reach SINGLE_MAX_PIVOT_RATIO
    (below it neither the diagonal floor nor the singular shift of the float64 path is ever needed)."""
    C = sketch.gram(damping, single=True)
    scale = np.sqrt(np.diagonal(C).astype(np.float64))  # (the diagonal of a Gram: >= 0, or inf / NaN)
    top = float(scale.max(initial=0.0))
    if not (1e-15 < top < 1e15) or not np.isfinite(scale).all():
        return None
    R, info = _cholesky(C)
    if info != 0:
        return None
    pivots = np.abs(np.diagonal(R)).astype(np.float64)
    if not np.isfinite(pivots).all():
        return None
    if pivots.min() * SINGLE_MAX_PIVOT_RATIO < pivots.max() or np.any(pivots * SINGLE_MAX_PIVOT_RATIO < scale):
        return None
    return R


def _factor_plain(sketch, damping, how):
    """R (n, n) row-major upper triangular with R^T R = (S A)^T (S A) (+ damping I), S A = T.T for
    T = sketch.matrix() (an _ExplicitSketch or a _RowSketch)."""
    n = sketch.n
    if how in ("auto", "cholqr"):
        # T is S A in column-major order: SYRK gives (S A)^T (S A) without a copy (upper triangle).
        C = sketch.gram(damping)
        diag_before = np.sqrt(np.abs(np.diagonal(C)).copy())
        R, info = _cholesky(C)
        ok = info == 0
        if ok and how == "auto":
            # CholeskyQR squares cond(S A); if a pivot lost more than half the digits the R is poor:
            # Householder QR instead.
            ratio = np.abs(np.diagonal(R)) / np.where(diag_before > 0, diag_before, 1.0)
            ok = bool(np.all(ratio > 1e-7))
        if ok:
            return R, "cholqr"
        if how == "cholqr":
            # Shifted CholeskyQR: a tiny multiple of the trace makes the Cholesky succeed; the R is
            # still a good preconditioner on the well-conditioned part.
            C = sketch.gram(0.0)
            shift = 1e-12 * max(np.trace(C) / n, np.finfo(float).tiny) + damping
            C[np.diag_indices(n)] += shift
            R, info = _cholesky(C)
            if info == 0:
                return R, "cholqr"
    SA = np.asfortranarray(sketch.matrix().T)
    if damping:
        SA = np.vstack([SA, math.sqrt(damping) * np.eye(n)])
    R = np.triu(scipy.linalg.qr(SA, mode="r", overwrite_a=True, check_finite=False)[0][:n])
    if R.shape[0] < n:  # fewer sketch rows than n (rank-deficient J^T): zero pivots, shifted later
        R = np.vstack([R, np.zeros((n - R.shape[0], n))])
    return np.ascontiguousarray(R), "qr"


@dataclass
class SolveResult:
    """Result of :func:`solve_gn`.

    Attributes
    ----------
    g : ndarray (n,)
    iterations : int
        CG iterations (0 for "exact").
    residual : float
        True relative residual ``||r - (J J^T + damping I) g|| / ||r||``.
    converged : bool
        ``residual <= tol``.
    preconditioner : SketchPreconditioner or None
        The preconditioner used (method "sketch"), to pass to the next call.
    timings : dict
        Seconds: "sketch", "factorization" (0 when a preconditioner was reused), "products" (J and
        J^T), "preconditioner" (triangular solves), "gram", "cholesky" (method "exact"), "total".
    method : str
    message : str
        Anything the caller should know: breakdown, a singular system solved with a small damping.
    iterations_f32 : int
        Of ``iterations``, those that ran with float32 products (``precision="mixed"``).
    """

    g: np.ndarray
    iterations: int
    residual: float
    converged: bool
    preconditioner: SketchPreconditioner | None = None
    timings: dict = field(default_factory=dict)
    method: str = "sketch"
    message: str = ""
    iterations_f32: int = 0
    # (J^T g as (m, d), J J^T g) when the caller asked for them (the estimator: its step direction and
    # the model's curvature are these products, which the solve's last residual check has computed;
    # see _products_of and pcg.hpp for when they are reused)
    _products: tuple | None = field(default=None, repr=False, compare=False)


def solve_gn(J, r, *, method="sketch", damping=0.0, tol=1e-6, maxiter=None, preconditioner=None, x0=None,
             seed=0, n_threads=None, sketch="auto", sketch_size=None, precision="auto", _with_products=False):
    """Solve the Gauss-Newton system ``(J J^T + damping I) g = r``.

    Parameters
    ----------
    J : ReLUJacobian
    r : array_like (n,)
        Right-hand side (the residual ``f - y`` in a Gauss-Newton step).
    method : {"sketch", "cg", "exact"}, default "sketch"
        "sketch": CG preconditioned by a :class:`SketchPreconditioner` (the paper's method: O(log
        1/tol) iterations whatever the conditioning); "cg": plain CG; "exact": the Gram matrix
        ``J.gram()`` and a Cholesky factorization (a singular Gram is solved with the smallest
        extra damping that makes the factorization succeed, and the result says so).
    damping : float >= 0
    tol : float > 0
        Target relative residual (in double precision about ``1e-16 cond(J J^T)`` is attainable).
    maxiter : int >= 0, optional
        CG iteration limit; default ``min(10 n, 1000)`` for "sketch" and ``10 n`` for "cg".
        Not converging is a result (``converged=False``), not an exception.
    preconditioner : SketchPreconditioner, optional
        Reused as is (no new sketch) for method "sketch". It must have been built for a Jacobian of
        the same (n, m, d); it may be for another damping (it is then only approximate).
    x0 : array_like (n,), optional
        Initial guess (warm start).
    seed, sketch, sketch_size :
        For the preconditioner built when none is passed.
    n_threads : int or None
    precision : {"auto", "double", "mixed"}, default "auto"
        Arithmetic of the J and J^T products inside CG. "double": float64 throughout. "mixed":
        iterative refinement -- rounds of CG with float32 products (about twice as fast), each ended
        by a float64 residual; the stopping rule is the same float64 residual, so ``tol`` means the
        same. When float32 cannot resolve the system (measured: from cond(J J^T) ~ 1e8; a sketch
        solve already starts in float64 when R's pivots say cond > 1e6) the solve falls back to
        float64 products by itself, at the cost of the float32 round it tried. "mixed" also builds
        the preconditioner (when none is passed) with ``precision="single"``, which keeps a float32
        factorization only where it preconditions as well as a float64 one. "auto": "mixed" for
        method "sketch", "double" for "cg" (unpreconditioned CG on an ill-conditioned system is where
        float32 fails). Jacobians with a sparse activation pattern, or with |X|, |a| beyond 1e30,
        always use float64 products. Ignored by "exact".

    Returns
    -------
    SolveResult

    Singular systems (``n > m d``, repeated samples) with ``damping=0``: "sketch" and "cg" return
    the iterate they reached with ``converged=False`` when the residual cannot reach ``tol`` (never
    NaN); "exact" adds the smallest damping that makes the Cholesky succeed and reports it in
    ``message``.
    """
    J = _check_jacobian(J)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    n = J.n
    r = _check_vector(r, "r", n)
    damping = _check_real(damping, "damping", minimum=0.0)
    tol = _check_real(tol, "tol", minimum=0.0, strict=True)
    if maxiter is not None:
        maxiter = check_int(maxiter, "maxiter", minimum=0)
    g0 = np.zeros(n) if x0 is None else _check_vector(x0, "x0", n).copy()
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    mixed = precision == "mixed" or (precision == "auto" and method == "sketch")
    nt = resolve_n_threads(n_threads)
    if preconditioner is not None:
        if not isinstance(preconditioner, SketchPreconditioner):
            raise TypeError(
                f"preconditioner must be a SketchPreconditioner, got {type(preconditioner).__name__}"
            )
        if preconditioner._shape != (J.n, J.m, J.d):
            raise ValueError(
                f"preconditioner was built for a Jacobian with (n, m, d) = {preconditioner._shape}, "
                f"but J has {(J.n, J.m, J.d)}"
            )
        if method != "sketch":
            raise ValueError(f"a preconditioner is only used by method='sketch', got method={method!r}")

    t_start = time.perf_counter()
    timings = {"sketch": 0.0, "factorization": 0.0, "products": 0.0, "preconditioner": 0.0}
    if method == "exact":
        return _solve_exact_columns(J, r[:, None], damping, tol, nt, timings, t_start, _with_products)[0]

    R = None
    P = None
    if method == "sketch":
        P = preconditioner
        if P is None:
            P = SketchPreconditioner(J, sketch=sketch, sketch_size=sketch_size, damping=damping, seed=seed,
                                     n_threads=nt, precision="single" if mixed else "double")
            timings.update(P.timings)
        R = P._R_apply
        default_maxiter = min(10 * n, 1000)
    else:
        default_maxiter = 10 * n
    g, info = _core.pcg(J._impl, r, damping, R, tol, default_maxiter if maxiter is None else maxiter, g0, nt,
                        mixed, _with_products)
    timings["products"] = info["seconds_products"]
    timings["preconditioner"] = info["seconds_preconditioner"]
    timings["total"] = time.perf_counter() - t_start
    used_maxiter = default_maxiter if maxiter is None else maxiter
    message = {
        "converged": "",
        "maxiter": f"not converged within {used_maxiter} iterations",
        "stagnated": "CG stagnated (no smaller residual in 100 iterations): the system is probably singular "
                     "and r not in its range; g is the iterate with the smallest residual",
        "breakdown": "CG broke down: the system is numerically singular or indefinite; g is the iterate with "
                     "the smallest residual",
        "inaccurate": "the true residual stays above tol although CG's recursive residual met it: tol is "
                      "below what rounding allows (about 1e-16 cond(J J^T))",
        "interrupted": "interrupted",
        "overflow": "the solution is beyond the double range: g = 0 returned",
    }[info["status"]]
    if info["converged"]:
        message = ""
    if info["mixed_fallback"]:
        message = "; ".join(filter(None, [message, "float32 products could not resolve the system: went on "
                                                   "with float64 products"]))
    return SolveResult(g, int(info["iterations"]), float(info["residual"]), bool(info["converged"]), P,
                       timings, method, message, int(info["iterations_f32"]),
                       (info["jt_g"], info["jjt_g"]) if _with_products else None)


def _solve_exact_columns(J, rs, damping, tol, nt, timings=None, t_start=None, with_products=False):
    """The exact solve for each column of rs (n, k): one Gram matrix and one Cholesky factorization
    shared by the k right-hand sides. Returns k SolveResults (sharing one timings dict; with_products:
    each with the J^T g and J J^T g that its residual was measured with)."""
    t_start = time.perf_counter() if t_start is None else t_start
    timings = {"sketch": 0.0, "factorization": 0.0, "products": 0.0, "preconditioner": 0.0} \
        if timings is None else timings
    check_memory(8 * J.n * J.n, f"the exact solve for n = {J.n} (its Gram matrix)")
    # The Gram matrix is factored in place (no copy: at n = 8000 a copy of its 512 MB alone takes
    # about a second of page faults, which Ctrl-C could not interrupt); the residual is measured with
    # J's products instead. A singular Gram (rare) is formed again for each added damping.
    t0 = time.perf_counter()
    R = None
    extra = 0.0
    for jitter in (0.0, 1e-14, 1e-12, 1e-10, 1e-8, 1e-6):
        t_gram = time.perf_counter()
        A = J.gram(n_threads=nt)
        timings["gram"] = timings.get("gram", 0.0) + time.perf_counter() - t_gram
        if jitter == 0.0:
            # (finite: the trace of a Gram of finite J is finite unless its entries overflow)
            scale = max(float(np.trace(A)) / max(J.n, 1) + damping, np.finfo(float).tiny)
        A[np.diag_indices_from(A)] += damping + jitter * scale
        A, info = _cholesky(A)
        if info == 0 and np.isfinite(np.diagonal(A)).all() and np.diagonal(A).min(initial=1.0) > 0:
            R, extra = A, jitter * scale
            break
    if R is None:
        raise np.linalg.LinAlgError("the Gram matrix could not be factored even with added damping")
    t1 = time.perf_counter()
    timings["cholesky"] = t1 - t0 - timings["gram"]
    results = []
    for j in range(rs.shape[1]):
        r = np.ascontiguousarray(rs[:, j])
        # The system is linear in r: solve for r scaled to a largest entry near 1 (exactly, by a power
        # of two), so that neither the solves nor the residual's norm overflow or underflow.
        r_scale = _pow2_scale(r)
        r_scaled = r / r_scale
        g_scaled = _core.solve_upper(R, _core.solve_upper(R, r_scaled, True, nt), False, nt)
        message = f"the Gram matrix is singular: solved with extra damping {extra:.3g}" if extra else ""
        with np.errstate(over="ignore", invalid="ignore"):
            residual, products = _relative_residual(r_scaled, J, damping, g_scaled, nt, with_products)
            g = g_scaled * r_scale
        if products is not None:  # (of v = g_scaled / g_scale: g should be v times g_scale r_scale)
            products = products[:3] + (products[3] * r_scale,)
        converged = residual <= tol
        if not np.isfinite(g).all():
            g = np.zeros_like(g)
            converged, residual = False, 1.0
            message = "the solution is beyond the double range: g = 0 returned"
        if with_products:
            products = _products_of(J, g, products, nt)
        results.append(SolveResult(g, 0, residual, converged, None, timings, "exact", message, 0, products))
    timings["cholesky"] += time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t_start
    return results


def _scaled_norm(v):
    """||v|| scaled by its largest entry (as BLAS nrm2): no overflow or underflow in the squares."""
    top = float(np.max(np.abs(v), initial=0.0))
    if top == 0.0:
        return 0.0
    if not math.isfinite(top):  # (inf or NaN entries)
        return math.inf
    return top * float(np.linalg.norm(v / top))


def _relative_residual(r, J, damping, g, nt, with_products=False):
    """||r - (J J^T + damping I) g|| / ||r||, with the norms scaled (no overflow for huge entries);
    with_products: and the products it took, (J^T v, J J^T v, v, 2^k) for v = g / 2^k (or None)."""
    if not np.isfinite(g).all():
        return math.inf, None
    r_norm = _scaled_norm(r)
    if not np.any(g):
        return (0.0 if r_norm == 0.0 else 1.0), None
    # J J^T g computed on g scaled to a largest entry near 1 (exactly, by a power of two), scaled back
    g_scale = _pow2_scale(g)
    v = g / g_scale
    JTv = J.rmatvec(v, n_threads=nt)
    Av = J.matvec(JTv, n_threads=nt)
    res_norm = _scaled_norm(r - (Av * g_scale + damping * g))
    products = (JTv, Av, v, g_scale) if with_products else None
    if r_norm == 0.0:
        return (0.0 if res_norm == 0.0 else math.inf), products
    return res_norm / r_norm, products


def _products_of(J, g, measured, nt):
    """(J^T g, J J^T g): the products (J^T v, J J^T v, v, 2^k) the residual check took, scaled by
    2^k when that is exact (v 2^k is g, and no entry leaves the normal range) -- the same bits as
    J.rmatvec(g) and J.matvec of it, unless terms of those sums come near the underflow threshold
    (|entries| ~ 1e-300), where they agree to rounding -- else computed."""
    if measured is not None:
        JTv, Av, v, factor = measured
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            scaled = (v * factor, JTv * factor, Av * factor)
        tiny = np.finfo(float).tiny
        if np.array_equal(scaled[0], g) and all(
            np.isfinite(b).all() and not np.any((np.abs(b) < tiny) & (a != 0)) for a, b in zip((v, JTv, Av), scaled)
        ):
            return scaled[1:]
    JTg = J.rmatvec(g, n_threads=nt)
    return JTg, J.matvec(JTg, n_threads=nt)
