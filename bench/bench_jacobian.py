#!/usr/bin/env python3
"""Benchmark of sketchgn.ReLUJacobian's products against NumPy/BLAS doing the same mathematics, in one run.

For each (n, m, d), with X (n, d) of unit-norm rows, W ~ N(0, I) (m, d), a in {-1, +1}^m, the pattern
D = 1[X W^T > threshold] (n, m), and a_s = a / sqrt(m):

    product   sketchgn                   NumPy "expression" (the target)        NumPy "reassociated" (info)
    J v       J.matvec(V)                ((X @ V.T) * D) @ a_s                  rowsum(X * (D @ (a_s * V)))
    J^T u     J.rmatvec(u)               (D * u[:, None]).T @ X * a_s[:, None]  (D.T @ (u * X)) * a_s[:, None]
    J Vs      J.matmat(Vs), k = 8        the expression for each column         one GEMM D @ (a_s * Vs)
    J^T U     J.rmatmat(U), k = 8        the expression for each column         one GEMM D.T @ (U * X)
    J J^T     J.gram()                   (D @ D.T) * (X @ X.T) / m, D as float64 and as float32 (exact: 0/1)

and the GEMM X @ V.T (2 n m d flops, the flop count of one product) as the flop-rate reference. NumPy gets
D precomputed (as float64/float32 arrays; the sketchgn operator is built beforehand too).

Targets: matvec and rmatvec >= 1.5x faster than the NumPy expression and >= 0.6 of the GEMM flop rate;
gram() <= 1.25 x the best NumPy Gram; with threshold 1.645 (density ~5%) path="sparse" >= 8x faster
than path="dense" (also shown at 10% and 20%); the peak extra memory of matvec/rmatvec (RSS growth in
a fresh subprocess, beyond the output array) below n m / 4 bytes.

Threads: sketchgn with n_threads=None (every core), NumPy with its default BLAS threads; both reported.
The machine this was written for sets OPENBLAS_CORETYPE=Haswell and OPENBLAS_L2_SIZE, which slow a
current OpenBLAS down; the script re-executes itself once without them (before importing numpy) unless
--keep-openblas-env is given, and prints the OpenBLAS kernel that runs.

    python bench/bench_jacobian.py                  # full run (~10-20 minutes on 2 cores)
    python bench/bench_jacobian.py --quick          # 3 shapes, fewer samples
    python bench/bench_jacobian.py --json out.json  # default bench/results/jacobian.json
    python bench/bench_jacobian.py --summarize-cpp bench/results/jacobian_cpp.json   # C++ results table
"""

from __future__ import annotations

import json
import os
import sys

_OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_REMOVED_ENV = "SKETCHGN_BENCH_REMOVED_ENV"  # set in the re-executed process: what was removed


def _reexec_without_openblas_overrides():
    """Run this script again with the OpenBLAS overrides unset (OpenBLAS reads them when it loads)."""
    if __name__ != "__main__" or "--keep-openblas-env" in sys.argv or _REMOVED_ENV in os.environ:
        return
    removed = {k: os.environ[k] for k in _OPENBLAS_OVERRIDES if k in os.environ}
    if not removed or "numpy" in sys.modules:
        return
    env = {k: v for k, v in os.environ.items() if k not in removed}
    env[_REMOVED_ENV] = json.dumps(removed)
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


_reexec_without_openblas_overrides()

import argparse  # noqa: E402
import collections  # noqa: E402
import ctypes  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "jacobian.json"

TARGET_SPEEDUP = 1.5  # matvec / rmatvec vs the NumPy expression
TARGET_GEMM_FRACTION = 0.6  # their flop rate / numpy GEMM's (X @ V.T)
TARGET_GRAM_RATIO = 1.25  # gram() time / best NumPy Gram time
TARGET_SPARSE_SPEEDUP = 8.0  # path="sparse" vs path="dense" at density ~5%
TARGET_MEMORY_FRACTION = 0.25  # peak extra bytes / (n m)
K = 8  # columns of matmat / rmatmat
SPARSE_DENSITIES = (0.05, 0.10, 0.20)
SEED = 20240601

FULL_SHAPES = [(n, m, d) for n in (2000, 8000) for m in (4096, 16384) for d in (16, 64)]
QUICK_SHAPES = [(2000, 4096, 16), (2000, 16384, 64), (8000, 4096, 16)]


# ------------------------------------------------------------------------------------------------
# Problem data.


def make_problem(n, m, d, seed=SEED):
    """X (unit-norm rows), W, a, and the directions V (m, d), u (n,), Vs (m, d, K), U (n, K)."""
    rng = np.random.default_rng([seed, n, m, d])
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    W = rng.standard_normal((m, d))
    a = rng.choice([-1.0, 1.0], m)
    return {
        "X": X, "W": W, "a": a,
        "V": rng.standard_normal((m, d)), "u": rng.standard_normal(n),
        "Vs": rng.standard_normal((m, d, K)), "U": rng.standard_normal((n, K)),
    }


def threshold_for_density(p):
    """w.x ~ N(0, 1) for unit-norm x and w ~ N(0, I): P(w.x > t) = p."""
    return statistics.NormalDist().inv_cdf(1.0 - p)


# NumPy versions of each product (D float64 (n, m), a_s = a / sqrt(m)).
def np_matvec_expr(X, D, a_s, V):
    return ((X @ V.T) * D) @ a_s


def np_matvec_reassoc(X, D, a_s, V):
    return np.einsum("ij,ij->i", X, D @ (a_s[:, None] * V))


def np_rmatvec_expr(X, D, a_s, u):
    return (D * u[:, None]).T @ X * a_s[:, None]


def np_rmatvec_reassoc(X, D, a_s, u):
    return (D.T @ (u[:, None] * X)) * a_s[:, None]


def np_matmat_loop(X, D, a_s, Vs):
    return np.stack([np_matvec_expr(X, D, a_s, Vs[:, :, j]) for j in range(Vs.shape[2])], axis=1)


def np_matmat_gemm(X, D, a_s, Vs):
    m, d, k = Vs.shape
    T = D @ (a_s[:, None] * Vs.reshape(m, d * k))
    return np.einsum("id,idk->ik", X, T.reshape(-1, d, k))


def np_rmatmat_loop(X, D, a_s, U):
    return np.stack([np_rmatvec_expr(X, D, a_s, U[:, j]) for j in range(U.shape[1])], axis=2)


def np_rmatmat_gemm(X, D, a_s, U):
    n, d = X.shape
    k = U.shape[1]
    G = D.T @ (U[:, None, :] * X[:, :, None]).reshape(n, d * k)
    return G.reshape(-1, d, k) * a_s[:, None, None]


def np_gram(X, D):
    return (D @ D.T) * (X @ X.T) / D.shape[1]


def rel_err(x, ref):
    scale = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(np.asarray(x) - ref))) / scale


# ------------------------------------------------------------------------------------------------
# Timing: every method of a group is warmed up, then the methods take turns sample by sample (a
# noisy spell hits all of them) and the best sample counts. A sample is >= min_time of back-to-back
# calls; a method slower than budget/2 per call is timed once (its warm-up call is the sample).


def _run(fn, k):
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(k):
        fn()
    return time.perf_counter() - w0, time.process_time() - c0


def measure(methods, *, repeats, min_time, budget):
    """{label: {"best_s", "median_s", "samples_s", "inner", "cpu_over_wall", "timed_once"}}."""
    recs, plan = {}, {}
    for label, fn in methods:
        wall, cpu = _run(fn, 1)
        rec = {"first_call_s": wall, "samples_s": [], "inner": 1, "cpu_s": 0.0, "wall_s": 0.0, "timed_once": False}
        if 2 * wall > budget:
            rec.update(samples_s=[wall], cpu_s=cpu, wall_s=wall, timed_once=True)
            plan[label] = 0
        else:
            if wall < min_time / 4:  # a second estimate: the first call paid for warming up
                wall = _run(fn, 1)[0]
            k = max(1, math.ceil(min_time / max(wall, 1e-9)))
            rec["inner"] = k
            plan[label] = max(2, min(repeats, int(budget / max(k * wall, 1e-9))))
        recs[label] = rec
    for r in range(max(plan.values(), default=0)):
        shift = r % len(methods)
        for label, fn in methods[shift:] + methods[:shift]:
            if r >= plan[label]:
                continue
            rec = recs[label]
            wall, cpu = _run(fn, rec["inner"])
            rec["samples_s"].append(wall / rec["inner"])
            rec["wall_s"] += wall
            rec["cpu_s"] += cpu
    for rec in recs.values():
        rec["best_s"] = min(rec["samples_s"])
        rec["median_s"] = statistics.median(rec["samples_s"])
        rec["cpu_over_wall"] = rec.pop("cpu_s") / max(rec.pop("wall_s"), 1e-12)
    return recs


# ------------------------------------------------------------------------------------------------
# Memory: a fresh subprocess per shape builds the operators, then for each product: one warm-up call,
# free, malloc_trim, reset the RSS high-water mark (/proc/self/clear_refs = 5), one call; the extra
# is VmHWM - VmRSS before the call. A second call under tracemalloc gives the traced peak (NumPy's
# allocations are traced; the C++ core's scratch is not, only RSS sees it).


def _proc_status_kib(*keys):
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0])
    return out


class _PeakRSS:
    """Peak RSS over a block: the kernel's high-water mark when it can be reset, else psutil polling."""

    def __init__(self):
        self.method = None
        self._stop = None

    def __enter__(self):
        self.rss0 = _proc_status_kib("VmRSS")["VmRSS"] * 1024
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.method = "VmHWM after clear_refs"
        except OSError:
            import psutil

            self.method = "psutil RSS polled every 0.2 ms"
            proc, self.peak = psutil.Process(), self.rss0
            self._stop = threading.Event()

            def poll():
                while not self._stop.is_set():
                    self.peak = max(self.peak, proc.memory_info().rss)
                    time.sleep(0.0002)

            self._thread = threading.Thread(target=poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._stop is None:
            self.peak = _proc_status_kib("VmHWM")["VmHWM"] * 1024
        else:
            self._stop.set()
            self._thread.join()
        self.extra = self.peak - self.rss0
        return False


def _trim():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_probe(spec):
    """Runs in the subprocess: {label: {"rss_extra_bytes", "traced_peak_bytes", "out_bytes"}}."""
    import sketchgn as sg

    n, m, d = spec["n"], spec["m"], spec["d"]
    p = make_problem(n, m, d)
    X, a, V, u = p["X"], p["a"], p["V"], p["u"]
    a_s = a / math.sqrt(m)
    Jd = sg.ReLUJacobian(X, p["W"], a, path="dense")
    Js = sg.ReLUJacobian(X, p["W"], a, threshold=spec["sparse_threshold"], path="sparse")
    D = Jd.pattern().astype(np.float64)
    cases = [
        ("sg_dense_matvec", lambda: Jd.matvec(V)),
        ("sg_dense_rmatvec", lambda: Jd.rmatvec(u)),
        ("sg_sparse_matvec", lambda: Js.matvec(V)),
        ("sg_sparse_rmatvec", lambda: Js.rmatvec(u)),
        ("np_expr_matvec", lambda: np_matvec_expr(X, D, a_s, V)),
        ("np_expr_rmatvec", lambda: np_rmatvec_expr(X, D, a_s, u)),
        ("np_reassoc_matvec", lambda: np_matvec_reassoc(X, D, a_s, V)),
        ("np_reassoc_rmatvec", lambda: np_rmatvec_reassoc(X, D, a_s, u)),
    ]
    res = {"sparse_density": Js.density}
    for label, fn in cases:
        out = fn()  # warm-up: threads started, first-touch done
        out_bytes = out.nbytes
        del out
        _trim()
        with _PeakRSS() as peak:
            out = fn()
        del out
        _trim()
        tracemalloc.start()
        tracemalloc.reset_peak()
        out = fn()
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del out
        _trim()
        res[label] = {"rss_extra_bytes": peak.extra, "traced_peak_bytes": traced_peak, "out_bytes": out_bytes,
                      "rss_method": peak.method}
    return res


def run_memory_probe(n, m, d, sparse_threshold):
    spec = json.dumps({"n": n, "m": m, "d": d, "sparse_threshold": sparse_threshold})
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-probe", spec],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip()[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# Machine.


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_idle_share(interval=0.5):
    def snap():
        with open("/proc/stat") as fh:
            v = [int(t) for t in fh.readline().split()[1:]]
        return v[3] + v[4], sum(v[:8])

    try:
        i0, t0 = snap()
        time.sleep(interval)
        i1, t1 = snap()
    except (OSError, ValueError, IndexError):
        return None
    return (i1 - i0) / max(t1 - t0, 1)


def wait_for_idle(max_wait, what):
    """Wait up to max_wait seconds for the CPUs to be >= 85% idle (shared machines)."""
    if max_wait <= 0:
        return None
    deadline = time.monotonic() + max_wait
    share = _cpu_idle_share()
    while share is not None and share < 0.85 and time.monotonic() < deadline:
        share = _cpu_idle_share()
    if share is not None and share < 0.85:
        print(f"note: CPUs only {share:.0%} idle after waiting {max_wait:g} s; measuring {what} anyway")
    return share


def _git_state():
    try:
        head = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(HERE.parent), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"head": head or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"head": None, "dirty": None}


def machine_info(sg):
    from threadpoolctl import threadpool_info

    try:
        from sketchgn._validation import resolve_n_threads

        sg_threads = resolve_n_threads(None)
    except ImportError:
        sg_threads = len(os.sched_getaffinity(0))
    try:
        np_config = np.show_config(mode="dicts")
    except TypeError:  # numpy < 1.25
        np_config = None
    pools = threadpool_info()
    blas = [p for p in pools if p.get("user_api") == "blas"]
    core_file = Path(sg._core.__file__)
    try:
        import psutil

        mem_total = psutil.virtual_memory().total
    except ImportError:
        mem_total = None
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": mem_total,
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "sketchgn_version": sg.__version__,
        "build_info": sg.build_info(),
        "core_module": str(core_file),
        "core_module_mtime": datetime.datetime.fromtimestamp(core_file.stat().st_mtime).isoformat(timespec="seconds"),
        "source_tree": _git_state(),
        "sketchgn_threads": sg_threads,
        "numpy": np.__version__,
        "numpy_config": np_config,
        "threadpool_info": pools,
        "blas": blas,
        "openblas_env_removed": json.loads(os.environ.get(_REMOVED_ENV, "{}")),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_", "SKETCHGN_", "OPENBLAS_", "MKL_"))},
    }


# ------------------------------------------------------------------------------------------------
# Formatting.


def fmt_time(s):
    if s is None:
        return "-"
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= f:
            return f"{s / f:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_bytes(b):
    if b is None:
        return "-"
    for unit, f in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if abs(b) >= 1000 * (f >> 10):
            return f"{b / f:.3g} {unit}"
    return f"{b} B"


def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _fits(bytes_needed):
    try:
        import psutil

        return bytes_needed < 0.7 * psutil.virtual_memory().available
    except ImportError:
        return True


# ------------------------------------------------------------------------------------------------
# One shape.


def bench_shape(sg, n, m, d, args, timing):
    p = make_problem(n, m, d)
    X, W, a, V, u, Vs, U = (p[k] for k in ("X", "W", "a", "V", "u", "Vs", "U"))
    a_s = a / math.sqrt(m)
    flops = 2.0 * n * m * d
    row = {"n": n, "m": m, "d": d, "flops_per_product": flops}

    t0 = time.perf_counter()
    J = sg.ReLUJacobian(X, W, a)
    row["sg_build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    D_np = (X @ W.T) > 0.0
    row["np_pattern_s"] = time.perf_counter() - t0
    D_bool = J.pattern()
    row["pattern_mismatches_vs_numpy"] = int(np.count_nonzero(D_bool != D_np))
    del D_np
    D = D_bool.astype(np.float64)
    del D_bool
    row.update(density=J.density, path=J.path)

    # Same results first (NumPy is given sketchgn's pattern, so only rounding differs).
    errs = {
        "matvec": rel_err(J.matvec(V), np_matvec_reassoc(X, D, a_s, V)),
        "rmatvec": rel_err(J.rmatvec(u), np_rmatvec_reassoc(X, D, a_s, u)),
        "matmat": rel_err(J.matmat(Vs), np_matmat_gemm(X, D, a_s, Vs)),
        "rmatmat": rel_err(J.rmatmat(U), np_rmatmat_gemm(X, D, a_s, U)),
        "np_expr_vs_reassoc_matvec": rel_err(np_matvec_expr(X, D, a_s, V), np_matvec_reassoc(X, D, a_s, V)),
    }
    row["rel_err"] = errs

    groups = {
        "matvec": [
            ("sg", lambda: J.matvec(V)),
            ("np_expr", lambda: np_matvec_expr(X, D, a_s, V)),
            ("np_reassoc", lambda: np_matvec_reassoc(X, D, a_s, V)),
            ("np_gemm_XVt", lambda: X @ V.T),
        ],
        "rmatvec": [
            ("sg", lambda: J.rmatvec(u)),
            ("np_expr", lambda: np_rmatvec_expr(X, D, a_s, u)),
            ("np_reassoc", lambda: np_rmatvec_reassoc(X, D, a_s, u)),
        ],
        "matmat": [
            ("sg", lambda: J.matmat(Vs)),
            ("np_loop", lambda: np_matmat_loop(X, D, a_s, Vs)),
            ("np_gemm", lambda: np_matmat_gemm(X, D, a_s, Vs)),
        ],
        "rmatmat": [
            ("sg", lambda: J.rmatmat(U)),
            ("np_loop", lambda: np_rmatmat_loop(X, D, a_s, U)),
            ("np_gemm", lambda: np_rmatmat_gemm(X, D, a_s, U)),
        ],
    }
    for name, methods in groups.items():
        wait_for_idle(args.wait_idle, f"{name} at n={n} m={m} d={d}")
        row[name] = measure(methods, **timing)

    # Gram: sketchgn vs (D @ D.T) * (X @ X.T) / m with D as float64 and float32.
    gram_need = 4 * n * n * 8 + n * m * 4
    if n <= 8000 and _fits(gram_need):
        D32 = D.astype(np.float32)
        G = J.gram()
        row["rel_err"]["gram_vs_f64"] = rel_err(G, np_gram(X, D))
        row["rel_err"]["gram_vs_f32"] = rel_err(G, np_gram(X, D32))
        del G
        gc.collect()
        wait_for_idle(args.wait_idle, f"gram at n={n} m={m} d={d}")
        row["gram"] = measure([
            ("sg", J.gram),
            ("np_f64", lambda: np_gram(X, D)),
            ("np_f32", lambda: np_gram(X, D32)),
        ], repeats=timing["repeats"], min_time=timing["min_time"], budget=args.gram_budget)
        del D32
    else:
        row["gram"] = None
        row["gram_skipped"] = f"n={n} > 8000 or {fmt_bytes(gram_need)} does not fit in free memory"
    gc.collect()

    # Sparse patterns: path="sparse" vs path="dense" (and scipy.sparse for reference).
    try:
        import scipy.sparse as sps
    except ImportError:
        sps = None
    sparse_rows = []
    for target_density in SPARSE_DENSITIES:
        thr = threshold_for_density(target_density)
        Jd = sg.ReLUJacobian(X, W, a, threshold=thr, path="dense")
        t0 = time.perf_counter()
        Js = sg.ReLUJacobian(X, W, a, threshold=thr, path="sparse")
        build_sparse = time.perf_counter() - t0
        auto_path = sg.ReLUJacobian(X, W, a, threshold=thr).path
        srow = {"target_density": target_density, "threshold": thr, "density": Js.density, "auto_path": auto_path,
                "sg_sparse_build_s": build_sparse}
        # Also on one thread: the kernels' own ratio, unaffected by a busy second core.
        methods_mv = [("sparse", lambda: Js.matvec(V)), ("dense", lambda: Jd.matvec(V)),
                      ("sparse_1t", lambda: Js.matvec(V, n_threads=1)), ("dense_1t", lambda: Jd.matvec(V, n_threads=1))]
        methods_rmv = [("sparse", lambda: Js.rmatvec(u)), ("dense", lambda: Jd.rmatvec(u)),
                       ("sparse_1t", lambda: Js.rmatvec(u, n_threads=1)),
                       ("dense_1t", lambda: Jd.rmatvec(u, n_threads=1))]
        if sps is not None:
            Dsp = sps.csr_matrix(Js.pattern(), dtype=np.float64)
            DspT = Dsp.T.tocsr()
            srow["err_sparse_vs_dense"] = max(rel_err(Js.matvec(V), Jd.matvec(V)), rel_err(Js.rmatvec(u), Jd.rmatvec(u)))
            srow["err_scipy"] = max(
                rel_err(np.einsum("ij,ij->i", X, Dsp @ (a_s[:, None] * V)), Jd.matvec(V)),
                rel_err((DspT @ (u[:, None] * X)) * a_s[:, None], Jd.rmatvec(u)))
            methods_mv.append(("scipy", lambda: np.einsum("ij,ij->i", X, Dsp @ (a_s[:, None] * V))))
            methods_rmv.append(("scipy", lambda: (DspT @ (u[:, None] * X)) * a_s[:, None]))
        wait_for_idle(args.wait_idle, f"sparse {target_density:.0%} at n={n} m={m} d={d}")
        srow["matvec"] = measure(methods_mv, **timing)
        srow["rmatvec"] = measure(methods_rmv, **timing)
        sparse_rows.append(srow)
        del Jd, Js
        gc.collect()
    row["sparse"] = sparse_rows
    del D, J
    gc.collect()

    if not args.no_memory:
        row["memory"] = run_memory_probe(n, m, d, threshold_for_density(SPARSE_DENSITIES[0]))
    return row


# ------------------------------------------------------------------------------------------------
# Report.


def derive(row):
    """Ratios and verdicts of one shape (stored in the row under "summary")."""
    s = {}
    gemm = row["matvec"]["np_gemm_XVt"]["best_s"]
    s["gemm_gflops"] = row["flops_per_product"] / gemm / 1e9
    for prod in ("matvec", "rmatvec"):
        g = row[prod]
        t = g["sg"]["best_s"]
        s[prod] = {
            "speedup_vs_expr": g["np_expr"]["best_s"] / t,
            "speedup_vs_reassoc": g["np_reassoc"]["best_s"] / t,
            "gflops": row["flops_per_product"] / t / 1e9,
            "gemm_fraction": gemm / t,
        }
        s[prod]["pass_speedup"] = s[prod]["speedup_vs_expr"] >= TARGET_SPEEDUP
        s[prod]["pass_gemm_fraction"] = s[prod]["gemm_fraction"] >= TARGET_GEMM_FRACTION
    for prod in ("matmat", "rmatmat"):
        g = row[prod]
        t = g["sg"]["best_s"]
        single = row["matvec" if prod == "matmat" else "rmatvec"]["sg"]["best_s"]
        s[prod] = {"speedup_vs_loop": g["np_loop"]["best_s"] / t, "speedup_vs_gemm": g["np_gemm"]["best_s"] / t,
                   "gflops": K * row["flops_per_product"] / t / 1e9, "over_k_singles": t / (K * single)}
    if row.get("gram"):
        g = row["gram"]
        best_np = min(g["np_f64"]["best_s"], g["np_f32"]["best_s"])
        s["gram"] = {"ratio": g["sg"]["best_s"] / best_np, "pass": g["sg"]["best_s"] / best_np <= TARGET_GRAM_RATIO,
                     "np_timed_once": g["np_f64"]["timed_once"] or g["np_f32"]["timed_once"]}
    s["sparse"] = []
    for sr in row["sparse"]:
        e = {"target_density": sr["target_density"]}
        for prod in ("matvec", "rmatvec"):
            e[prod] = sr[prod]["dense"]["best_s"] / sr[prod]["sparse"]["best_s"]
            if "sparse_1t" in sr[prod]:
                e[prod + "_1thread"] = sr[prod]["dense_1t"]["best_s"] / sr[prod]["sparse_1t"]["best_s"]
        e["pass"] = (min(e["matvec"], e["rmatvec"]) >= TARGET_SPARSE_SPEEDUP
                     if sr["target_density"] == SPARSE_DENSITIES[0] else None)
        s["sparse"].append(e)
    mem = row.get("memory")
    if mem and "error" not in mem:
        limit = TARGET_MEMORY_FRACTION * row["n"] * row["m"]
        s["memory"] = {"limit_bytes": limit}
        for label in ("sg_dense_matvec", "sg_dense_rmatvec", "sg_sparse_matvec", "sg_sparse_rmatvec"):
            scratch = mem[label]["rss_extra_bytes"] - mem[label]["out_bytes"]
            s["memory"][label] = {"scratch_bytes": scratch, "pass": scratch < limit}
    row["summary"] = s
    return s


def print_tables(rows):
    def shape(r):
        return f"{r['n']:>5} {r['m']:>6} {r['d']:>3}"

    print()
    print(f"J v and J^T u: best time; x expr / x reas = NumPy time / sketchgn time (expression: target >= "
          f"{TARGET_SPEEDUP:g}); GEMM = numpy X @ V.T; frac = sketchgn flop rate / GEMM's (target >= "
          f"{TARGET_GEMM_FRACTION:g})")
    for prod, expr in (("matvec", "((X@V.T)*D)@a"), ("rmatvec", "(D*u).T@X*a")):
        hdr = (f"{prod:8}{'n':>5} {'m':>6} {'d':>3} | {'sketchgn':>9} {expr:>14} {'reassoc':>9} {'GEMM':>9} |"
               f" {'x expr':>6} {'x reas':>6} | {'GF/s':>6} {'GEMM':>6} {'frac':>5} | {'>=1.5x':>6} {'>=0.6':>6}")
        print()
        print(hdr)
        print("-" * len(hdr))
        for r in rows:
            s = r["summary"][prod]
            g = r[prod]
            print(f"{'':8}{shape(r)} | {fmt_time(g['sg']['best_s']):>9} {fmt_time(g['np_expr']['best_s']):>14} "
                  f"{fmt_time(g['np_reassoc']['best_s']):>9} {fmt_time(r['matvec']['np_gemm_XVt']['best_s']):>9} | "
                  f"{s['speedup_vs_expr']:6.2f} {s['speedup_vs_reassoc']:6.2f} | {s['gflops']:6.1f} "
                  f"{r['summary']['gemm_gflops']:6.1f} {s['gemm_fraction']:5.2f} | "
                  f"{verdict(s['pass_speedup']):>6} {verdict(s['pass_gemm_fraction']):>6}")

    print()
    print(f"k = {K} columns at once: loop = the NumPy expression per column, gemm = one reassociated GEMM; "
          f"x = NumPy / sketchgn; /k*1 = sketchgn time / (k x its single product)")
    hdr = (f"{'':8}{'n':>5} {'m':>6} {'d':>3} | {'matmat':>9} {'loop':>9} {'gemm':>9} {'x loop':>6} {'x gemm':>6} "
           f"{'/k*1':>5} | {'rmatmat':>9} {'loop':>9} {'gemm':>9} {'x loop':>6} {'x gemm':>6} {'/k*1':>5}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        line = f"{'':8}{shape(r)} |"
        for prod in ("matmat", "rmatmat"):
            g, s = r[prod], r["summary"][prod]
            line += (f" {fmt_time(g['sg']['best_s']):>9} {fmt_time(g['np_loop']['best_s']):>9} "
                     f"{fmt_time(g['np_gemm']['best_s']):>9} {s['speedup_vs_loop']:6.2f} {s['speedup_vs_gemm']:6.2f} "
                     f"{s['over_k_singles']:5.2f} |")
        print(line.rstrip(" |"))

    print()
    print(f"Gram J J^T: sketchgn gram() vs (D @ D.T) * (X @ X.T) / m; ratio = sketchgn / best NumPy "
          f"(target <= {TARGET_GRAM_RATIO:g}); * = NumPy timed once (one call > half the budget)")
    hdr = f"{'':8}{'n':>5} {'m':>6} {'d':>3} | {'sketchgn':>9} {'np f64':>10} {'np f32':>10} | {'ratio':>5} {'<=1.25':>6}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if not r.get("gram"):
            print(f"{'':8}{shape(r)} | skipped: {r.get('gram_skipped')}")
            continue
        g, s = r["gram"], r["summary"]["gram"]

        def t(label):
            return fmt_time(g[label]["best_s"]) + ("*" if g[label]["timed_once"] else " ")

        print(f"{'':8}{shape(r)} | {t('sg'):>9} {t('np_f64'):>10} {t('np_f32'):>10} | {s['ratio']:5.2f} "
              f"{verdict(s['pass']):>6}")

    print()
    print(f"Sparse patterns (threshold t: density = P(N(0,1) > t)): sketchgn path='sparse' vs path='dense'; "
          f"x = dense / sparse (target >= {TARGET_SPARSE_SPEEDUP:g} at 5%), x1t the same on one thread; scipy = "
          f"CSR pattern, rowsum(X*(D@(aV))) and D.T@(u*X), one thread; auto = the path 'auto' picks")
    hdr = (f"{'':8}{'n':>5} {'m':>6} {'d':>3} {'dens':>6} {'auto':>6} | {'mv sparse':>9} {'dense':>9} {'scipy':>9} "
           f"{'x':>6} {'x1t':>5} | {'rmv sparse':>10} {'dense':>9} {'scipy':>9} {'x':>6} {'x1t':>5} | {'>=8x':>5}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        for sr, e in zip(r["sparse"], r["summary"]["sparse"]):
            mv, rmv = sr["matvec"], sr["rmatvec"]
            print(f"{'':8}{shape(r)} {sr['density']:6.1%} {sr['auto_path']:>6} | "
                  f"{fmt_time(mv['sparse']['best_s']):>9} {fmt_time(mv['dense']['best_s']):>9} "
                  f"{fmt_time(mv.get('scipy', {}).get('best_s')):>9} {e['matvec']:6.2f} "
                  f"{e.get('matvec_1thread', math.nan):5.1f} | "
                  f"{fmt_time(rmv['sparse']['best_s']):>10} {fmt_time(rmv['dense']['best_s']):>9} "
                  f"{fmt_time(rmv.get('scipy', {}).get('best_s')):>9} {e['rmatvec']:6.2f} "
                  f"{e.get('rmatvec_1thread', math.nan):5.1f} | "
                  f"{verdict(e['pass']) if e['pass'] is not None else '':>5}")

    if any("memory" in r for r in rows):
        print()
        print(f"Peak extra memory of one product (RSS high-water mark in a fresh subprocess, minus the output "
              f"array); limit n*m/{int(1 / TARGET_MEMORY_FRACTION)} bytes; sparse at 5%; NumPy (expression / "
              f"reassociated, D already built) for reference; traced = tracemalloc peak of the sketchgn dense "
              f"calls minus the output (NumPy-side temporaries: the finiteness check)")
        hdr = (f"{'':8}{'n':>5} {'m':>6} {'d':>3} | {'limit':>8} | {'dense mv':>8} {'rmv':>8} {'sparse mv':>9} "
               f"{'rmv':>8} | {'np expr mv':>10} {'rmv':>8} {'reas mv':>8} {'rmv':>8} | {'traced':>8} | {'<limit':>6}")
        print(hdr)
        print("-" * len(hdr))
        for r in rows:
            mem = r.get("memory")
            if not mem:
                continue
            if "error" in mem:
                print(f"{'':8}{shape(r)} | probe failed: {mem['error'].splitlines()[-1]}")
                continue
            sm = r["summary"]["memory"]

            def scratch(label):
                return fmt_bytes(mem[label]["rss_extra_bytes"] - mem[label]["out_bytes"])

            traced = max(mem[lab]["traced_peak_bytes"] - mem[lab]["out_bytes"]
                         for lab in ("sg_dense_matvec", "sg_dense_rmatvec"))
            ok = all(v["pass"] for k, v in sm.items() if k != "limit_bytes")
            print(f"{'':8}{shape(r)} | {fmt_bytes(sm['limit_bytes']):>8} | {scratch('sg_dense_matvec'):>8} "
                  f"{scratch('sg_dense_rmatvec'):>8} {scratch('sg_sparse_matvec'):>9} {scratch('sg_sparse_rmatvec'):>8} | "
                  f"{scratch('np_expr_matvec'):>10} {scratch('np_expr_rmatvec'):>8} {scratch('np_reassoc_matvec'):>8} "
                  f"{scratch('np_reassoc_rmatvec'):>8} | {fmt_bytes(traced):>8} | {verdict(ok):>6}")


def print_verdicts(rows):
    tally = collections.OrderedDict()

    def add(name, ok, where):
        if ok is None:
            return
        t = tally.setdefault(name, [0, 0, []])
        t[0] += bool(ok)
        t[1] += 1
        if not ok:
            t[2].append(where)

    for r in rows:
        s, where = r["summary"], f"n={r['n']} m={r['m']} d={r['d']}"
        add(f"matvec  >= {TARGET_SPEEDUP:g}x NumPy expression", s["matvec"]["pass_speedup"], where)
        add(f"rmatvec >= {TARGET_SPEEDUP:g}x NumPy expression", s["rmatvec"]["pass_speedup"], where)
        add(f"matvec  >= {TARGET_GEMM_FRACTION:g} of GEMM flop rate", s["matvec"]["pass_gemm_fraction"], where)
        add(f"rmatvec >= {TARGET_GEMM_FRACTION:g} of GEMM flop rate", s["rmatvec"]["pass_gemm_fraction"], where)
        if "gram" in s:
            add(f"gram <= {TARGET_GRAM_RATIO:g} x best NumPy Gram", s["gram"]["pass"], where)
        for e in s["sparse"]:
            add(f"sparse >= {TARGET_SPARSE_SPEEDUP:g}x dense at 5% (matvec and rmatvec)", e["pass"], where)
        for label, v in s.get("memory", {}).items():
            if label != "limit_bytes":
                add(f"peak extra memory < n*m/{int(1 / TARGET_MEMORY_FRACTION)} bytes", v["pass"], f"{where} {label}")
    print()
    print("Targets:")
    for name, (ok, total, fails) in tally.items():
        print(f"  {name:48} {ok}/{total} {'PASS' if ok == total else 'FAIL'}"
              + (f"   failing: {'; '.join(fails)}" if fails else ""))
    return {name: {"pass": ok, "total": total, "failing": fails} for name, (ok, total, fails) in tally.items()}


# ------------------------------------------------------------------------------------------------
# Google Benchmark results (bench_jacobian.cpp) as a table: best repetition of each run.

_SCALE = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def summarize_cpp(path):
    with open(path) as fh:
        data = json.load(fh)
    d = int(data["context"].get("d", 32))
    best, density, bigo = {}, {}, {}
    reps = 1
    for b in data["benchmarks"]:
        name = b["run_name"]
        if b.get("run_type", "iteration") == "iteration":
            t = b["real_time"] * _SCALE[b["time_unit"]]
            best[name] = min(best.get(name, math.inf), t)
            density[name] = b.get("density")
            reps = max(reps, b.get("repetitions", 1))
        elif b.get("aggregate_name") == "BigO":
            bigo.setdefault(name, {})["coef_s"] = b["real_coefficient"] * _SCALE[b["time_unit"]]
        elif b.get("aggregate_name") == "RMS":
            bigo.setdefault(name, {})["rms"] = b["rms"]
    grid = collections.defaultdict(dict)  # (product, path) -> {(n, m): (time, gflops)}
    for name, t in best.items():
        mt = re.fullmatch(r"BM_(r?matvec)/(dense|sparse)/n:(\d+)/m:(\d+)(/real_time)?", name)
        if not mt:
            continue
        prod, path, n, m = mt.group(1), mt.group(2), int(mt.group(3)), int(mt.group(4))
        nnz = (density[name] or 0.0) * n * m if path == "sparse" else n * m
        grid[(prod, path)][(n, m)] = (t, 2.0 * nnz * d / t / 1e9)
    print(f"summary: best of {reps} repetition(s); simd={data['context'].get('sketchgn_simd')}, "
          f"threads={data['context'].get('sketchgn_threads')}, d={d}; GF/s from the best time "
          "(2 n m d flops dense, 2 nnz d sparse)")
    for key in sorted(grid):
        cells = grid[key]
        ns = sorted({n for n, _ in cells})
        ms = sorted({m for _, m in cells})
        print(f"\n{key[0]} {key[1]}: GF/s (n down, m across)")
        print(f"{'n':>6} " + " ".join(f"{m:>7}" for m in ms))
        for n in ns:
            print(f"{n:>6} " + " ".join(f"{cells[(n, m)][1]:7.1f}" if (n, m) in cells else f"{'-':>7}" for m in ms))
    for key in sorted({k[0] for k in grid}):
        dense, sparse = grid.get((key, "dense"), {}), grid.get((key, "sparse"), {})
        common = sorted(set(dense) & set(sparse))
        if common:
            ns = sorted({n for n, _ in common})
            ms = sorted({m for _, m in common})
            print(f"\n{key}: dense time / sparse time (sparse at threshold "
                  f"{data['context'].get('sparse_threshold')}, dense at threshold 0)")
            print(f"{'n':>6} " + " ".join(f"{m:>7}" for m in ms))
            for n in ns:
                print(f"{n:>6} " + " ".join(f"{dense[(n, m)][0] / sparse[(n, m)][0]:7.1f}" if (n, m) in dense
                                            and (n, m) in sparse else f"{'-':>7}" for m in ms))
    print()
    for fam, v in sorted(bigo.items()):
        if "coef_s" in v:
            kind = "nnz d" if "sparse" in fam else "n m d"
            print(f"{fam}: O(N) fit, N = {kind}: {v['coef_s'] * 1e9:.4g} ns per unit = {2 / v['coef_s'] / 1e9:.1f} GF/s "
                  f"(RMS {v.get('rms', float('nan')):.0%})")
    return 0


# ------------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"{len(QUICK_SHAPES)} shapes, fewer samples")
    ap.add_argument("--json", default=str(DEFAULT_JSON), metavar="PATH",
                    help=f"where to write every measurement (default {DEFAULT_JSON.relative_to(HERE.parent)})")
    ap.add_argument("--repeats", type=int, default=None, help="samples per method (default 9, quick 3)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds per sample (default 0.03, quick 0.02)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per method and group, at most (default 4, quick 2); slower calls are timed once")
    ap.add_argument("--gram-budget", type=float, default=None, help="the same for the Gram group (default 20, quick 6)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before each group, wait up to this long for idle CPUs")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--keep-openblas-env", action="store_true",
                    help="do not re-execute without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    ap.add_argument("--shapes", default=None, help="n,m,d;n,m,d;... instead of the built-in grid")
    ap.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--summarize-cpp", default=None, metavar="JSON",
                    help="print a table of bench_jacobian.cpp's Google Benchmark JSON and exit")
    args = ap.parse_args(argv)

    if args.summarize_cpp:
        return summarize_cpp(args.summarize_cpp)
    if args.memory_probe:
        print(json.dumps(memory_probe(json.loads(args.memory_probe))))
        return 0

    import sketchgn as sg

    args.repeats = args.repeats or (3 if args.quick else 9)
    args.min_time = args.min_time or (0.02 if args.quick else 0.03)
    args.budget = args.budget or (2.0 if args.quick else 4.0)
    args.gram_budget = args.gram_budget or (6.0 if args.quick else 20.0)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
    timing = {"repeats": args.repeats, "min_time": args.min_time, "budget": args.budget}

    info = machine_info(sg)
    bi = info["build_info"]
    print(f"sketchgn {info['sketchgn_version']}  simd={bi.get('simd')}  ({bi.get('compiler')}, {bi.get('build_type')}); "
          f"_core built {info['core_module_mtime']}")
    print(f"cpu: {info['cpu_model']}, {info['cpus_usable']} usable cores, {fmt_bytes(info['memory_bytes'])}; "
          f"{info['platform']}; load {', '.join(f'{v:.2f}' for v in info['loadavg_start'] or [])}")
    removed = info["openblas_env_removed"]
    if removed:
        print("re-executed without " + ", ".join(f"{k}={v}" for k, v in removed.items())
              + " (they pin an old OpenBLAS kernel / cache size)")
    elif args.keep_openblas_env:
        print("kept the OPENBLAS_* environment (--keep-openblas-env): " + (
            ", ".join(f"{k}={v}" for k, v in info["env"].items() if k.startswith("OPENBLAS_")) or "none set"))
    for p in info["blas"]:
        owner = Path(p.get("filepath", "?")).parent.name  # numpy.libs, scipy.libs, ...
        who = f"numpy {info['numpy']}'s BLAS:" if owner.startswith("numpy") else f"also loaded ({owner}):"
        print(f"{who} {p.get('internal_api')} {p.get('version')}, kernel architecture {p.get('architecture')}, "
              f"{p.get('threading_layer')} threading, {p.get('num_threads')} threads")
    omp = [p for p in info["threadpool_info"] if p.get("user_api") == "openmp"]
    print(f"sketchgn: n_threads=None -> {info['sketchgn_threads']} threads "
          f"(OpenMP max {bi.get('max_threads')}; {', '.join(p.get('prefix', '?') for p in omp) or 'no OpenMP pool seen'})")
    print(f"timing: best of <= {args.repeats} samples of >= {args.min_time * 1e3:.0f} ms, methods taking turns; "
          f"<= {args.budget:g} s per method (Gram {args.gram_budget:g} s), slower calls timed once")

    rows = []
    for n, m, d in shapes:
        t0 = time.perf_counter()
        idle = _cpu_idle_share()
        row = bench_shape(sg, n, m, d, args, timing)
        row["cpu_idle_share_before"] = idle
        s = derive(row)
        e = row["rel_err"]
        print(f"n={n:>5} m={m:>6} d={d:>3}: density {row['density']:.3f} ({row['path']}), "
              f"build {fmt_time(row['sg_build_s'])} (numpy X@W.T>0 {fmt_time(row['np_pattern_s'])}); "
              f"max rel err {max(e.values()):.1e}; matvec x{s['matvec']['speedup_vs_expr']:.2f}, "
              f"rmatvec x{s['rmatvec']['speedup_vs_expr']:.2f}"
              + (f", gram {s['gram']['ratio']:.2f}" if "gram" in s else "")
              + f" [{time.perf_counter() - t0:.0f} s; CPUs {idle:.0%} idle before]", flush=True)
        if row["pattern_mismatches_vs_numpy"]:
            print(f"  note: {row['pattern_mismatches_vs_numpy']} pattern entries differ from numpy's X@W.T > 0 "
                  "(w.x within rounding of the threshold); NumPy is given sketchgn's pattern")
        rows.append(row)

    print_tables(rows)

    # Threads actually used (process CPU / wall over the samples; 2.0 = both cores busy for the process).
    cow = collections.defaultdict(list)
    for r in rows:
        for prod in ("matvec", "rmatvec", "matmat", "rmatmat"):
            for label, rec in r[prod].items():
                cow[f"{prod}:{label}"].append(rec["cpu_over_wall"])
    sg_cow = [v for k, vals in cow.items() if k.endswith(":sg") for v in vals]
    print()
    print("CPU time / wall time over the samples (threads busy): "
          + ", ".join(f"{k} {min(v):.2f}-{max(v):.2f}" for k, v in cow.items() if k.startswith(("matvec", "rmatvec"))))
    if sg_cow and min(sg_cow) < 0.8 * info["sketchgn_threads"]:
        print(f"warning: some sketchgn samples had only {min(sg_cow):.2f} cores busy of {info['sketchgn_threads']} "
              "(another process was running); best-of samples are less affected")

    targets = print_verdicts(rows)
    info["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    if info["loadavg_end"]:
        print(f"load average at the end: {', '.join(f'{v:.2f}' for v in info['loadavg_end'])}")
    report = {
        "machine": info,
        "settings": {"quick": args.quick, "shapes": shapes, "repeats": args.repeats, "min_time_s": args.min_time,
                     "budget_s": args.budget, "gram_budget_s": args.gram_budget, "k": K,
                     "sparse_densities": SPARSE_DENSITIES, "seed": SEED, "wait_idle_s": args.wait_idle,
                     "targets": {"speedup_vs_expr": TARGET_SPEEDUP, "gemm_fraction": TARGET_GEMM_FRACTION,
                                 "gram_ratio": TARGET_GRAM_RATIO, "sparse_speedup": TARGET_SPARSE_SPEEDUP,
                                 "memory_bytes_over_nm": TARGET_MEMORY_FRACTION}},
        "shapes": rows,
        "targets": targets,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
