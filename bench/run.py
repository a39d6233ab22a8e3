#!/usr/bin/env python3
"""Run the whole benchmark suite: one command, a progress line per case, JSON and PNG in bench/results.

    python bench/run.py              # everything (42 min measured on 2 cores)
    python bench/run.py --quick      # every benchmark in its quick mode (< 5 min: ~4 min measured)
    python bench/run.py --only scaling --only solver

Benchmarks (each also runs on its own; see bench/README.md):

    fwht       bench_fwht.py      sg.fwht against FFHT and fht-cpu, one thread, n = 2^10 .. 2^24
    jacobian   bench_jacobian.py  J v, J^T u, matmat, gram against the NumPy/BLAS expressions
    solver     bench_solver.py    sketch / cg / exact solves of the Gauss-Newton system vs NumPy exact
    train      bench_train.py     time to a 1e-6 relative loss: GaussNewtonRegressor vs NumPy GN, Adam, L-BFGS
    scaling    bench_scaling.py   per-step cost against n and m, fitted exponents, log-log plots
    cpp        build_cpp.sh       Google Benchmark microbenchmarks (fwht, J v / J^T u) when
                                  libbenchmark-dev is installed; skipped with a note otherwise

Each benchmark prints its own ratios against the baselines it measures in the same run, and writes
bench/results/<name>.json. This driver adds bench/results/suite.json: which benchmarks ran, their exit
status, wall time, and the build they measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

PYTHON_BENCHES = {
    "fwht": "bench_fwht.py",
    "jacobian": "bench_jacobian.py",
    "solver": "bench_solver.py",
    "train": "bench_train.py",
    "scaling": "bench_scaling.py",
}
ORDER = ["fwht", "jacobian", "solver", "scaling", "train", "cpp"]


def run(cmd, name, log):
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(str(c) for c in cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=HERE.parent)
        for line in proc.stdout:
            fh.write(line)
            print(f"  {name} | {line}", end="", flush=True)
        proc.wait()
    seconds = time.perf_counter() - t0
    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {status} in {seconds:.0f} s (log {log})", flush=True)
    return {"status": status, "seconds": seconds, "log": str(log)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="quick mode of every benchmark (< 5 min: ~4 min measured)")
    ap.add_argument("--only", action="append", choices=ORDER, help="run only these (repeatable)")
    args = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    chosen = args.only or ORDER
    import sketchgn as sg

    suite = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick, "build_info": sg.build_info(),
             "benchmarks": {}}
    for name in ORDER:
        if name not in chosen:
            continue
        log = RESULTS / f"{name}.log"
        if name == "cpp":
            if shutil.which("cmake") is None:
                print("cpp: skipped (cmake not found)")
                continue
            # quick: one repetition, a short minimum time (a plain number of seconds: Google Benchmark
            # 1.7 rejects the "0.05s" form of >= 1.8)
            quick_env = ["REPS=1"] if args.quick else []
            quick_args = ["--benchmark_min_time=0.05"] if args.quick else []
            entry = run(["env", *quick_env, "bash", str(HERE / "build_cpp.sh"), *quick_args], name, log)
            entry_j = run(["env", "BENCH=jacobian", *quick_env, "bash", str(HERE / "build_cpp.sh"), *quick_args],
                          "cpp-jacobian", RESULTS / "cpp-jacobian.log")
            entry_s = run(["env", "BENCH=solver", "REPS=1", "bash", str(HERE / "build_cpp.sh")] +
                          (["--benchmark_filter=/(500|1000)/"] if args.quick else []), "cpp-solver",
                          RESULTS / "cpp-solver.log")
            suite["benchmarks"]["cpp"] = entry
            suite["benchmarks"]["cpp-jacobian"] = entry_j
            suite["benchmarks"]["cpp-solver"] = entry_s
            continue
        cmd = [sys.executable, str(HERE / PYTHON_BENCHES[name])] + (["--quick"] if args.quick else [])
        suite["benchmarks"][name] = run(cmd, name, log)
    suite["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (RESULTS / "suite.json").write_text(json.dumps(suite, indent=2))
    failed = [k for k, v in suite["benchmarks"].items() if v["status"] != "ok"]
    print(f"suite: {len(suite['benchmarks'])} benchmarks, {len(failed)} failed {failed if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
