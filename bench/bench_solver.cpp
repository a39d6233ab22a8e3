// Google Benchmark of the pieces of a sketched Gauss-Newton step (issue: benchmark suite).
//
// Series (d = 32, X unit-norm rows, W ~ N(0, I), a in {-1, +1}, r a fixed random vector):
//   BM_kronecker_sketch/n/m   S J^T with the Kronecker SRHT, s = 4n; complexity N = n (m log2 m + s)
//   BM_pcg_iteration/n/m      one PCG iteration (J^T u, J v, two triangular solves with R);
//                             complexity N = n m d (+ the n^2 of the solves)
//   BM_step_reused/n/m        one Gauss-Newton step with a reused R: build J at W, PCG to 1e-6
//   BM_step_fresh/n/m         the same with R built in the step: sketch, SYRK, Cholesky (Eigen)
//   BM_exact/n/m              exact: J J^T by popcounts, Cholesky (Eigen LLT), solve
// Dense factorizations use Eigen here (the wheel uses SciPy's LAPACK for them), so their times are an
// upper bound; the products, sketch and PCG loop are the library's own.
#include <benchmark/benchmark.h>

#include <omp.h>

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "sketchgn/jacobian_sketch.hpp"
#include "sketchgn/kronecker_srht.hpp"
#include "sketchgn/pcg.hpp"
#include "sketchgn/relu_jacobian.hpp"

namespace {

using i64 = std::int64_t;
using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr i64 kD = 32;

int threads() { return omp_get_max_threads(); }

struct Data {
  i64 n = 0, m = 0;
  std::vector<double> X, W, a, r;
};

Data make(i64 n, i64 m) {
  Data p;
  p.n = n;
  p.m = m;
  std::mt19937_64 rng(12345u + static_cast<std::uint64_t>(n * 7 + m));
  std::normal_distribution<double> normal;
  p.X.resize(static_cast<std::size_t>(n * kD));
  p.W.resize(static_cast<std::size_t>(m * kD));
  p.a.resize(static_cast<std::size_t>(m));
  p.r.resize(static_cast<std::size_t>(n));
  for (i64 i = 0; i < n; ++i) {
    double s = 0;
    for (i64 k = 0; k < kD; ++k) s += (p.X[i * kD + k] = normal(rng)) * p.X[i * kD + k];
    for (i64 k = 0; k < kD; ++k) p.X[i * kD + k] /= std::sqrt(s);
  }
  for (auto& w : p.W) w = normal(rng);
  for (auto& v : p.a) v = rng() & 1 ? 1.0 : -1.0;
  for (auto& v : p.r) v = normal(rng);
  return p;
}

std::unique_ptr<sketchgn::ReLUJacobian> jacobian(const Data& p) {
  return std::make_unique<sketchgn::ReLUJacobian>(p.X.data(), p.n, kD, p.W.data(), p.m, p.a.data(), 0.0,
                                                  sketchgn::ReLUJacobian::Path::dense, threads());
}

// R (row-major upper) of the Kronecker sketch of J^T with s = 4n, by SYRK + Cholesky (Eigen).
RowMatrix preconditioner(const sketchgn::ReLUJacobian& J) {
  const i64 n = J.n(), s = 4 * n;
  const sketchgn::KroneckerSRHT S(J.m(), J.d(), s, 7);
  RowMatrix T(n, s);  // (S J^T)^T
  sketchgn::sketch_jacobian_kronecker(J, S, T.data(), threads());
  Eigen::MatrixXd C = Eigen::MatrixXd::Zero(n, n);
  C.selfadjointView<Eigen::Lower>().rankUpdate(T);
  Eigen::LLT<Eigen::MatrixXd> llt(C);
  return llt.matrixU();
}

void BM_kronecker_sketch(benchmark::State& state) {
  const Data p = make(state.range(0), state.range(1));
  const auto J = jacobian(p);
  const i64 s = 4 * p.n;
  const sketchgn::KroneckerSRHT S(p.m, kD, s, 7);
  std::vector<double> T(static_cast<std::size_t>(p.n * s));
  for (auto _ : state) sketchgn::sketch_jacobian_kronecker(*J, S, T.data(), threads());
  state.SetComplexityN(p.n * (static_cast<i64>(p.m * std::log2(static_cast<double>(p.m))) + s));
}

void BM_pcg_iteration(benchmark::State& state) {
  const Data p = make(state.range(0), state.range(1));
  const auto J = jacobian(p);
  const RowMatrix R = preconditioner(*J);
  std::vector<double> g(static_cast<std::size_t>(p.n));
  for (auto _ : state) {
    std::fill(g.begin(), g.end(), 0.0);
    const auto res = sketchgn::pcg_solve<double>(*J, p.r.data(), 0.0, R.data(), 1e-300, 1, g.data(), threads(), {});
    benchmark::DoNotOptimize(res.residual);
  }
  state.SetComplexityN(p.n * p.m * kD);
}

void BM_step_reused(benchmark::State& state) {
  const Data p = make(state.range(0), state.range(1));
  const RowMatrix R = preconditioner(*jacobian(p));
  std::vector<double> g(static_cast<std::size_t>(p.n));
  i64 iterations = 0;
  for (auto _ : state) {
    const auto J = jacobian(p);
    std::fill(g.begin(), g.end(), 0.0);
    iterations = sketchgn::pcg_solve<double>(*J, p.r.data(), 0.0, R.data(), 1e-6, 500, g.data(), threads(), {}).iterations;
  }
  state.counters["cg_iterations"] = static_cast<double>(iterations);
  state.SetComplexityN(p.n * p.m * kD);
}

void BM_step_fresh(benchmark::State& state) {
  const Data p = make(state.range(0), state.range(1));
  std::vector<double> g(static_cast<std::size_t>(p.n));
  for (auto _ : state) {
    const auto J = jacobian(p);
    const RowMatrix R = preconditioner(*J);
    std::fill(g.begin(), g.end(), 0.0);
    benchmark::DoNotOptimize(
        sketchgn::pcg_solve<double>(*J, p.r.data(), 0.0, R.data(), 1e-6, 500, g.data(), threads(), {}).residual);
  }
  state.SetComplexityN(p.n * p.m * kD);
}

void BM_exact(benchmark::State& state) {
  const Data p = make(state.range(0), state.range(1));
  for (auto _ : state) {
    const auto J = jacobian(p);
    RowMatrix G(p.n, p.n);
    J->gram(G.data(), threads());
    Eigen::LLT<RowMatrix> llt(G);
    const Eigen::VectorXd g = llt.solve(Eigen::Map<const Eigen::VectorXd>(p.r.data(), p.n));
    benchmark::DoNotOptimize(g.data());
  }
  state.SetComplexityN(p.n * p.n * p.m);
}

void sizes_n(benchmark::internal::Benchmark* b) {
  for (i64 n : {500, 1000, 2000, 4000}) b->Args({n, 8192});
}
void sizes_m(benchmark::internal::Benchmark* b) {
  for (i64 m : {2048, 4096, 8192, 16384}) b->Args({1000, m});
}

}  // namespace

BENCHMARK(BM_kronecker_sketch)->Apply(sizes_n)->Apply(sizes_m)->Unit(benchmark::kMillisecond)->UseRealTime()->Complexity();
BENCHMARK(BM_pcg_iteration)->Apply(sizes_n)->Unit(benchmark::kMillisecond)->UseRealTime()->Complexity(benchmark::oN);
BENCHMARK(BM_step_reused)->Apply(sizes_n)->Unit(benchmark::kMillisecond)->UseRealTime()->Complexity(benchmark::oN);
BENCHMARK(BM_step_fresh)->Apply(sizes_n)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Complexity();
BENCHMARK(BM_exact)->Apply(sizes_n)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Complexity();

BENCHMARK_MAIN();
