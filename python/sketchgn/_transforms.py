"""The fast Walsh-Hadamard transform."""

from __future__ import annotations

import numpy as np

from . import _core
from ._validation import _CORES, _USEFUL_THREADS, as_float_array, resolve_n_threads

__all__ = ["fwht"]

_FLOAT = (np.dtype(np.float32), np.dtype(np.float64))


def _fwht_checked(x, *, normalize=False, out=None, n_threads=None):
    """Validating implementation of :func:`fwht` (its fallback for anything but the fast path).

    Walsh-Hadamard transform along the last axis.

    Computes ``H_n @ x[..., :]`` for every leading index, where ``H_n`` is the Hadamard matrix in
    natural (Sylvester) order, ``H_1 = [1]`` and ``H_2n = [[H_n, H_n], [H_n, -H_n]]`` (the matrix of
    ``scipy.linalg.hadamard``). Cost O(n log n) per transform.

    Parameters
    ----------
    x : array_like, shape (..., n)
        n must be a power of two (n >= 1). float32 and float64 are computed in their own precision;
        integer and bool input is converted to float64. Non-contiguous input is copied once.
    normalize : bool, default False
        Scale by ``1/sqrt(n)``, which makes the transform orthonormal and an involution.
    out : ndarray, optional
        C-contiguous, writeable array with the shape and dtype of the result. May be ``x`` itself for
        an in-place transform.
    n_threads : int or None
        None or -1: all cores this process may use; k > 0: k threads. Threads share the batch and the
        cache-sized blocks of one large transform. The result is bitwise identical for any value.

    Returns
    -------
    ndarray
        ``out`` if given, else a new array.
    """
    nt = resolve_n_threads(n_threads)
    if type(normalize) is not bool:
        if not isinstance(normalize, np.bool_):
            raise TypeError(f"normalize must be a bool, got {type(normalize).__name__} {normalize!r}")
        normalize = bool(normalize)

    if type(x) is np.ndarray and x.dtype in _FLOAT and x.flags.c_contiguous and x.flags.aligned and x.ndim:
        src = x
    else:
        if np.ndim(x) == 0:
            raise ValueError(f"x must have at least one dimension, got a 0-d {type(x).__name__}")
        try:
            src = as_float_array(x, "x")
        except TypeError as exc:
            raise TypeError(f"{exc} (integers and bools are converted to float64)") from None
    n = src.shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(f"x must have a power-of-two length (>= 1) along its last axis, got {n}")

    if out is None:
        # A copy made above (non-contiguous or converted input) can be transformed in place.
        dst = src if src is not x and not np.may_share_memory(src, x) else np.empty_like(src)
    else:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
        if out.dtype != src.dtype:
            raise TypeError(f"out must have dtype {src.dtype} (the dtype of the result), got {out.dtype}")
        if out.shape != src.shape:
            raise ValueError(f"out must have shape {src.shape}, got {out.shape}")
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous")
        if not out.flags.writeable:
            raise ValueError("out must be writeable (it is read-only)")
        if out is not src and np.may_share_memory(out, src):
            # Partial overlap (or out is a view of x): transform from a private copy.
            src = src.copy()
        dst = out
    if not dst.flags.aligned:
        # The core reads and writes whole elements: transform into an aligned array, then copy the
        # result into the caller's out (which is written, as asked).
        tmp = np.empty_like(src)
        if src.size:
            _core.fwht(src, tmp, normalize, nt)
        dst[...] = tmp
        return dst
    if src.size:
        _core.fwht(src, dst, normalize, nt)
    return dst


# The public function is a C-level entry point with a fast path for arguments that need no checking
# or conversion; everything else is passed to _fwht_checked (see cpp/bindings/bind_transforms.cpp).
_core.configure_fwht_entry(_fwht_checked, _CORES, _USEFUL_THREADS)
fwht = _core.fwht_entry
