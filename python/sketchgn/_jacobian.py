"""The Jacobian of a two-layer ReLU network as a matrix-free operator."""

from __future__ import annotations

import math

import numpy as np

from . import _core
from ._validation import as_float_array, check_finite, check_memory, resolve_n_threads

__all__ = ["ReLUJacobian"]

_PATHS = ("auto", "dense", "sparse")


def _as_real_matrix(value, name, ndim):
    arr = as_float_array(value, name, dtypes=("float64", "float32"))
    if arr.ndim != ndim:
        shape = "(n, d)" if name == "X" else "(m, d)" if name == "W" else "(m,)"
        raise ValueError(f"{name} must be {ndim}-D with shape {shape}, got an array of shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    check_finite(arr, name)
    return arr


class ReLUJacobian:
    """The n x (m d) Jacobian of ``f(W, x) = (1/sqrt(m)) sum_r a_r relu(w_r . x - threshold)``.

    Row i is ``(1/sqrt(m)) (a o D[i, :]) (x) x_i``, with the activation pattern
    ``D[i, r] = 1[w_r . x_i > threshold]`` computed once, in C++, and stored as bits. Directions are
    ``(m, d)`` arrays (or their row-major flattening ``vec(V)``, index ``r * d + j``).

    Parameters
    ----------
    X : array_like, shape (n, d)
        Samples. The paper assumes unit-norm rows; nothing here requires it.
    W : array_like, shape (m, d)
        First-layer weights.
    a : array_like, shape (m,)
        Output weights (``+1``/``-1`` in the paper; any finite values work).
    threshold : float, default 0.0
        Shift ``b`` of the ReLU. ``b > 0`` makes the pattern sparse.
    n_threads : int or None
        Threads for the construction and, by default, for every product. Results are identical for
        any thread count.
    path : {"auto", "dense", "sparse"}, default "auto"
        Kernel for the products: fused dense tiles, or lists of active neurons (cost
        O(nnz(D) d)). "auto" picks sparse when ``density <= 0.1``. For tests and benchmarks.

    Examples
    --------
    >>> import numpy as np, sketchgn as sg
    >>> rng = np.random.default_rng(0)
    >>> X, W = rng.standard_normal((100, 8)), rng.standard_normal((256, 8))
    >>> a = rng.choice([-1.0, 1.0], 256)
    >>> J = sg.ReLUJacobian(X, W, a)
    >>> J.shape
    (100, 2048)
    >>> u = rng.standard_normal(100)
    >>> V = rng.standard_normal((256, 8))
    >>> bool(np.isclose(J.matvec(V) @ u, (V * J.rmatvec(u)).sum()))
    True
    """

    def __init__(self, X, W, a, *, threshold=0.0, n_threads=None, path="auto"):
        nt = resolve_n_threads(n_threads)
        X = _as_real_matrix(X, "X", 2)
        W = _as_real_matrix(W, "W", 2)
        a = _as_real_matrix(a, "a", 1)
        n, d = X.shape
        m = W.shape[0]
        if n == 0 or d == 0:
            raise ValueError(f"X must have at least one row and one column, got shape {X.shape}")
        if m == 0:
            raise ValueError(f"W must have at least one row (m >= 1 neurons), got shape {W.shape}")
        if W.shape[1] != d:
            raise ValueError(f"W must have shape (m, {d}) (d = X.shape[1]), got {W.shape}")
        if a.shape != (m,):
            raise ValueError(f"a must have shape ({m},) (m = W.shape[0]), got {a.shape}")
        if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (int, float, np.integer, np.floating)):
            raise TypeError(f"threshold must be a real number, got {type(threshold).__name__}")
        threshold = float(threshold)
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        if path not in _PATHS:
            raise ValueError(f"path must be one of {_PATHS}, got {path!r}")
        m_pad, d_pad = -(-m // 64) * 64, -(-d // 8) * 8
        check_memory(n * m_pad // 8 + 8 * (n * d_pad + m_pad * d_pad + n + m_pad),
                     f"the activation pattern of n * m = {n} * {m} entries (and the padded copies)")
        self._n_threads = nt
        self._impl = _core.ReLUJacobian(X, W, a, threshold, path, nt)
        self._forward = None

    # -- shape ---------------------------------------------------------------------------------
    @property
    def n(self):
        return self._impl.n

    @property
    def m(self):
        return self._impl.m

    @property
    def d(self):
        return self._impl.d

    @property
    def shape(self):
        return (self.n, self.m * self.d)

    @property
    def dtype(self):
        return np.dtype(np.float64)

    @property
    def threshold(self):
        return self._impl.threshold

    @property
    def density(self):
        """Fraction of active (sample, neuron) pairs."""
        return self._impl.density

    @property
    def nnz(self):
        """Number of active (sample, neuron) pairs."""
        return self._impl.nnz

    @property
    def path(self):
        """Kernel used for the products: "dense" or "sparse"."""
        return "sparse" if self._impl.is_sparse else "dense"

    def pattern(self):
        """The activation pattern D as an (n, m) bool array (materialised; for small problems)."""
        check_memory(self.n * self.m, "pattern() (an n x m bool array)")
        return self._impl.pattern()

    def __reduce__(self):
        raise TypeError(
            "a ReLUJacobian cannot be pickled (it holds a compiled pattern); pickle X, W, a and the "
            "threshold and build it again"
        )

    # -- products ------------------------------------------------------------------------------
    def _threads(self, n_threads):
        return self._n_threads if n_threads is None else resolve_n_threads(n_threads)

    def forward(self):
        """f(W, X), shape (n,) (computed with the pattern; a new array each call)."""
        return self._impl.forward()

    def _direction(self, V, name, k=None):
        """V as a contiguous float64 (k, m, d) block (k = None: a single direction)."""
        arr = as_float_array(V, name)
        m, d = self.m, self.d
        if k is None:
            if arr.shape == (m, d):
                out = arr[None]
            elif arr.shape == (m * d,):
                out = arr.reshape(1, m, d)
            else:
                raise ValueError(f"{name} must have shape ({m}, {d}) or ({m * d},), got {arr.shape}")
        else:
            if arr.ndim == 3 and arr.shape[:2] == (m, d):
                out = np.moveaxis(arr, 2, 0)
            elif arr.ndim == 2 and arr.shape[0] == m * d:
                out = arr.T.reshape(arr.shape[1], m, d)
            else:
                raise ValueError(f"{name} must have shape ({m}, {d}, k) or ({m * d}, k), got {arr.shape}")
        out = np.ascontiguousarray(out, dtype=np.float64)
        check_finite(out, name)
        return out

    def matvec(self, V, n_threads=None):
        """``J @ vec(V)``, shape (n,); V of shape (m, d) or (m*d,)."""
        Vb = self._direction(V, "V")
        return self._impl.matmat(Vb, self._threads(n_threads))[0]

    def matmat(self, Vs, n_threads=None):
        """``J @ Vs`` for k directions at once: Vs (m, d, k) or (m*d, k) -> (n, k)."""
        Vb = self._direction(Vs, "Vs", k=True)
        check_memory(8 * self.n * Vb.shape[0], "matmat's result")
        return self._impl.matmat(Vb, self._threads(n_threads)).T

    def _residual_block(self, U, name, single):
        arr = as_float_array(U, name)
        n = self.n
        if single:
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
            out = arr[None]
        else:
            if arr.ndim != 2 or arr.shape[0] != n:
                raise ValueError(f"{name} must have shape ({n}, k), got {arr.shape}")
            out = arr.T
        out = np.ascontiguousarray(out, dtype=np.float64)
        check_finite(out, name)
        return out

    def rmatvec(self, u, n_threads=None):
        """``J.T @ u`` reshaped to (m, d); u of shape (n,)."""
        Ub = self._residual_block(u, "u", True)
        return self._impl.rmatmat(Ub, self._threads(n_threads))[0]

    def rmatmat(self, U, n_threads=None):
        """``J.T @ U`` for k vectors: U (n, k) -> (m, d, k)."""
        Ub = self._residual_block(U, "U", False)
        check_memory(8 * self.m * self.d * Ub.shape[0], "rmatmat's result")
        return np.moveaxis(self._impl.rmatmat(Ub, self._threads(n_threads)), 0, 2)

    def gram(self, n_threads=None):
        """The exact ``J @ J.T``, shape (n, n), as ``((D D^T) o (X X^T)) / m``.

        Cost O(n^2 (m / 64 + d)) with popcounts of the bit pattern; memory n^2 doubles.
        """
        n = self.n
        check_memory(8 * n * n, f"gram() of n = {n} samples (an {n} x {n} matrix)")
        return self._impl.gram(self._threads(n_threads))

    def aslinearoperator(self):
        """A :class:`scipy.sparse.linalg.LinearOperator` of shape (n, m*d) (vectors flattened
        row-major)."""
        from scipy.sparse.linalg import LinearOperator

        m, d = self.m, self.d
        return LinearOperator(
            shape=self.shape,
            dtype=np.float64,
            matvec=lambda v: self.matvec(np.reshape(v, (m * d,))),
            rmatvec=lambda u: self.rmatvec(np.reshape(u, (self.n,))).reshape(-1),
            matmat=lambda V: self.matmat(V),
            rmatmat=lambda U: self.rmatmat(U).reshape(m * d, -1),
        )

    def __repr__(self):
        return (
            f"ReLUJacobian(n={self.n}, m={self.m}, d={self.d}, threshold={self.threshold}, "
            f"density={self.density:.3g}, path={self.path!r})"
        )
