#!/usr/bin/env python3
"""End-to-end benchmark of sketchgn.fwht against the CPU Walsh-Hadamard peers, in one run.

Every method transforms the same data in place on one thread:

    sg.fwht(x, out=x, n_threads=1)      the public function (validation + binding + kernel)
    sketchgn._core.fwht(x, x, False, 1)  the bare binding (no Python validation)
    ffht.fht_(x, 1)                      FFHT-unofficial, in place (ffht.fht returns a new array)
    fht_cpu.fht_1d_f32/f64(x)            fht-cpu, in place

For each size and dtype one 64-byte aligned work buffer is refilled from the same random data before
every sample; a sample is >= --min-time seconds of back-to-back calls; the methods take turns sample by
sample (so a noisy spell hits all of them), and the best sample of each is reported. Also measured in
the same run: one streaming read+write pass at n = 2^24 (np.multiply(x, 1.0, out=x)), and a (1024,
4096) float64 batch on 1 and 2 threads.

Targets: sg / min(peers) <= 0.8 at every size; sg <= 3 stream passes at 2^24; batch speed-up >= 1.8.

    python bench/bench_fwht.py                 # full run (a few minutes)
    python bench/bench_fwht.py --quick         # fewer sizes and samples
    python bench/bench_fwht.py --json out.json # default bench/results/fwht.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

import sketchgn as sg
from sketchgn import _core

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "fwht.json"

TARGET_PEER_RATIO = 0.8
TARGET_STREAM_RATIO = 3.0
TARGET_BATCH_SPEEDUP = 1.8
BATCH_SHAPE = (1024, 1 << 12)
STREAM_N = 1 << 24
CALL_COST_N = 4

FULL_SIZES = [1 << k for k in range(10, 23)] + [1 << 24]
QUICK_SIZES = [1 << 10, 1 << 14, 1 << 18, 1 << 22, 1 << 24]

INSTALL_HINTS = {
    "ffht": "pip install numpy pybind11 setuptools && pip install --no-build-isolation FFHT-unofficial",
    "fht_cpu": "pip install fht-cpu",
}


# ------------------------------------------------------------------------------------------------
# Methods. Each timing loop calls its target directly (no wrapper frame per call), so the Python
# loop overhead (~10 ns a call) is the same for every method.


def _loop_sg(x, k):
    f = sg.fwht
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(k):
        f(x, out=x, n_threads=1)
    return time.perf_counter() - w0, time.process_time() - c0


def _loop_core(x, k):
    f = _core.fwht
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(k):
        f(x, x, False, 1)
    return time.perf_counter() - w0, time.process_time() - c0


def _make_loop_ffht(ffht):
    in_place = getattr(ffht, "fht_", None)

    if in_place is not None:

        def loop(x, k):
            f = in_place
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(k):
                f(x, 1)
            return time.perf_counter() - w0, time.process_time() - c0

        return "ffht.fht_", loop

    def loop(x, k):  # original FFHT: ffht.fht(x) transforms in place
        f = ffht.fht
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(k):
            f(x)
        return time.perf_counter() - w0, time.process_time() - c0

    return "ffht.fht", loop


def _make_loop_fht_cpu(fht_cpu):
    funcs = {np.dtype(np.float32): fht_cpu.fht_1d_f32, np.dtype(np.float64): fht_cpu.fht_1d_f64}

    def loop(x, k):
        f = funcs[x.dtype]
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(k):
            f(x)
        return time.perf_counter() - w0, time.process_time() - c0

    return "fht_cpu", loop


def _loop_stream(x, k):
    f = np.multiply
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(k):
        f(x, 1.0, out=x)
    return time.perf_counter() - w0, time.process_time() - c0


def _make_loop_batch(n_threads):
    def loop(x, k):
        f = sg.fwht
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(k):
            f(x, out=x, n_threads=n_threads)
        return time.perf_counter() - w0, time.process_time() - c0

    return loop


def load_peers():
    """[(label, loop, version)] for the importable peers; prints how to install the others."""
    peers = []
    try:
        import ffht
    except ImportError as exc:
        print(f"note: peer ffht not importable ({exc}); install it with:\n    {INSTALL_HINTS['ffht']}")
    else:
        label, loop = _make_loop_ffht(ffht)
        peers.append((label, loop, _dist_version("FFHT-unofficial", "ffht", "FFHT")))
    try:
        import fht_cpu
    except ImportError as exc:
        print(f"note: peer fht_cpu not importable ({exc}); install it with:\n    {INSTALL_HINTS['fht_cpu']}")
    else:
        label, loop = _make_loop_fht_cpu(fht_cpu)
        peers.append((label, loop, _dist_version("fht_cpu", "fht-cpu") or getattr(fht_cpu, "__version__", None)))
    return peers


# ------------------------------------------------------------------------------------------------
# Timing machinery.


def aligned_empty(shape, dtype, align=64):
    """C-contiguous array whose data start on an `align`-byte boundary (numpy only guarantees 16)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    offset = (-raw.ctypes.data) % align
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def calibrate(loop, work, base, min_time):
    """Calls per sample so that one sample lasts >= min_time (also warms the method up)."""
    np.copyto(work, base)
    loop(work, 1)
    k = 1
    while True:
        np.copyto(work, base)
        wall, _ = loop(work, k)
        if wall >= min_time:
            return k
        if wall < min_time / 50:
            k *= 10
        else:
            k = max(k + 1, math.ceil(k * 1.2 * min_time / max(wall, 1e-9)))


def measure(methods, base, repeats, min_time):
    """Best-of-`repeats` seconds per call for each (label, loop); methods take turns every sample.

    Returns {label: {"inner": k, "samples_s": [...], "best_s": t, "cpu_over_wall": r}}."""
    work = aligned_empty(base.shape, base.dtype)
    inner = {label: calibrate(loop, work, base, min_time) for label, loop in methods}
    out = {label: {"inner": inner[label], "samples_s": [], "cpu_s": 0.0, "wall_s": 0.0} for label, _ in methods}
    for r in range(repeats):
        shift = r % len(methods)
        for label, loop in methods[shift:] + methods[:shift]:
            np.copyto(work, base)
            wall, cpu = loop(work, inner[label])
            rec = out[label]
            rec["samples_s"].append(wall / inner[label])
            rec["wall_s"] += wall
            rec["cpu_s"] += cpu
    for rec in out.values():
        rec["best_s"] = min(rec["samples_s"])
        rec["cpu_over_wall"] = rec.pop("cpu_s") / rec.pop("wall_s")
    return out


def check_same_result(methods, base):
    """{label: None if the in-place result matches sg.fwht's, else a reason}."""
    ref = aligned_empty(base.shape, base.dtype)
    np.copyto(ref, base)
    sg.fwht(ref, out=ref, n_threads=1)
    scale = float(np.max(np.abs(ref))) or 1.0
    tol = 1e-4 if base.dtype == np.float32 else 1e-10
    verdict = {}
    for label, loop in methods:
        work = aligned_empty(base.shape, base.dtype)
        np.copyto(work, base)
        try:
            loop(work, 1)
        except Exception as exc:  # a peer that rejects the input is reported, not fatal
            verdict[label] = f"raised {type(exc).__name__}: {exc}"
            continue
        err = float(np.max(np.abs(work - ref))) / scale
        verdict[label] = None if err <= tol else f"differs from sg.fwht (max rel. error {err:.2e}; not in place?)"
    return verdict


# ------------------------------------------------------------------------------------------------
# Reporting.


def fmt_time(s):
    if s is None:
        return "-"
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= f:
            return f"{s / f:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_signed(s):
    if s is None:
        return "-"
    return ("-" if s < 0 else "+") + fmt_time(abs(s)) if abs(s) >= 1e-9 else "0"


def fmt_n(n):
    k = n.bit_length() - 1
    return f"2^{k}" if n == 1 << k else str(n)


def _cpu_idle_share(interval=0.5):
    """Share of all CPUs idle over `interval` seconds (from /proc/stat), or None off Linux."""

    def snap():
        with open("/proc/stat") as fh:
            v = [int(t) for t in fh.readline().split()[1:]]
        return v[3] + v[4], sum(v[:8])  # idle + iowait, total (without guest time)

    try:
        i0, t0 = snap()
        time.sleep(interval)
        i1, t1 = snap()
    except (OSError, ValueError, IndexError):
        return None
    return (i1 - i0) / max(t1 - t0, 1)


def wait_for_idle(max_wait, what):
    """Wait up to max_wait seconds for the other CPUs to be >= 85% idle (noisy shared machines)."""
    if max_wait <= 0:
        return None
    deadline = time.monotonic() + max_wait
    share = _cpu_idle_share()
    while share is not None and share < 0.85 and time.monotonic() < deadline:
        share = _cpu_idle_share()
    if share is not None and share < 0.85:
        print(f"note: CPUs still only {share:.0%} idle after waiting {max_wait:g} s; measuring {what} anyway")
    return share


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _dist_version(*names):
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _git_state():
    root = HERE.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"head": head or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"head": None, "dirty": None}


def machine_info(peers):
    core_file = Path(_core.__file__)
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "sketchgn_version": sg.__version__,
        "build_info": sg.build_info(),
        "core_module": str(core_file),
        "core_module_mtime": datetime.datetime.fromtimestamp(core_file.stat().st_mtime).isoformat(timespec="seconds"),
        "source_tree": _git_state(),
        "numpy": np.__version__,
        "peers": {label: version for label, _, version in peers},
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_", "SKETCHGN_", "OPENBLAS_"))},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and samples (a smoke test)")
    ap.add_argument("--json", default=str(DEFAULT_JSON), metavar="PATH",
                    help=f"where to write every measurement (default {DEFAULT_JSON.relative_to(HERE.parent)})")
    ap.add_argument("--repeats", type=int, default=None, help="samples per method (default 9, quick 3)")
    ap.add_argument("--min-time", type=float, default=None,
                    help="seconds per sample (default 0.025, quick 0.01)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before each size and the batch, wait up to this long for the CPUs to be idle")
    ap.add_argument("--dtypes", default="float32,float64", help="comma-separated (default float32,float64)")
    args = ap.parse_args(argv)

    repeats = args.repeats or (3 if args.quick else 9)
    min_time = args.min_time or (0.01 if args.quick else 0.025)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    dtypes = [np.dtype(d) for d in args.dtypes.split(",")]

    peers = load_peers()
    info = machine_info(peers)
    bi = info["build_info"]
    print(f"sketchgn {info['sketchgn_version']}  simd={bi.get('simd')}  ({bi.get('compiler')}, {bi.get('build_type')}); "
          f"_core built {info['core_module_mtime']}")
    print(f"numpy {info['numpy']}; peers: " + (", ".join(f"{k} {v}" for k, v in info["peers"].items()) or "none"))
    print(f"cpu: {info['cpu_model']}, {info['cpus_usable']} usable cores; {info['platform']}; "
          f"load {', '.join(f'{v:.2f}' for v in info['loadavg_start'] or [])}")
    print(f"timing: best of {repeats} samples per method, each >= {min_time * 1e3:.0f} ms of back-to-back in-place "
          f"calls on one thread; the work buffer (64-byte aligned) is refilled from the same data before every sample")
    if not peers:
        print("warning: no peer importable; ratios against peers are not available")

    methods_base = [("sg.fwht", _loop_sg), ("_core.fwht", _loop_core)] + [(label, loop) for label, loop, _ in peers]
    peer_labels = [label for label, _, _ in peers]
    rng = np.random.default_rng(20240601)
    rows, excluded, call_cost = [], {}, {}

    header = (f"{'dtype':8} {'n':>5} {'sg.fwht':>10} {'_core.fwht':>10} {'sg-core':>9} "
              + "".join(f"{lab:>10} " for lab in peer_labels)
              + f"{'sg/peer':>8} {'core/peer':>9}  {'<=' + str(TARGET_PEER_RATIO):>6}")
    stream_rows = []
    for dt in dtypes:
        print()
        print(header)
        print("-" * len(header))
        for n in sizes:
            wait_for_idle(args.wait_idle, f"{dt.name} {fmt_n(n)}")
            base = aligned_empty((n,), dt)
            base[:] = rng.uniform(-1.0, 1.0, n)
            methods = list(methods_base)
            if n == STREAM_N:
                methods.append(("stream", _loop_stream))
            verdict = check_same_result([m for m in methods if m[0] != "stream"], base)
            for label, why in verdict.items():
                if why is not None:
                    excluded.setdefault(label, why)
            methods = [m for m in methods if verdict.get(m[0]) is None]
            res = measure(methods, base, repeats, min_time)
            t = {label: rec["best_s"] for label, rec in res.items()}
            peer_times = [t[p] for p in peer_labels if p in t]
            best_peer = min(peer_times) if peer_times else None
            t_sg, t_core = t.get("sg.fwht"), t.get("_core.fwht")
            ratio = t_sg / best_peer if best_peer and t_sg else None
            ratio_core = t_core / best_peer if best_peer and t_core else None
            slower_than = [p for p in peer_labels if p in t and t_sg is not None and t[p] < t_sg]
            ok = ratio is not None and ratio <= TARGET_PEER_RATIO
            overhead = t_sg - t_core if t_sg is not None and t_core is not None else None
            print(f"{dt.name:8} {fmt_n(n):>5} {fmt_time(t_sg):>10} {fmt_time(t_core):>10} "
                  f"{fmt_signed(overhead):>9} "
                  + "".join(f"{fmt_time(t.get(p)):>10} " for p in peer_labels)
                  + (f"{ratio:>8.2f} " if ratio is not None else f"{'n/a':>8} ")
                  + (f"{ratio_core:>9.2f}" if ratio_core is not None else f"{'n/a':>9}")
                  + f"  {'PASS' if ok else ('FAIL' if ratio is not None else 'n/a'):>6}", flush=True)
            row = {"dtype": dt.name, "n": n, "methods": res, "best_peer_s": best_peer, "sg_over_best_peer": ratio,
                   "core_over_best_peer": ratio_core, "call_overhead_s": overhead, "peers_faster_than_sg": slower_than,
                   "pass": ok}
            if "stream" in t:
                row["stream_s"] = t["stream"]
                stream_rows.append(row)
            rows.append(row)
            del base
        # Fixed cost of one call: a length-4 transform is a handful of additions.
        tiny = aligned_empty((CALL_COST_N,), dt)
        tiny[:] = rng.uniform(-1.0, 1.0, CALL_COST_N)
        ok_methods = [m for m in methods_base if check_same_result([m], tiny)[m[0]] is None]
        cres = measure(ok_methods, tiny, repeats, min_time)
        call_cost[dt.name] = cres
        print(f"per-call cost (n={CALL_COST_N}): "
              + ", ".join(f"{label} {fmt_time(rec['best_s'])}" for label, rec in cres.items()), flush=True)

    for label, why in excluded.items():
        print(f"warning: {label} excluded where its result {why}")

    # Threads actually used (process CPU time / wall time over all samples): ~1.0 means one thread.
    threads_used = {}
    for row in rows:
        for label, rec in row["methods"].items():
            threads_used[label] = max(threads_used.get(label, 0.0), rec["cpu_over_wall"])
    print()
    print("threads check (max over sizes of process CPU time / wall time; 1.0 = one thread): "
          + ", ".join(f"{k} {v:.2f}" for k, v in threads_used.items()))
    multi = [k for k, v in threads_used.items() if v > 1.3]
    if multi:
        print(f"warning: {', '.join(multi)} used more than one thread; rerun with OMP_NUM_THREADS=1")
    starved = min(rec["cpu_over_wall"] for row in rows for rec in row["methods"].values()) if rows else 1.0
    if starved < 0.9:
        print(f"warning: some samples got only {starved:.0%} of a core (other processes were running); "
              "the best-of samples are less affected, but expect noise")

    # Streaming pass at 2^24.
    print()
    stream_summary = []
    for row in stream_rows:
        ts = row["stream_s"]
        r_sg = row["methods"]["sg.fwht"]["best_s"] / ts
        others = ", ".join(f"{p} {row['methods'][p]['best_s'] / ts:.2f}" for p in peer_labels if p in row["methods"])
        ok = r_sg <= TARGET_STREAM_RATIO
        print(f"{row['dtype']:8} n={fmt_n(row['n'])}: one read+write pass (np.multiply(x, 1.0, out=x)) "
              f"{fmt_time(ts)}; sg.fwht = {r_sg:.2f} passes (target <= {TARGET_STREAM_RATIO:g}) "
              f"{'PASS' if ok else 'FAIL'}" + (f"   [peers: {others}]" if others else ""))
        stream_summary.append({"dtype": row["dtype"], "n": row["n"], "stream_s": ts, "sg_over_stream": r_sg,
                               "pass": ok})

    # Batch on 1 and 2 threads.
    bbase = aligned_empty(BATCH_SHAPE, np.float64)
    bbase[:] = rng.uniform(-1.0, 1.0, BATCH_SHAPE)
    wait_for_idle(args.wait_idle, "the batch")
    bres = measure([("n_threads=1", _make_loop_batch(1)), ("n_threads=2", _make_loop_batch(2))], bbase,
                   2 * repeats, max(min_time, 0.05))
    t1, t2 = bres["n_threads=1"]["best_s"], bres["n_threads=2"]["best_s"]
    speedup = t1 / t2
    print(f"float64 batch {BATCH_SHAPE[0]} x {fmt_n(BATCH_SHAPE[1])}: n_threads=1 {fmt_time(t1)}, "
          f"n_threads=2 {fmt_time(t2)} (CPU/wall {bres['n_threads=1']['cpu_over_wall']:.2f} and "
          f"{bres['n_threads=2']['cpu_over_wall']:.2f}); "
          f"speed-up {speedup:.2f} (target >= {TARGET_BATCH_SPEEDUP:g}) {'PASS' if speedup >= TARGET_BATCH_SPEEDUP else 'FAIL'}")

    slower = [(r["dtype"], r["n"], r["peers_faster_than_sg"]) for r in rows if r["peers_faster_than_sg"]]
    n_pass = sum(r["pass"] for r in rows)
    print()
    if not peers:
        print("sg/min(peers): not measured (no peer importable)")
    else:
        print(f"sg/min(peers) <= {TARGET_PEER_RATIO}: {n_pass}/{len(rows)} sizes pass")
        if slower:
            print("sketchgn is slower than a peer at: "
                  + "; ".join(f"{d} {fmt_n(n)} ({', '.join(p)})" for d, n, p in slower))
        else:
            print("sketchgn is at least as fast as every peer at every size")

    info["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    if info["loadavg_end"]:
        print(f"load average at the end: {', '.join(f'{v:.2f}' for v in info['loadavg_end'])}")
    report = {
        "machine": info,
        "settings": {"repeats": repeats, "min_time_s": min_time, "sizes": sizes, "dtypes": [d.name for d in dtypes],
                     "quick": args.quick, "alignment_bytes": 64, "wait_idle_s": args.wait_idle,
                     "targets": {"sg_over_best_peer": TARGET_PEER_RATIO, "sg_over_stream": TARGET_STREAM_RATIO,
                                 "batch_speedup": TARGET_BATCH_SPEEDUP}},
        "excluded": excluded,
        "threads_used": threads_used,
        "sizes": rows,
        "call_cost_n4": call_cost,
        "stream": stream_summary,
        "batch": {"shape": list(BATCH_SHAPE), "dtype": "float64", "methods": bres, "speedup": speedup,
                  "pass": speedup >= TARGET_BATCH_SPEEDUP},
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
