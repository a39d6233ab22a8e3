#!/usr/bin/env python3
"""Benchmark of sketchgn's Gauss-Newton system solvers against the best exact solve NumPy/SciPy can do.

Problem (synthetic, seeded): X (n, d) with unit-norm rows, W ~ N(0, I) (m, d), a in {-1, +1}^m, a teacher
y = relu(X W_t^T) a_t / sqrt(m_t) (m_t = 256, its own seed), and the right-hand side r = f(W, X) - y.
Every method solves J J^T g = r (no damping) to a relative residual of 1e-6:

    sketch (fresh)   sg.solve_gn(J, r, method="sketch"): builds a SketchPreconditioner (Kronecker SRHT,
                     s = 4n, CholeskyQR) and runs preconditioned CG
    sketch (reused)  P built once beforehand, then sg.solve_gn(J, r, method="sketch", preconditioner=P)
    cg               plain CG, maxiter capped so that it ends (--cg-budget seconds); non-convergence reported
    exact            sg.solve_gn(J, r, method="exact"): J.gram() and a Cholesky factorization
    numpy exact      D = (X @ W.T > 0) as float32, D @ D.T as a float32 GEMM (NumPy calls SYRK; exact for
                     0/1 counts < 2^24), Hadamard product with X @ X.T in float64, / m, then
                     scipy.linalg.cho_factor / cho_solve

Times are from (X, W, a, r) to g: the library times include building the ReLUJacobian (its activation
pattern, column "pattern") and the NumPy time includes forming D (its "pattern"). Every residual is
re-checked with the library's products, ||r - J J^T g|| / ||r||.

Targets (PASS/FAIL printed):
  - library "exact" <= NumPy exact, at every size
  - at n=8000, m=16384: "sketch" with a reused preconditioner >= 3x faster than the NumPy exact solve
  - at n=8000, m=16384: building the preconditioner (sketch + factorization) <= one NumPy exact solve
  - at n=8000, m=16384: sketching J^T with "kronecker" >= 10x faster than with "srht" (both through
    sketchgn._core.sketch_jacobian_transpose at s = 4n, the call SketchPreconditioner makes)
(with --quick they are evaluated at the largest quick size, as an indication only).
Also: CG iterations and build cost against the sketch size (2n, 3n, 4n) at one size.

Threads: sketchgn with n_threads=None (every core), NumPy/SciPy with their default BLAS threads. The
machine this was written for sets OPENBLAS_CORETYPE=Haswell and OPENBLAS_L2_SIZE, which slow a current
OpenBLAS down: the script re-executes itself once without them (before importing numpy) unless
--keep-openblas-env is given, and prints the OpenBLAS kernels that run. Timing is best-of-N within a
per-method time budget (the expensive solves at the largest size run once or twice: the table says
how many samples each figure is the best of); on a shared machine use --wait-idle.

    python bench/bench_solver.py             # full: (n, m) = (1000, 4096) .. (8000, 16384), d = 32 (~10 min)
    python bench/bench_solver.py --quick     # the first two sizes
    python bench/bench_solver.py --json out.json   # default bench/results/solver.json

bench_train.py imports the shared pieces (environment re-exec, problem, machine info) from here.
"""

from __future__ import annotations

import json
import os
import sys

_OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_REMOVED_ENV = "SKETCHGN_BENCH_REMOVED_ENV"  # set in the re-executed process: what was removed


def reexec_without_openblas_overrides():
    """Run the calling bench script again with the OpenBLAS overrides unset (OpenBLAS reads them at load).

    Acts only when the main program is a script of this folder (bench_solver.py, or bench_train.py which
    imports this module before numpy), numpy is not loaded yet and the overrides are set.
    """
    main_dir = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else ""
    if (main_dir != os.path.dirname(os.path.abspath(__file__)) or "--keep-openblas-env" in sys.argv
            or _REMOVED_ENV in os.environ or "numpy" in sys.modules):
        return
    removed = {k: os.environ[k] for k in _OPENBLAS_OVERRIDES if k in os.environ}
    if not removed:
        return
    env = {k: v for k, v in os.environ.items() if k not in removed}
    env[_REMOVED_ENV] = json.dumps(removed)
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


reexec_without_openblas_overrides()

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

import sketchgn as sg  # noqa: E402
from sketchgn import _core  # noqa: E402
from sketchgn._validation import resolve_n_threads  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "solver.json"

D_FEATURES = 32
FULL_SIZES = [(1000, 4096), (2000, 8192), (4000, 16384), (8000, 16384)]
QUICK_SIZES = FULL_SIZES[:2]
TARGET_SIZE = (8000, 16384)
SWEEP_SIZE, QUICK_SWEEP_SIZE = (4000, 16384), (1000, 4096)
SWEEP_FACTORS = (2, 3, 4)
TOL = 1e-6
METHOD_WAIT = 15.0  # with --wait-idle: seconds to wait, at most, for idle CPUs before each sample
SEED = 20240601
TEACHER_WIDTH = 256

TARGET_SKETCH_SPEEDUP = 3.0  # NumPy exact / sketch with a reused preconditioner
TARGET_KRON_SPEEDUP = 10.0  # srht sketch time / kronecker sketch time


# ------------------------------------------------------------------------------------------------
# Problem, machine, timing (also used by bench_train.py).


def make_problem(n, m, d=D_FEATURES, seed=SEED):
    """X (n, d) unit-norm rows, a teacher's targets y (n,), and the student's W (m, d), a (m,).

    W and a are drawn exactly as GaussNewtonRegressor(random_state=seed) draws its initialisation
    (RandomState(seed).standard_normal((m, d)), then .choice([-1, 1], m)), so a benchmark can hand the same
    start to the estimator and to other trainers.
    """
    rng = np.random.default_rng([seed, n, d])
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    W_t = rng.standard_normal((TEACHER_WIDTH, d))
    a_t = rng.choice([-1.0, 1.0], TEACHER_WIDTH)
    y = np.maximum(X @ W_t.T, 0.0) @ a_t / math.sqrt(TEACHER_WIDTH)
    W, a = estimator_init(seed, m, d)
    return X, y, W, a


def estimator_init(seed, m, d):
    """The (W, a) GaussNewtonRegressor(random_state=seed) starts from (single output)."""
    rs = np.random.RandomState(seed)
    W = rs.standard_normal((m, d))
    a = rs.choice(np.array([-1.0, 1.0]), size=m)
    return W, a


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_state():
    try:
        head = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(HERE.parent), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"head": head or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"head": None, "dirty": None}


def machine_info(extra_versions=None):
    from threadpoolctl import threadpool_info

    core_file = Path(_core.__file__)
    info = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "sketchgn_version": sg.__version__,
        "build_info": sg.build_info(),
        "core_module": str(core_file),
        "core_module_mtime": datetime.datetime.fromtimestamp(core_file.stat().st_mtime).isoformat(timespec="seconds"),
        "source_tree": _git_state(),
        "sketchgn_threads": resolve_n_threads(None),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "threadpool_info": threadpool_info(),
        "openblas_env_removed": json.loads(os.environ.get(_REMOVED_ENV, "{}")),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_", "SKETCHGN_", "OPENBLAS_", "MKL_"))},
    }
    info.update(extra_versions or {})
    return info


def print_machine(info):
    print(f"machine: {info['cpu_model']}, {info['cpus_usable']} usable CPUs, {info['platform']}")
    print(f"sketchgn {info['sketchgn_version']} ({info['core_module']}, built {info['core_module_mtime']}), "
          f"SIMD {info['build_info'].get('simd', '?')}, n_threads=None -> {info['sketchgn_threads']}")
    print(f"numpy {info['numpy']}, scipy {info['scipy']}")
    removed = info["openblas_env_removed"]
    if removed:
        print("re-executed without " + ", ".join(f"{k}={v}" for k, v in removed.items()))
    elif any(k in os.environ for k in _OPENBLAS_OVERRIDES):
        print("WARNING: running with " + ", ".join(f"{k}={os.environ[k]}" for k in _OPENBLAS_OVERRIDES
                                                   if k in os.environ))
    for p in info["threadpool_info"]:
        if p.get("user_api") == "blas":
            print(f"BLAS: {p.get('internal_api')} {p.get('version')} kernel={p.get('architecture')} "
                  f"threads={p.get('num_threads')}  ({Path(p.get('filepath', '')).name})")
        else:
            print(f"{p.get('user_api')}: {p.get('internal_api')} threads={p.get('num_threads')}  "
                  f"({Path(p.get('filepath', '')).name})")
    if info["loadavg_start"]:
        print("load average at start: " + " ".join(f"{x:.2f}" for x in info["loadavg_start"]))


def _cpu_busy_cores(interval=0.5):
    """CPUs busy (all processes) over `interval` seconds, from /proc/stat; None off Linux."""
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
    total = t1 - t0
    ncpu = os.cpu_count() or 1
    return ncpu * (1.0 - (i1 - i0) / total) if total > 0 else 0.0


def wait_for_idle(max_wait, what):
    """Wait up to max_wait seconds for the CPUs to be idle (< 0.3 busy cores); print what happened."""
    if max_wait <= 0:
        return None
    t0 = time.perf_counter()
    busy = _cpu_busy_cores()
    while busy is not None and busy > 0.3 and time.perf_counter() - t0 < max_wait:
        busy = _cpu_busy_cores(1.0)
    waited = time.perf_counter() - t0
    if busy is not None and busy > 0.3:
        print(f"  (before {what}: CPUs still busy after {waited:.0f} s: {busy:.1f} cores)", flush=True)
    return waited


def best_of(fn, repeats, budget, setup=None):
    """Run fn() up to `repeats` times, stopping early once `budget` seconds are spent (at least once).

    Returns (best result by wall time, its wall seconds, list of wall seconds, cpu/wall of the best).
    The result of fn may be a dict carrying its own "seconds" (used instead of the wall time around it).
    """
    best, best_t, samples, best_util = None, math.inf, [], None
    spent = 0.0
    for _ in range(max(1, repeats)):
        if setup is not None:
            setup()
        gc.collect()
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        t = out["seconds"] if isinstance(out, dict) and "seconds" in out else wall
        samples.append(t)
        if best is None or t < best_t:
            best, best_t, best_util = out, t, cpu / max(wall, 1e-9)
        spent += wall
        if spent + wall > budget:
            break
    return best, best_t, samples, best_util


def fmt_time(s):
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    if s == 0:
        return "0"
    if s < 1e-3:
        return f"{s * 1e6:.0f}us"
    if s < 1.0:
        return f"{s * 1e3:.1f}ms"
    return f"{s:.2f}s"


def verdict(ok):
    return "PASS" if ok else "FAIL"


# ------------------------------------------------------------------------------------------------
# The solves.


def numpy_exact_solve(X, W, r):
    """g = (J J^T)^{-1} r the best way NumPy/SciPy can; returns g and the cost split."""
    m = W.shape[0]
    t0 = time.perf_counter()
    D = (X @ W.T > 0.0).astype(np.float32)
    t1 = time.perf_counter()
    # D D^T in float32 (NumPy hands A @ A.T to SYRK); the counts are integers <= m < 2^24: exact.
    G = (D @ D.T) * (X @ X.T)  # float32 * float64 -> float64
    G /= m
    del D
    t2 = time.perf_counter()
    factor = scipy.linalg.cho_factor(G, lower=False, overwrite_a=True, check_finite=False)
    g = scipy.linalg.cho_solve(factor, r, check_finite=False)
    t3 = time.perf_counter()
    return {"g": g, "seconds": t3 - t0, "pattern": t1 - t0, "gram": t2 - t1, "cholesky": t3 - t2}


def true_residual(J, r, g):
    return float(np.linalg.norm(r - J.matvec(J.rmatvec(g))) / np.linalg.norm(r))


def library_solve(X, W, a, r, nt, **kw):
    t0 = time.perf_counter()
    J = sg.ReLUJacobian(X, W, a, n_threads=nt)
    t1 = time.perf_counter()
    res = sg.solve_gn(J, r, n_threads=nt, **kw)
    t2 = time.perf_counter()
    out = {"res": res, "seconds": t2 - t0, "pattern": t1 - t0, "J": J}
    out.update({k: v for k, v in res.timings.items() if k != "total"})
    return out


COLUMNS = ("pattern", "sketch", "factorization", "products", "preconditioner", "gram", "cholesky")


def run_size(n, m, args, nt, report):
    print(f"\n== n={n}, m={m}, d={D_FEATURES} ==", flush=True)
    X, y, W, a = make_problem(n, m)
    J = sg.ReLUJacobian(X, W, a, n_threads=nt)
    r = J.forward() - y
    print(f"density of D {J.density:.3f}, ||r|| = {np.linalg.norm(r):.4g}", flush=True)
    budget = args.budget
    rows = {}

    def settle():
        wait_for_idle(min(args.wait_idle, METHOD_WAIT), f"n={n} method")

    def record(label, out, best_t, samples, util, g, iterations=0, converged=None, message=""):
        resid = true_residual(J, r, g)
        row = {"seconds": best_t, "samples": samples, "cpu_over_wall": util, "iterations": iterations,
               "residual": resid, "converged": resid <= TOL * 1.01 if converged is None else converged,
               "message": message}
        row.update({c: out.get(c) for c in COLUMNS if out.get(c) is not None})
        rows[label] = row
        print(f"  {label:16s} {fmt_time(best_t):>9s} (best of {len(samples)}) iters {iterations:5d} "
              f"residual {resid:.2e}{'  ' + message if message else ''}", flush=True)
        return row

    wait_for_idle(args.wait_idle, f"n={n}")
    # NumPy exact.
    out, t, samples, util = best_of(lambda: numpy_exact_solve(X, W, r), args.repeats, budget, setup=settle)
    record("numpy exact", out, t, samples, util, out["g"])
    del out
    # Library exact.
    out, t, samples, util = best_of(lambda: library_solve(X, W, a, r, nt, method="exact"), args.repeats, budget,
                                    setup=settle)
    record("exact", out, t, samples, util, out["res"].g, message=out["res"].message)
    del out
    # Sketch, fresh preconditioner (its P is the one reused below).
    out, t, samples, util = best_of(lambda: library_solve(X, W, a, r, nt, method="sketch", tol=TOL),
                                    args.repeats, budget, setup=settle)
    res = out["res"]
    P = res.preconditioner
    row = record("sketch (fresh)", out, t, samples, util, res.g, res.iterations, res.converged, res.message)
    row["iterations_f32"] = res.iterations_f32
    row["factorization_used"] = P.factorization_
    row["sketch_size"] = P.sketch_size
    build = out["sketch"] + out["factorization"]
    del out
    # Sketch, reused preconditioner.
    out, t, samples, util = best_of(
        lambda: library_solve(X, W, a, r, nt, method="sketch", tol=TOL, preconditioner=P), args.repeats, budget,
        setup=settle)
    res = out["res"]
    row = record("sketch (reused)", out, t, samples, util, res.g, res.iterations, res.converged, res.message)
    row["iterations_f32"] = res.iterations_f32
    del out, res
    # The same with float64 products throughout (precision="double"): what mixed precision saves.
    out, t, samples, util = best_of(
        lambda: library_solve(X, W, a, r, nt, method="sketch", tol=TOL, preconditioner=P, precision="double"),
        args.repeats, budget, setup=settle)
    res = out["res"]
    record("sketch reused f64", out, t, samples, util, res.g, res.iterations, res.converged, res.message)
    per_iteration = (out["products"] + out["preconditioner"]) / max(res.iterations, 1)
    del out, res
    # Plain CG, capped so that it ends.
    maxiter = int(min(10 * n, max(50, args.cg_budget / max(per_iteration, 1e-6))))
    out, t, samples, util = best_of(
        lambda: library_solve(X, W, a, r, nt, method="cg", tol=TOL, maxiter=maxiter), 1, budget, setup=settle)
    res = out["res"]
    msg = res.message or ""
    if not res.converged:
        msg = f"NOT CONVERGED within maxiter={maxiter} (cap from --cg-budget {args.cg_budget:g} s)"
    cg_row = record("cg", out, t, samples, util, res.g, res.iterations, res.converged, msg)
    cg_row["maxiter"] = maxiter
    del out, res

    # Sketch of J^T alone: kronecker vs srht at the same s.
    s = P.sketch_size
    sketch_times = {}
    for kind in ("kronecker", "srht"):
        def sketch_once(kind=kind):
            T = _core.sketch_jacobian_transpose(J._impl, kind, s, 0, nt)
            del T

        _, t, samples, util = best_of(sketch_once, args.repeats, budget, setup=settle)
        sketch_times[kind] = {"seconds": t, "samples": samples, "cpu_over_wall": util}
    print(f"  sketch of J^T (s={s}): kronecker {fmt_time(sketch_times['kronecker']['seconds'])}, "
          f"srht {fmt_time(sketch_times['srht']['seconds'])}", flush=True)
    del P
    gc.collect()
    report["sizes"].append({"n": n, "m": m, "d": D_FEATURES, "density": J.density, "r_norm": float(np.linalg.norm(r)),
                            "methods": rows, "preconditioner_build": build, "sketch_size": s,
                            "sketch_J_transpose": sketch_times,
                            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None})


def run_sweep(n, m, args, nt, report):
    print(f"\n== iterations vs sketch size: n={n}, m={m}, d={D_FEATURES} (the default sketch, 'auto': whole Kronecker grid rows here; CholeskyQR) ==", flush=True)
    X, y, W, a = make_problem(n, m)
    J = sg.ReLUJacobian(X, W, a, n_threads=nt)
    r = J.forward() - y
    rows = []
    wait_for_idle(args.wait_idle, "the sweep")

    def settle():
        wait_for_idle(min(args.wait_idle, METHOD_WAIT), "a sweep sample")

    for f in SWEEP_FACTORS:
        s = f * n

        def build(s=s):
            P = sg.SketchPreconditioner(J, sketch_size=s, n_threads=nt)
            return {"P": P, "seconds": P.timings["sketch"] + P.timings["factorization"]}

        built, _, build_samples, _ = best_of(build, args.repeats, args.budget, setup=settle)
        P = built["P"]
        out, t, samples, _ = best_of(
            lambda: library_solve(X, W, a, r, nt, method="sketch", tol=TOL, preconditioner=P), args.repeats,
            args.budget, setup=settle)
        res = out["res"]
        rows.append({"factor": f, "sketch_size": s, "iterations": res.iterations, "converged": res.converged,
                     "residual": res.residual, "solve_seconds": t, "solve_samples": samples,
                     "sketch": P.timings["sketch"], "factorization": P.timings["factorization"],
                     "build_samples": build_samples, "factorization_used": P.factorization_})
        del P, built, out, res
        gc.collect()
    report["sweep"] = {"n": n, "m": m, "d": D_FEATURES, "rows": rows}
    print("(best of the samples: the build and the solve separately)")
    print(f"{'s':>8s} {'iters':>6s} {'solve':>9s} {'sketch':>9s} {'factor':>9s} {'build+solve':>12s}")
    for row in rows:
        print(f"{str(row['factor']) + 'n':>8s} {row['iterations']:6d} {fmt_time(row['solve_seconds']):>9s} "
              f"{fmt_time(row['sketch']):>9s} {fmt_time(row['factorization']):>9s} "
              f"{fmt_time(row['solve_seconds'] + row['sketch'] + row['factorization']):>12s}"
              f"{'' if row['converged'] else '  NOT CONVERGED'}")


def print_table(report):
    print("\n== results (seconds, best of the samples shown in brackets; every time includes building J / D) ==")
    head = (f"{'n':>5s} {'m':>6s} {'method':16s} {'total':>9s} " + " ".join(f"{c[:8]:>8s}" for c in COLUMNS)
            + f" {'iters':>6s} {'f32':>4s} {'residual':>9s} {'conv':>4s} {'vs numpy':>8s} {'cpu':>4s}")
    print(head)
    for size in report["sizes"]:
        base = size["methods"]["numpy exact"]["seconds"]
        for label, row in size["methods"].items():
            cols = " ".join(f"{fmt_time(row.get(c)):>8s}" for c in COLUMNS)
            print(f"{size['n']:5d} {size['m']:6d} {label:16s} {fmt_time(row['seconds']):>6s}[{len(row['samples'])}] "
                  f"{cols} {row['iterations']:6d} {row.get('iterations_f32', 0):4d} {row['residual']:9.2e} {'yes' if row['converged'] else 'NO':>4s} "
                  f"{base / row['seconds']:7.2f}x {row['cpu_over_wall']:4.1f}")
        sk = size["sketch_J_transpose"]
        print(f"{'':12s} preconditioner build {fmt_time(size['preconditioner_build'])} (s={size['sketch_size']}); "
              f"sketch of J^T: kronecker {fmt_time(sk['kronecker']['seconds'])} (cpu {sk['kronecker']['cpu_over_wall']:.1f}), "
              f"srht {fmt_time(sk['srht']['seconds'])} (cpu {sk['srht']['cpu_over_wall']:.1f})")
    print("('f32' = of the iterations, those with float32 products: solve_gn's precision='auto' is mixed "
          "precision for 'sketch'; 'sketch reused f64' is the same solve with precision='double')")
    print("('vs numpy' = NumPy exact time / this time; > 1 is faster than NumPy. 'cpu' = process CPU time / wall "
          "time of that sample: about 2 with both cores; well below 2 means other processes took the CPU)")


def evaluate_targets(report, quick):
    sizes = {(s["n"], s["m"]): s for s in report["sizes"]}
    key = TARGET_SIZE if TARGET_SIZE in sizes else max(sizes)
    note = "" if key == TARGET_SIZE else f"  [indicative: measured at n={key[0]}, m={key[1]}, the target is at n=8000]"
    targets = []
    for (n, m), s in sizes.items():
        lib, npx = s["methods"]["exact"]["seconds"], s["methods"]["numpy exact"]["seconds"]
        targets.append({"name": f"library exact <= NumPy exact at n={n}, m={m}", "ratio": lib / npx,
                        "detail": f"exact {fmt_time(lib)} / numpy {fmt_time(npx)} = {lib / npx:.2f} (<= 1)",
                        "pass": lib <= npx})
    s = sizes[key]
    npx = s["methods"]["numpy exact"]["seconds"]
    reused = s["methods"]["sketch (reused)"]
    speed = npx / reused["seconds"]
    targets.append({"name": f"sketch (reused P) >= {TARGET_SKETCH_SPEEDUP:g}x faster than NumPy exact" + note,
                    "ratio": speed, "detail": f"numpy {fmt_time(npx)} / sketch {fmt_time(reused['seconds'])} = "
                    f"{speed:.2f}x ({reused['iterations']} iterations{'' if reused['converged'] else ', NOT CONVERGED'})",
                    "pass": speed >= TARGET_SKETCH_SPEEDUP and reused["converged"]})
    build = s["preconditioner_build"]
    targets.append({"name": "preconditioner build (sketch + factorization) <= one NumPy exact solve" + note,
                    "ratio": build / npx, "detail": f"build {fmt_time(build)} / numpy {fmt_time(npx)} = {build / npx:.2f} (<= 1)",
                    "pass": build <= npx})
    sk = s["sketch_J_transpose"]
    kr = sk["srht"]["seconds"] / sk["kronecker"]["seconds"]
    targets.append({"name": f"sketch of J^T: kronecker >= {TARGET_KRON_SPEEDUP:g}x faster than srht" + note,
                    "ratio": kr, "detail": f"srht {fmt_time(sk['srht']['seconds'])} / kronecker "
                    f"{fmt_time(sk['kronecker']['seconds'])} = {kr:.2f}x", "pass": kr >= TARGET_KRON_SPEEDUP})
    print("\n== targets ==")
    for t in targets:
        print(f"  {verdict(t['pass'])}  {t['name']}: {t['detail']}")
    report["targets"] = targets
    return targets


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the first two sizes only")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--repeats", type=int, default=3, help="samples per method (best counts), default 3")
    parser.add_argument("--budget", type=float, default=45.0,
                        help="seconds per method and size after which no further sample is taken (default 45)")
    parser.add_argument("--cg-budget", type=float, default=None,
                        help="plain CG's maxiter is set to take about this many seconds (default 60, quick 15)")
    parser.add_argument("--wait-idle", type=float, default=0.0,
                        help="wait up to this many seconds for idle CPUs before each size, and up to "
                             f"{METHOD_WAIT:g} s before each sample (default 0: no waiting)")
    parser.add_argument("--keep-openblas-env", action="store_true",
                        help="do not re-execute without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    args = parser.parse_args()
    if args.cg_budget is None:
        args.cg_budget = 15.0 if args.quick else 60.0
    nt = resolve_n_threads(None)
    info = machine_info()
    print_machine(info)
    print(f"timing: best of up to {args.repeats} samples per method, fewer once {args.budget:g} s are spent; "
          f"tol {TOL:g}; sketchgn n_threads={nt}")
    report = {"machine": info, "config": {"quick": args.quick, "repeats": args.repeats, "budget_s": args.budget,
                                           "cg_budget_s": args.cg_budget, "tol": TOL, "d": D_FEATURES,
                                           "seed": SEED, "teacher_width": TEACHER_WIDTH},
              "sizes": []}
    # Warm-up: threads, first-call costs.
    Xw, yw, Ww, aw = make_problem(200, 512)
    Jw = sg.ReLUJacobian(Xw, Ww, aw)
    sg.solve_gn(Jw, Jw.forward() - yw)
    numpy_exact_solve(Xw, Ww, Jw.forward() - yw)
    t_start = time.perf_counter()
    for n, m in QUICK_SIZES if args.quick else FULL_SIZES:
        run_size(n, m, args, nt, report)
    run_sweep(*(QUICK_SWEEP_SIZE if args.quick else SWEEP_SIZE), args, nt, report)
    print_table(report)
    evaluate_targets(report, args.quick)
    report["elapsed_s"] = time.perf_counter() - t_start
    report["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=float))
    print(f"\nwrote {args.json} ({report['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
