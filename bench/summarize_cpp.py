#!/usr/bin/env python3
"""Compact summary of a Google Benchmark JSON written by bench_fwht (run by build_cpp.sh).

For each benchmark the best repetition (the console's `_min` rows carry the best time, but Google
Benchmark applies the same statistic to the counters, so their rates are the lowest, not the best).
Single-thread benchmarks are summarised by CPU time, which leaves out the time the process was
descheduled on a busy machine; the multi-threaded batch (UseRealTime) by wall-clock time.

    python bench/summarize_cpp.py bench/results/fwht_cpp.json
"""

from __future__ import annotations

import collections
import json
import math
import re
import sys

SCALE = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def fmt(t):
    for unit, f in (("ms", 1e-3), ("us", 1e-6)):
        if t >= f:
            return f"{t / f:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


def main(path):
    with open(path) as fh:
        d = json.load(fh)
    best = collections.defaultdict(lambda: math.inf)
    reps = 1
    bigo = {}
    for b in d["benchmarks"]:
        if b.get("run_type", "iteration") == "iteration":
            # "/real_time" in the name marks UseRealTime() benchmarks (the multi-threaded batch).
            key = "real_time" if b["run_name"].endswith("/real_time") else "cpu_time"
            best[b["run_name"]] = min(best[b["run_name"]], b[key] * SCALE[b["time_unit"]])
            reps = max(reps, b.get("repetitions", 1))
        elif b.get("aggregate_name") == "BigO":
            bigo.setdefault(b["run_name"], {})["coef"] = b["cpu_coefficient"] * SCALE[b["time_unit"]] * 1e9
        elif b.get("aggregate_name") == "RMS":
            bigo.setdefault(b["run_name"], {})["rms"] = b["rms"]

    single = collections.defaultdict(dict)
    batch = collections.defaultdict(dict)
    for name, t in best.items():
        m = re.fullmatch(r"BM_fwht<(float|double)>/n:(\d+)", name)
        if m:
            single[int(m.group(2))][m.group(1)] = t
        m = re.fullmatch(r"BM_fwht_batch<(float|double)>/batch:(\d+)/n:(\d+)/n_threads:(\d+)(/real_time)?", name)
        if m:
            batch[(m.group(1), int(m.group(2)), int(m.group(3)))][int(m.group(4))] = t

    print(f"summary: best of {reps} repetition(s) (CPU time for one thread, wall time for the batch); "
          f"simd={d['context'].get('sketchgn_simd')}; GB/s = 1e9 bytes/s, the array counted once per call")
    if single:
        print(f"{'n':>6} {'float32':>10} {'GB/s':>6} {'float64':>10} {'GB/s':>6}")
        for n in sorted(single):
            row = f"{'2^%d' % (n.bit_length() - 1):>6}"
            for dt, size in (("float", 4), ("double", 8)):
                t = single[n].get(dt)
                row += f" {fmt(t):>10} {n * size / t / 1e9:6.1f}" if t else f" {'-':>10} {'-':>6}"
            print(row)
    for fam, v in sorted(bigo.items()):
        if "coef" in v:
            print(f"{fam}: {v['coef']:.4g} ns * n log2 n (RMS {v.get('rms', float('nan')):.0%})")
    for (dt, b, n), ts in sorted(batch.items()):
        line = f"batch {b} x {n} {dt}: " + ", ".join(
            f"{k} thread{'s' if k > 1 else ''} {fmt(t)}" for k, t in sorted(ts.items()))
        if 1 in ts and 2 in ts:
            line += f"; speed-up {ts[1] / ts[2]:.2f}"
        print(line)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/fwht_cpp.json"))
