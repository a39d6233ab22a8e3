#!/usr/bin/env python3
"""Scaling study: the cost of one Gauss-Newton step against n and against m.

The paper's claim is a per-step cost near-linear in the size of the Jacobian (n m d), against
n^2 m + n^3 for exact Gauss-Newton. One "step" here is what GaussNewtonRegressor does per iteration:
build the ReLUJacobian at W (pattern and forward pass), solve (J J^T) g = f - y to a relative residual
of --tol, and form the update J^T g. Methods:

    sketch (reused)  the preconditioner R was built at an earlier step (DESIGN.md: it barely ages) and is
                     only applied; per step O(k m n d + k n^2)
    sketch (fresh)   R is built in the step: + sketch O(n m log m) + factorization O(s n^2 + n^3)
    exact            Gram O(n^2 m / 64 + n^2 d) + Cholesky O(n^3 / 3)

Sweeps: n doubling (default 1000 .. 16000) at m = 8192, d = 32; m doubling (2048 .. 65536) at n = 2000.
Fitted exponents (least squares on log-log) are printed and plotted with reference slopes; peak extra
resident memory of each step is sampled from /proc/self/statm. Targets (PASS/FAIL): exponent in n of
"sketch (reused)" <= 1.15; exponent in m <= 1.1 for "sketch (reused)" and "exact"; at the largest n,
"sketch (reused)" per step >= 5x faster than "exact".

Like bench_solver.py it re-executes itself without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (which this
machine sets, forcing OpenBLAS's slower Haswell kernels on the exact solver's Cholesky) unless
--keep-openblas-env is given.

    python bench/bench_scaling.py            # full (~15 min on 2 cores)
    python bench/bench_scaling.py --quick    # n up to 4000, m up to 16384 (~2 min)
"""

from __future__ import annotations

import bench_solver  # noqa: F401  first: re-executes without the OpenBLAS overrides before numpy loads

import argparse  # noqa: E402
import json  # noqa: E402
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

import sketchgn as sg

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "scaling.json"
D = 32
M_FIXED = 8192
N_FIXED = 2000


def rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms by a thread."""

    def __enter__(self):
        self.base = rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.extra = self.peak - self.base


def problem(n, m, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, D))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    W = rng.standard_normal((m, D))
    a = rng.choice([-1.0, 1.0], m)
    teacher = np.random.default_rng(seed + 1)
    Wt = teacher.standard_normal((64, D))
    at = teacher.choice([-1.0, 1.0], 64)
    y = np.maximum(X @ Wt.T, 0) @ at / 8.0
    return X, W, a, y


def one_step(X, W, a, y, method, tol, P=None):
    J = sg.ReLUJacobian(X, W, a)
    r = J.forward() - y
    res = sg.solve_gn(J, r, method="sketch" if method.startswith("sketch") else "exact", tol=tol,
                      preconditioner=P)
    J.rmatvec(res.g)
    return res


def measure(n, m, methods, tol, repeats):
    X, W, a, y = problem(n, m)
    out = {}
    P = None
    if "sketch (reused)" in methods:
        # built "at an earlier step": at a nearby W
        W_prev = W + 1e-2 * np.random.default_rng(7).standard_normal(W.shape)
        t0 = time.perf_counter()
        P = sg.SketchPreconditioner(sg.ReLUJacobian(X, W_prev, a))
        build = time.perf_counter() - t0
        out["preconditioner_build"] = build
    for method in methods:
        best, best_rss, info = np.inf, 0, None
        for _ in range(repeats):
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                res = one_step(X, W, a, y, method, tol, P if method == "sketch (reused)" else None)
                t = time.perf_counter() - t0
            if t < best:
                best, best_rss, info = t, mem.extra, res
        out[method] = {
            "seconds": best,
            "peak_extra_rss_bytes": int(best_rss),
            "iterations": int(info.iterations),
            "residual": float(info.residual),
            "timings": info.timings,
        }
        print(f"  n={n:6d} m={m:6d} {method:16s} {best:9.3f} s  iterations {info.iterations:4d}  "
              f"residual {info.residual:.1e}  peak extra RSS {best_rss / 2**20:8.1f} MiB", flush=True)
    return out


def fit_exponent(xs, ts):
    xs, ts = np.log(np.asarray(xs, float)), np.log(np.asarray(ts, float))
    slope, _ = np.polyfit(xs, ts, 1)
    return float(slope)


def plot(path, sweep, key, results, methods, xlabel):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for method in methods:
        pts = [(r[key], r[method]["seconds"]) for r in results if method in r]
        if len(pts) < 2:
            continue
        xs, ts = zip(*pts)
        ax.loglog(xs, ts, marker="o", label=f"{method} (slope {fit_exponent(xs, ts):.2f})")
    x0 = results[0][key]
    t0 = min(r[m]["seconds"] for r in results[:1] for m in methods if m in r)
    xs = np.array([r[key] for r in results], float)
    for p, style in ((1, ":"), (2, "--"), (3, "-.")):
        ax.loglog(xs, t0 * (xs / x0) ** p, "k" + style, lw=0.8, alpha=0.5, label=f"slope {p}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("seconds per Gauss-Newton step")
    ax.set_title(f"sketchgn per-step cost against {key} ({sweep})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"plot: {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n up to 4000, m up to 16384")
    ap.add_argument("--ns", default=None, help="comma-separated n values")
    ap.add_argument("--ms", default=None, help="comma-separated m values")
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-fresh-n", type=int, default=16000,
                    help="largest n for 'sketch (fresh)' (its n^3/3 Cholesky dominates: ~8 s at 16000)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--keep-openblas-env", action="store_true",
                    help="do not re-execute without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (the exact "
                         "solver's Cholesky runs on OpenBLAS)")
    args = ap.parse_args(argv)
    ns = [int(v) for v in args.ns.split(",")] if args.ns else ([1000, 2000, 4000] if args.quick else
                                                                [1000, 2000, 4000, 8000, 16000])
    ms = [int(v) for v in args.ms.split(",")] if args.ms else ([2048, 4096, 8192, 16384] if args.quick else
                                                                [2048, 4096, 8192, 16384, 32768, 65536])
    info = sg.build_info()
    print(f"sketchgn {info['version']} simd={info['simd']} threads={info['max_threads']} "
          f"({platform.processor() or platform.machine()}); tol={args.tol}")

    results_n = []
    print(f"sweep over n at m={M_FIXED}, d={D}")
    for n in ns:
        methods = ["sketch (reused)", "exact"] + (["sketch (fresh)"] if n <= args.max_fresh_n else [])
        r = measure(n, M_FIXED, methods, args.tol, args.repeats if n <= 4000 else 1)
        r["n"] = n
        results_n.append(r)
    results_m = []
    print(f"sweep over m at n={N_FIXED}, d={D}")
    for m in ms:
        r = measure(N_FIXED, m, ["sketch (reused)", "exact"], args.tol, args.repeats)
        r["m"] = m
        results_m.append(r)

    summary = {}
    methods = ["sketch (reused)", "sketch (fresh)", "exact"]
    for sweep, key, results in (("n", "n", results_n), ("m", "m", results_m)):
        for method in methods:
            pts = [(r[key], r[method]["seconds"]) for r in results if method in r]
            if len(pts) >= 2:
                summary[f"exponent_{sweep}_{method}"] = fit_exponent(*zip(*pts))
    last = results_n[-1]
    speedup = last["exact"]["seconds"] / last["sketch (reused)"]["seconds"]
    checks = [
        ("exponent in n of sketch (reused) <= 1.15", summary.get("exponent_n_sketch (reused)", np.inf) <= 1.15,
         summary.get("exponent_n_sketch (reused)")),
        ("exponent in m of sketch (reused) <= 1.1", summary.get("exponent_m_sketch (reused)", np.inf) <= 1.1,
         summary.get("exponent_m_sketch (reused)")),
        ("exponent in m of exact <= 1.1", summary.get("exponent_m_exact", np.inf) <= 1.1,
         summary.get("exponent_m_exact")),
        (f"at n={last['n']}: sketch (reused) >= 5x faster than exact", speedup >= 5, speedup),
    ]
    print("\nfitted exponents:")
    for k, v in summary.items():
        print(f"  {k:32s} {v:.3f}")
    print("targets:")
    for name, ok, value in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}  ({value:.3f})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    plot(args.json.with_name("scaling_n.png"), f"m={M_FIXED}, d={D}", "n", results_n, methods, "n (samples)")
    plot(args.json.with_name("scaling_m.png"), f"n={N_FIXED}, d={D}", "m", results_m, methods[::2], "m (width)")
    payload = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "build_info": info,
                    "numpy": np.__version__, "python": sys.version},
        "tol": args.tol,
        "sweep_n": results_n,
        "sweep_m": results_m,
        "exponents": summary,
        "targets": [{"name": n, "pass": bool(ok), "value": v} for n, ok, v in checks],
    }
    args.json.write_text(json.dumps(payload, indent=2, default=float))
    print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
