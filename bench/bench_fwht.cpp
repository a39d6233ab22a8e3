// Google Benchmark of sketchgn::fwht (unnormalised, in place, natural order).
//
// Series:
//   BM_fwht_batch<T>/...    a (1024, 4096) batch on 1 and 2 threads (wall-clock time; runs first).
//   BM_fwht<T>/n            one transform of length n = 2^8 .. 2^24 on one thread; O(n log n) fit.
//
// bytes_per_second counts the array once per call (n * sizeof(T)), items_per_second counts elements
// transformed; "flops" counts the n log2 n additions/subtractions of the butterflies.
//
// The data are not reset between iterations: repeated unnormalised transforms grow by sqrt(n) per
// call and eventually reach inf/NaN. On x86-64 SSE/AVX, additions run at the same speed on inf/NaN as
// on finite values (only subnormals are slow, and growing values never become subnormal), so the
// timing does not depend on it, and resetting would cost a pass over memory per iteration.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "sketchgn/build_info.hpp"
#include "sketchgn/fwht.hpp"

namespace {

struct AlignedDelete {
  void operator()(void* p) const { ::operator delete(p, std::align_val_t(64)); }
};

// 64-byte aligned, filled with uniform [-1, 1) values (which also faults every page in before timing).
template <class T>
std::unique_ptr<T[], AlignedDelete> random_array(std::int64_t count, unsigned seed) {
  std::unique_ptr<T[], AlignedDelete> a(
      static_cast<T*>(::operator new(sizeof(T) * static_cast<std::size_t>(count), std::align_val_t(64))));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  for (std::int64_t i = 0; i < count; ++i) a[i] = static_cast<T>(dist(rng));
  return a;
}

template <class T>
void set_counters(benchmark::State& state, std::int64_t batch, std::int64_t n) {
  const auto calls = static_cast<std::int64_t>(state.iterations());
  state.SetItemsProcessed(calls * batch * n);
  state.SetBytesProcessed(calls * batch * n * static_cast<std::int64_t>(sizeof(T)));
  const double flops = static_cast<double>(calls) * static_cast<double>(batch) * static_cast<double>(n) *
                       std::log2(static_cast<double>(n));
  state.counters["flops"] =
      benchmark::Counter(flops, benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

template <class T>
void BM_fwht(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  auto x = random_array<T>(n, 42);
  for (auto _ : state) {
    sketchgn::fwht<T>(x.get(), x.get(), 1, n, false, 1);
    benchmark::DoNotOptimize(x.get());
    benchmark::ClobberMemory();
  }
  state.SetComplexityN(n);
  set_counters<T>(state, 1, n);
}

template <class T>
void BM_fwht_batch(benchmark::State& state) {
  const std::int64_t batch = state.range(0);
  const std::int64_t n = state.range(1);
  const int n_threads = static_cast<int>(state.range(2));
  auto x = random_array<T>(batch * n, 43);
  for (auto _ : state) {
    sketchgn::fwht<T>(x.get(), x.get(), batch, n, false, n_threads);
    benchmark::DoNotOptimize(x.get());
    benchmark::ClobberMemory();
  }
  set_counters<T>(state, batch, n);
}

double min_of(const std::vector<double>& v) {
  double m = v.empty() ? 0.0 : v.front();
  for (double e : v) m = e < m ? e : m;
  return m;
}

// The machine this runs on is often noisy: with --benchmark_repetitions=k also report the best run.
#define SKETCHGN_SINGLE_SERIES(T)                                  \
  BENCHMARK_TEMPLATE(BM_fwht, T)                                   \
      ->RangeMultiplier(2)                                         \
      ->Range(1 << 8, 1 << 24)                                     \
      ->ArgName("n")                                               \
      ->Unit(benchmark::kMicrosecond)                              \
      ->Complexity(benchmark::oNLogN)                              \
      ->ComputeStatistics("min", min_of)

#define SKETCHGN_BATCH_SERIES(T)                                   \
  BENCHMARK_TEMPLATE(BM_fwht_batch, T)                             \
      ->ArgNames({"batch", "n", "n_threads"})                      \
      ->Args({1024, 1 << 12, 1})                                   \
      ->Args({1024, 1 << 12, 2})                                   \
      ->UseRealTime()                                              \
      ->Unit(benchmark::kMicrosecond)                              \
      ->ComputeStatistics("min", min_of)

// The batch runs first: its 2-thread timing is the one a busy second core ruins, and build_cpp.sh
// (WAIT_IDLE) can only check for idle CPUs before the run starts.
SKETCHGN_BATCH_SERIES(float);
SKETCHGN_BATCH_SERIES(double);
SKETCHGN_SINGLE_SERIES(float);
SKETCHGN_SINGLE_SERIES(double);

}  // namespace

int main(int argc, char** argv) {
  const sketchgn::BuildInfo info = sketchgn::build_info();
  benchmark::AddCustomContext("sketchgn_version", info.version);
  benchmark::AddCustomContext("sketchgn_simd", sketchgn::fwht_kernel_name());
  benchmark::AddCustomContext("sketchgn_compiler", info.compiler);
  benchmark::AddCustomContext("sketchgn_openmp", info.openmp);
  benchmark::AddCustomContext("sketchgn_build_type", info.build_type);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
