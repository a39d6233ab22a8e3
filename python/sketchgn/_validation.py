"""Argument checks shared by the public functions.

Every check raises TypeError (wrong kind of object or dtype) or ValueError (shape, value) with a
message that names the parameter, what was expected and what was given.
"""

from __future__ import annotations

import numbers
import operator
import os

import numpy as np

__all__ = [
    "check_memory",
    "resolve_n_threads",
    "check_int",
    "check_seed",
    "as_float_array",
    "check_finite",
]


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


_CORES = _available_cores()


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not POSIX
        return 1 << 46


_PHYSICAL_MEMORY = _physical_memory()


def check_memory(nbytes: int, what: str) -> None:
    """MemoryError, before allocating, for a request larger than this machine's physical memory.

    (Linux overcommits: a huge allocation can succeed and the process be killed later when it is
    touched. Asking first turns that into an exception the caller can handle.)
    """
    if nbytes > _PHYSICAL_MEMORY:
        raise MemoryError(
            f"{what} needs {nbytes / 2**30:.1f} GiB, more than this machine's "
            f"{_PHYSICAL_MEMORY / 2**30:.1f} GiB of memory"
        )
# More threads than this is surely a mistake (and would not fit the C++ int).
_MAX_THREADS = 1 << 16
# Threads actually started at most: n_threads above this is capped to it.
_USEFUL_THREADS = 4 * _CORES


def resolve_n_threads(n_threads) -> int:
    """scikit-learn semantics: None or -1 = every core this process may use, k > 0 = k threads
    (capped at 4 per usable core)."""
    if n_threads is None:
        return _CORES
    if isinstance(n_threads, (bool, np.bool_)) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"n_threads must be None or an int, got {type(n_threads).__name__} {n_threads!r}")
    n_threads = int(n_threads)
    if n_threads == -1:
        return _CORES
    if n_threads < 1 or n_threads > _MAX_THREADS:
        raise ValueError(
            f"n_threads must be None, -1 or a positive int <= {_MAX_THREADS}, got {n_threads}"
        )
    # More threads than a few per core only add start-up and barrier costs (the kernels are
    # compute- or memory-bound; results do not depend on the count), so the request is capped.
    return min(n_threads, _USEFUL_THREADS)


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (Python or NumPy, not bool or float) within [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_seed(seed, name: str = "seed") -> int:
    """An int in [0, 2**64) or a numpy.random.Generator (one 63-bit integer is drawn from it)."""
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63, dtype=np.int64))
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"{name} must be an int or a numpy.random.Generator, got {type(seed).__name__} {seed!r}"
        )
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"{name} must be in [0, 2**64), got {seed}")
    return seed


_FLOAT_KINDS = {np.dtype(np.float32), np.dtype(np.float64)}


def as_float_array(x, name: str, *, dtypes=("float32", "float64")) -> np.ndarray:
    """C-contiguous float32/float64 view of x (at most one copy). Integers and bools become float64;
    float16, complex, object and anything else is a TypeError."""
    arr = np.asarray(x)
    dt = arr.dtype
    if dt.kind == "f" and dt.itemsize in (4, 8) and not dt.isnative:
        dt = dt.newbyteorder("=")  # byte-swapped float32/float64: one converting copy
    if dt in _FLOAT_KINDS and dt.name in dtypes:
        target = dt
    elif dt.kind in "biu":
        target = np.dtype(np.float64)
    else:
        allowed = " or ".join(dtypes)
        raise TypeError(f"{name} must have dtype {allowed} (or an integer dtype), got {arr.dtype}")
    if arr.ndim == 0:  # np.ascontiguousarray would turn it into shape (1,)
        return np.asarray(arr, dtype=target)
    out = np.ascontiguousarray(arr, dtype=target)
    if not out.flags.aligned:  # e.g. np.frombuffer at an odd offset: the C++ core reads whole doubles
        out = out.copy()
    return out


def check_finite(arr: np.ndarray, name: str) -> None:
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} must not contain NaN or Inf")
