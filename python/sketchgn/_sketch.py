"""Random sketches: the subsampled randomized Hadamard transform."""

from __future__ import annotations

import numpy as np

from . import _core
from ._validation import as_float_array, check_int, check_memory, check_seed, resolve_n_threads

__all__ = ["SRHT", "KroneckerSRHT"]

# to_dense() materialises n_out * n_in entries; beyond this it is surely a mistake.
_MAX_DENSE_ENTRIES = 1 << 27
# Grid cells of a KroneckerSRHT are indexed by int64.
_MAX_CELLS = 1 << 62


def _sampling_bytes(population, count):
    """Memory of drawing `count` of `population` indices (random.cpp): a partial shuffle of the whole
    population when count >= population / 2, else Floyd's algorithm with a hash set."""
    return 8 * population if 2 * count >= population else 80 * count


class SRHT:
    """Subsampled randomized Hadamard transform ``S = sqrt(n_pad / n_out) * P H D``.

    ``D`` is a diagonal of random signs, ``H`` the orthonormal Walsh-Hadamard matrix on the input
    zero-padded to ``n_pad`` (the next power of two >= ``n_in``), and ``P`` a uniform sample of
    ``n_out`` of its rows without replacement, so that ``E[S.T @ S] = I``. For a k-dimensional
    subspace and ``n_out`` a few times k, ``S`` is a subspace embedding.

    Parameters
    ----------
    n_in : int
        Length of the vectors sketched (>= 1).
    n_out : int
        Sketch size, ``1 <= n_out <= n_pad``.
    seed : int or numpy.random.Generator, default 0
        The signs and rows are a pure function of the seed: the same seed gives the same matrix on
        any machine and for any thread count.

    Examples
    --------
    >>> import numpy as np, sketchgn as sg
    >>> S = sg.SRHT(1000, 64, seed=1)
    >>> S.shape
    (64, 1000)
    >>> (S @ np.ones(1000)).shape
    (64,)
    """

    def __init__(self, n_in, n_out, *, seed=0):
        n_in = check_int(n_in, "n_in", minimum=1, maximum=2**40)
        n_out = check_int(n_out, "n_out", minimum=1)
        n_pad = 1 << (n_in - 1).bit_length()
        if n_out > n_pad:
            raise ValueError(
                f"n_out must be <= n_pad = {n_pad} (n_in = {n_in} padded to a power of two), got {n_out}"
            )
        self._seed = check_seed(seed)
        check_memory(n_in + _sampling_bytes(n_pad, n_out),
                     f"SRHT(n_in={n_in}, n_out={n_out}) (its {n_in} signs and {n_out} sampled rows)")
        self._impl = _core.SRHT(n_in, n_out, self._seed)

    @property
    def shape(self):
        return (self._impl.n_out, self._impl.n_in)

    @property
    def n_in(self):
        return self._impl.n_in

    @property
    def n_out(self):
        return self._impl.n_out

    @property
    def n_pad(self):
        return self._impl.n_pad

    @property
    def rows(self):
        """Sorted indices of the rows of ``H`` that are kept (length n_out)."""
        return self._impl.rows

    @property
    def signs(self):
        """The diagonal of ``D`` (length n_in, entries +1 or -1)."""
        return self._impl.signs

    def apply(self, A, n_threads=None):
        """Sketch the columns of ``A``: shape ``(n_in,)`` -> ``(n_out,)``, ``(n_in, k)`` -> ``(n_out, k)``.

        float32 input is computed in float32, integers are converted to float64.
        """
        nt = resolve_n_threads(n_threads)
        arr = as_float_array(A, "A")
        if arr.ndim not in (1, 2):  # 0-d included
            raise ValueError(f"A must have shape (n_in,) or (n_in, k), got an array of shape {arr.shape}")
        if arr.shape[0] != self.n_in:
            raise ValueError(f"A must have {self.n_in} rows (n_in), got shape {arr.shape}")
        vector = arr.ndim == 1
        k = 1 if vector else arr.shape[1]
        check_memory(arr.itemsize * k * (self.n_pad + self.n_out), "SRHT.apply (its work array and result)")
        out = self._impl.apply(arr.reshape(self.n_in, -1) if vector else arr, nt)
        return out[:, 0] if vector else out

    def __matmul__(self, A):
        return self.apply(A)

    def to_dense(self):
        """The sketch as a dense ``(n_out, n_in)`` float64 array (for small sizes)."""
        entries = self.n_out * self.n_in
        if entries > _MAX_DENSE_ENTRIES:
            raise ValueError(
                f"to_dense() would materialise {self.n_out} x {self.n_in} = {entries} entries; "
                f"it is meant for small sketches (at most {_MAX_DENSE_ENTRIES})"
            )
        return self.apply(np.eye(self.n_in))

    def __repr__(self):
        return f"SRHT(n_in={self.n_in}, n_out={self.n_out}, seed={self._seed})"

    def __reduce__(self):
        return (_rebuild_srht, (self.n_in, self.n_out, self._seed))


def _rebuild_srht(n_in, n_out, seed):
    return SRHT(n_in, n_out, seed=seed)


class KroneckerSRHT:
    """Kronecker ("tensor") SRHT: sketches vectors of the form ``u (x) x`` without forming them.

    Row j of the sketch is ``sqrt(m_pad d_pad / n_out) * (H D1 u)[p_j] * (H D2 x)[q_j]`` with ``H``
    orthonormal Walsh-Hadamard matrices of sizes ``m_pad``, ``d_pad`` (m and d padded to powers of
    two), ``D1``, ``D2`` random signs and ``(p_j, q_j)`` a uniform sample of ``n_out`` distinct cells
    of the ``m_pad x d_pad`` grid. ``E[S.T @ S] = I``. Sketching k columns ``U[i] (x) X[i]`` costs
    ``O(k (m log m + d log d) + n_out k)`` instead of ``O(k m d log(m d))``.

    Parameters
    ----------
    m, d : int
        The two factor lengths (vectors of length ``m * d``, row-major index ``r * d + j``).
    n_out : int
        Sketch size, ``1 <= n_out <= m_pad * d_pad``.
    seed : int or numpy.random.Generator, default 0
        Fixes the signs and cells on every machine and for every thread count.
    """

    def __init__(self, m, d, n_out, *, seed=0):
        m = check_int(m, "m", minimum=1, maximum=2**40)
        d = check_int(d, "d", minimum=1, maximum=2**40)
        n_out = check_int(n_out, "n_out", minimum=1)
        m_pad = 1 << (m - 1).bit_length()
        d_pad = 1 << (d - 1).bit_length()
        if n_out > m_pad * d_pad:
            raise ValueError(f"n_out must be <= m_pad * d_pad = {m_pad * d_pad}, got {n_out}")
        self._seed = check_seed(seed)
        if m_pad * d_pad > _MAX_CELLS:
            raise ValueError(f"m_pad * d_pad = {m_pad} x {d_pad} cells exceeds the supported {_MAX_CELLS}")
        check_memory(m + d + 16 * n_out + _sampling_bytes(m_pad * d_pad, n_out),
                     f"KroneckerSRHT(m={m}, d={d}, n_out={n_out}) (its signs and {n_out} sampled cells)")
        self._impl = _core.KroneckerSRHT(m, d, n_out, self._seed)

    @property
    def shape(self):
        return (self._impl.n_out, self._impl.m * self._impl.d)

    @property
    def m(self):
        return self._impl.m

    @property
    def d(self):
        return self._impl.d

    @property
    def n_out(self):
        return self._impl.n_out

    @property
    def cells(self):
        """The sampled cells as two arrays ``(p, q)`` (row of ``H D1``, row of ``H D2``)."""
        return self._impl.rows_u, self._impl.rows_x

    @property
    def signs(self):
        """The diagonals of ``D1`` (length m) and ``D2`` (length d)."""
        return self._impl.signs_u, self._impl.signs_x

    def apply_kron(self, U, X, n_threads=None):
        """Sketch of the k columns ``U[i] (x) X[i]``: U (k, m), X (k, d) -> (n_out, k)."""
        nt = resolve_n_threads(n_threads)
        U = np.ascontiguousarray(as_float_array(U, "U"), dtype=np.float64)
        X = np.ascontiguousarray(as_float_array(X, "X"), dtype=np.float64)
        if U.ndim != 2 or U.shape[1] != self.m:
            raise ValueError(f"U must have shape (k, {self.m}), got {U.shape}")
        if X.ndim != 2 or X.shape[1] != self.d:
            raise ValueError(f"X must have shape (k, {self.d}), got {X.shape}")
        if U.shape[0] != X.shape[0]:
            raise ValueError(f"U and X must have the same number of rows k, got {U.shape[0]} and {X.shape[0]}")
        return self._impl.apply_kron(U, X, nt)

    def apply(self, A, n_threads=None):
        """Sketch ordinary columns: A (m*d,) -> (n_out,), (m*d, k) -> (n_out, k)."""
        nt = resolve_n_threads(n_threads)
        arr = np.ascontiguousarray(as_float_array(A, "A"), dtype=np.float64)
        md = self.m * self.d
        if arr.ndim not in (1, 2) or arr.shape[0] != md:
            raise ValueError(f"A must have shape ({md},) or ({md}, k), got {arr.shape}")
        out = self._impl.apply(arr.reshape(md, -1), nt)
        return out[:, 0] if arr.ndim == 1 else out

    def __matmul__(self, A):
        return self.apply(A)

    def to_dense(self):
        """The sketch as a dense ``(n_out, m*d)`` array (for small sizes)."""
        md = self.m * self.d
        if self.n_out * md > _MAX_DENSE_ENTRIES:
            raise ValueError(f"to_dense() would materialise {self.n_out} x {md} entries")
        return self.apply(np.eye(md))

    def __repr__(self):
        return f"KroneckerSRHT(m={self.m}, d={self.d}, n_out={self.n_out}, seed={self._seed})"

    def __reduce__(self):
        return (_rebuild_kronecker, (self.m, self.d, self.n_out, self._seed))


def _rebuild_kronecker(m, d, n_out, seed):
    return KroneckerSRHT(m, d, n_out, seed=seed)
