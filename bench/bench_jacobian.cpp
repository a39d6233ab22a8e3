// Google Benchmark of the matrix-free ReLU Jacobian products sketchgn::ReLUJacobian::matvec and
// ::rmatvec (J v and J^T u), on every core.
//
// Series (d = 32; n = 1000..16000, m = 1024..32768; X unit-norm rows, W ~ N(0, I), a in {-1, +1}):
//   BM_matvec/dense, BM_rmatvec/dense    threshold 0 (density 1/2), path dense;
//                                       complexity N = n m d, fit O(N): the _BigO coefficient is
//                                       seconds per (n m d), i.e. 2 / GFLOP rate.
//   BM_matvec/sparse, BM_rmatvec/sparse  threshold 1.645 (w.x ~ N(0, 1), so density ~5%), path sparse;
//                                       complexity N = nnz(D) d, fit O(N).
//
// Counters: "flop" = 2 n m d (dense) or 2 nnz d (sparse) per call, shown as a rate (FLOP/s);
// "density" = nnz / (n m). Times are wall-clock (UseRealTime): the products run on OpenMP threads.
// With --benchmark_repetitions the "_min" row has the best time; its rate counters are the lowest of
// the repetitions, not the best (Google Benchmark applies the statistic to each column), so
// `python bench/bench_jacobian.py --summarize-cpp <json>` recomputes rates from the best time.
//
// Own flags (taken out before Google Benchmark parses the rest):
//   --threads=N   threads for the products (default: every core, omp_get_max_threads()). On a shared
//                 machine --threads=1 measures the kernels without waiting on a busy second core.
//   --all-stats   show every aggregate on the console (by default, with repetitions, only the _min,
//                 _BigO and _RMS rows; the --benchmark_out JSON always holds every run).
//
// The operator is built once per (n, m, path) outside the timed loop and kept while repetitions of the
// same arguments run (construction computes the pattern: one GEMM-sized pass).
#include <benchmark/benchmark.h>

#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "sketchgn/build_info.hpp"
#include "sketchgn/relu_jacobian.hpp"
#include "sketchgn/simd.hpp"

namespace {

using i64 = std::int64_t;
using Path = sketchgn::ReLUJacobian::Path;

constexpr i64 kD = 32;
// Upper 5% point of N(0, 1): for unit-norm x and w ~ N(0, I), w.x ~ N(0, 1).
constexpr double kSparseThreshold = 1.645;

int g_threads = 0;  // --threads; 0 = every core
int all_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

// Console output without the mean/median/stddev/cv rows (the best repetition is the _min row).
class MinOnlyConsoleReporter : public benchmark::ConsoleReporter {
 public:
  MinOnlyConsoleReporter() : benchmark::ConsoleReporter(OO_None) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    std::vector<Run> kept;
    for (const Run& r : runs) {
      const bool hidden = r.run_type == Run::RT_Aggregate &&
                          (r.aggregate_name == "mean" || r.aggregate_name == "median" ||
                           r.aggregate_name == "stddev" || r.aggregate_name == "cv");
      if (!hidden) kept.push_back(r);
    }
    if (!kept.empty()) benchmark::ConsoleReporter::ReportRuns(kept);
  }
};

struct Problem {
  i64 n = 0, m = 0, d = 0;
  Path path = Path::dense;
  double threshold = 0.0;
  std::vector<double> V, u, out, G;
  std::unique_ptr<sketchgn::ReLUJacobian> J;
};

// The last problem built; repetitions of one benchmark run back to back, so they share it.
Problem& problem(i64 n, i64 m, i64 d, Path path, double threshold) {
  static Problem p;
  if (p.J && p.n == n && p.m == m && p.d == d && p.path == path && p.threshold == threshold) return p;
  p.J.reset();
  std::mt19937_64 rng(20240601u + static_cast<std::uint64_t>(n * 131 + m));
  std::normal_distribution<double> normal;
  std::vector<double> X(static_cast<std::size_t>(n * d)), W(static_cast<std::size_t>(m * d)),
      a(static_cast<std::size_t>(m));
  for (i64 i = 0; i < n; ++i) {
    double s = 0.0;
    for (i64 k = 0; k < d; ++k) {
      const double v = normal(rng);
      X[static_cast<std::size_t>(i * d + k)] = v;
      s += v * v;
    }
    const double inv = 1.0 / std::sqrt(s);
    for (i64 k = 0; k < d; ++k) X[static_cast<std::size_t>(i * d + k)] *= inv;
  }
  for (auto& w : W) w = normal(rng);
  for (auto& v : a) v = (rng() & 1u) ? 1.0 : -1.0;
  p.V.resize(static_cast<std::size_t>(m * d));
  for (auto& v : p.V) v = normal(rng);
  p.u.resize(static_cast<std::size_t>(n));
  for (auto& v : p.u) v = normal(rng);
  p.out.assign(static_cast<std::size_t>(n), 0.0);
  p.G.assign(static_cast<std::size_t>(m * d), 0.0);
  p.n = n, p.m = m, p.d = d, p.path = path, p.threshold = threshold;
  p.J = std::make_unique<sketchgn::ReLUJacobian>(X.data(), n, d, W.data(), m, a.data(), threshold, path,
                                                 all_threads());
  return p;
}

template <bool Transposed, Path P>
void BM_product(benchmark::State& state) {
  const i64 n = state.range(0), m = state.range(1);
  const double threshold = P == Path::sparse ? kSparseThreshold : 0.0;
  Problem& p = problem(n, m, kD, P, threshold);
  const int threads = all_threads();
  for (auto _ : state) {
    if constexpr (Transposed) {
      p.J->rmatvec(p.u.data(), p.G.data(), threads);
      benchmark::DoNotOptimize(p.G.data());
    } else {
      p.J->matvec(p.V.data(), p.out.data(), threads);
      benchmark::DoNotOptimize(p.out.data());
    }
    benchmark::ClobberMemory();
  }
  const i64 work = P == Path::sparse ? p.J->nnz() * kD : n * m * kD;
  state.SetComplexityN(work);
  state.counters["flop"] = benchmark::Counter(2.0 * static_cast<double>(work) * state.iterations(),
                                              benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["density"] = p.J->density();
  state.counters["threads"] = threads;
}

double min_of(const std::vector<double>& v) {
  double m = v.empty() ? 0.0 : v.front();
  for (double e : v) m = e < m ? e : m;
  return m;
}

const std::vector<i64> kNs = {1000, 2000, 4000, 8000, 16000};
const std::vector<i64> kMs = {1024, 2048, 4096, 8192, 16384, 32768};

#define SKETCHGN_JACOBIAN_SERIES(NAME, TRANSPOSED, PATH)          \
  BENCHMARK_TEMPLATE(BM_product, TRANSPOSED, PATH)                \
      ->Name(NAME)                                                \
      ->ArgsProduct({kNs, kMs})                                   \
      ->ArgNames({"n", "m"})                                      \
      ->UseRealTime()                                             \
      ->Unit(benchmark::kMicrosecond)                             \
      ->Complexity(benchmark::oN)                                 \
      ->ComputeStatistics("min", min_of)

SKETCHGN_JACOBIAN_SERIES("BM_matvec/dense", false, Path::dense);
SKETCHGN_JACOBIAN_SERIES("BM_rmatvec/dense", true, Path::dense);
SKETCHGN_JACOBIAN_SERIES("BM_matvec/sparse", false, Path::sparse);
SKETCHGN_JACOBIAN_SERIES("BM_rmatvec/sparse", true, Path::sparse);

}  // namespace

int main(int argc, char** argv) {
  bool all_stats = false, custom_format = false;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--threads=", 0) == 0) {
      g_threads = std::atoi(arg.c_str() + 10);
      if (g_threads < 1) {
        std::fprintf(stderr, "bench_jacobian: --threads must be a positive integer, got '%s'\n", arg.c_str());
        return 1;
      }
    } else if (arg == "--all-stats") {
      all_stats = true;
    } else {
      custom_format = custom_format || arg.rfind("--benchmark_format", 0) == 0;
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  const sketchgn::BuildInfo info = sketchgn::build_info();
  benchmark::AddCustomContext("sketchgn_version", info.version);
  benchmark::AddCustomContext("sketchgn_simd", sketchgn::simd_name(sketchgn::active_simd_level()));
  benchmark::AddCustomContext("sketchgn_compiler", info.compiler);
  benchmark::AddCustomContext("sketchgn_openmp", info.openmp);
  benchmark::AddCustomContext("sketchgn_build_type", info.build_type);
  benchmark::AddCustomContext("sketchgn_threads", std::to_string(all_threads()));
  benchmark::AddCustomContext("d", std::to_string(kD));
  benchmark::AddCustomContext("sparse_threshold", std::to_string(kSparseThreshold));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (all_stats || custom_format) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    MinOnlyConsoleReporter console;
    benchmark::RunSpecifiedBenchmarks(&console);
  }
  benchmark::Shutdown();
  return 0;
}
