"""sketchgn: sketch-preconditioned Gauss-Newton training of wide two-layer ReLU networks.

Implements van den Brand, Peng, Song and Weinstein, "Training (Overparametrized) Neural Networks in
Near-Linear Time" (ITCS 2021, arXiv:2006.11648), with its building blocks as public API: the fast
Walsh-Hadamard transform and randomized Hadamard sketches.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from . import _core

# Applies SKETCHGN_SIMD now: an unknown value, or a path this CPU lacks, fails the import with a
# ValueError that says so (rather than an illegal instruction later).
_core.simd_level()

from ._info import build_info  # noqa: E402
from ._jacobian import ReLUJacobian  # noqa: E402
from ._sketch import SRHT, KroneckerSRHT  # noqa: E402
from ._solve import SketchPreconditioner, SolveResult, solve_gn  # noqa: E402
from ._estimator import GaussNewtonRegressor  # noqa: E402
from ._transforms import fwht  # noqa: E402

try:
    __version__ = _version("sketchgn")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = build_info()["version"]

__all__ = [
    "__version__",
    "build_info",
    "fwht",
    "SRHT",
    "KroneckerSRHT",
    "ReLUJacobian",
    "SketchPreconditioner",
    "SolveResult",
    "solve_gn",
    "GaussNewtonRegressor",
]
