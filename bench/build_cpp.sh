#!/usr/bin/env bash
# Configure, build and run the C++ microbenchmarks (Google Benchmark) in their own build directory.
#
#   bench/build_cpp.sh                      # build build/bench, run, write bench/results/fwht_cpp.json
#   bench/build_cpp.sh --build-only         # configure and build only
#   bench/build_cpp.sh --benchmark_filter=BM_fwht_batch   # any further arguments go to the benchmark
#   BENCH=jacobian bench/build_cpp.sh       # the ReLU Jacobian products instead (bench_jacobian.cpp),
#                                           # writes bench/results/jacobian_cpp.json
#   BENCH=solver REPS=1 bench/build_cpp.sh  # sketch, PCG iteration, fresh/reused GN step, exact
#                                           # (bench_solver.cpp) -> bench/results/solver_cpp.json
#
# Environment: PYTHON (interpreter whose site-packages hold cmeel-eigen; default: `python` on PATH,
# i.e. the activated virtualenv), BUILD_DIR (default build/bench), REPS (repetitions per benchmark,
# default 3; the console shows mean/median/stddev/cv/min, the JSON keeps every run), WAIT_IDLE
# (seconds to wait, at most, for idle CPUs before running: multi-threaded timings collapse while another
# process holds a core; default 0), BENCH (fwht, the default, or jacobian: which benchmark to build
# and run).
#
# Needs: cmake >= 3.18, a C++17 compiler with OpenMP, Eigen 3.4 (PyPI cmeel-eigen in $PYTHON's
# environment, or Debian libeigen3-dev) and Google Benchmark (Debian libbenchmark-dev).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

build_dir="${BUILD_DIR:-build/bench}"
reps="${REPS:-3}"
bench="${BENCH:-fwht}"
case "$bench" in
  fwht|jacobian|solver) ;;
  *) echo "error: BENCH must be fwht, jacobian or solver, got '$bench'" >&2; exit 1 ;;
esac
out_json="bench/results/${bench}_cpp.json"

build_only=0
run_args=()
for a in "$@"; do
  case "$a" in
    --build-only) build_only=1 ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) run_args+=("$a") ;;
  esac
done

command -v cmake >/dev/null || { echo "error: cmake not found (pip install cmake, or apt-get install cmake)" >&2; exit 1; }

python_exe="${PYTHON:-$(command -v python || command -v python3 || true)}"
cmake_args=(-S . -B "$build_dir" -DSKETCHGN_BUILD_BENCHMARKS=ON -DCMAKE_BUILD_TYPE=Release)
if [[ -n "$python_exe" ]]; then
  cmake_args+=("-DPython_EXECUTABLE=$python_exe")
  # cmeel-eigen installs Eigen under <site-packages>/cmeel.prefix (the top-level CMakeLists also asks
  # Python for these folders; passing them here makes the search explicit).
  cmeel_prefix="$("$python_exe" -c "import os, sys; print(';'.join(os.path.join(p, 'cmeel.prefix') for p in sys.path if os.path.isdir(os.path.join(p, 'cmeel.prefix'))))" 2>/dev/null || true)"
  if [[ -n "$cmeel_prefix" ]]; then
    cmake_args+=("-DCMAKE_PREFIX_PATH=$cmeel_prefix")
  else
    echo "note: no cmeel.prefix folder on $python_exe's sys.path; relying on a system Eigen." >&2
    echo "      (to use PyPI Eigen: $python_exe -m pip install 'cmeel-eigen>=3.4,<3.5')" >&2
  fi
fi

mkdir -p "$build_dir" bench/results
log="$build_dir/configure.log"
echo "+ cmake ${cmake_args[*]}"
if ! cmake "${cmake_args[@]}" 2>&1 | tee "$log"; then
  echo >&2
  if grep -q -i "benchmark" "$log"; then
    cat >&2 <<'EOF'
error: CMake could not find Google Benchmark (find_package(benchmark)). Install it with
    sudo apt-get update && sudo apt-get install -y libbenchmark-dev     # Debian / Ubuntu
    conda install -c conda-forge benchmark                              # conda
or build it from source and pass -Dbenchmark_DIR=<prefix>/lib/cmake/benchmark via CMAKE_ARGS.
EOF
  fi
  if grep -q "Eigen3" "$log"; then
    cat >&2 <<EOF
error: CMake could not find Eigen 3.4. Install it with
    ${python_exe:-python} -m pip install 'cmeel-eigen>=3.4,<3.5'     # then re-run this script
    sudo apt-get install -y libeigen3-dev                            # or the system package
EOF
  fi
  exit 1
fi

cmake --build "$build_dir" --target "bench_$bench" -j "$(nproc 2>/dev/null || echo 2)"
exe="$build_dir/bench/bench_$bench"
echo "built $exe"
[[ $build_only == 1 ]] && exit 0

# Share of CPU time idle over half a second, in percent (Linux /proc/stat; 100 elsewhere).
idle_percent() {
  [[ -r /proc/stat ]] || { echo 100; return; }
  local a b
  read -r -a a < /proc/stat; sleep 0.5; read -r -a b < /proc/stat
  local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  echo $(( total > 0 ? 100 * idle / total : 100 ))
}
wait_idle="${WAIT_IDLE:-0}"
if [[ "$wait_idle" != 0 ]]; then
  deadline=$(( SECONDS + ${wait_idle%.*} ))
  while (( $(idle_percent) < 85 && SECONDS < deadline )); do :; done
  echo "CPUs idle: $(idle_percent)% (waited up to ${wait_idle}s)"
fi

echo "+ $exe --benchmark_repetitions=$reps ... ${run_args[*]:-}"
"$exe" \
  --benchmark_repetitions="$reps" \
  --benchmark_display_aggregates_only=true \
  --benchmark_out="$out_json" --benchmark_out_format=json \
  "${run_args[@]}"
echo "wrote $out_json"

summary_py="${python_exe:-$(command -v python3 || true)}"
if [[ -n "$summary_py" ]]; then
  echo
  if [[ "$bench" == jacobian ]]; then
    "$summary_py" bench/bench_jacobian.py --summarize-cpp "$out_json"
  elif [[ "$bench" == solver ]]; then
    :  # the console table above is the summary (one repetition of the step benchmarks)
  else
    "$summary_py" bench/summarize_cpp.py "$out_json"
  fi
fi
