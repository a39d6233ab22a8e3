#include "sketchgn/pcg.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/select.hpp"
#include "kernels/triangular_kernels.hpp"

namespace sketchgn {

namespace {
using i64 = std::int64_t;
// Iterations without a new smallest residual after which the solve stops as stagnated.
constexpr i64 kStagnationIterations = 100;
// Mixed precision: a float32 round ends when its recursive residual has fallen by this factor (two
// rounds reach 1e-6, each about half the CG iterations of the float64 solve); a round must gain at
// least kMixedMinGain in the true residual, and may take at most kMixedRoundIterations iterations,
// or the solve goes on in float64.
constexpr double kMixedReduction = 1e-3;
constexpr double kMixedMinGain = 0.1;
constexpr i64 kMixedRoundIterations = 200;
// Largest ratio of R's pivots with which a solve starts in float32. Measured (n = 1000, m = 4096,
// d = 32, near-duplicate samples): float32 rounds still gain 1e3 at cond(J J^T) = 2.6e7 (pivot ratio
// squared 4.9e5) and fail at 3.2e8 (6.9e6); a miss costs one round, then float64 takes over.
constexpr double kMixedPivotRatio = 1e3;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  // Fixed order (pairwise over fixed blocks): the same value for any thread count.
  double s = 0.0;
  const std::size_t n = a.size();
  for (std::size_t i0 = 0; i0 < n; i0 += 1024) {
    double t = 0.0;
    const std::size_t i1 = std::min(n, i0 + 1024);
    for (std::size_t i = i0; i < i1; ++i) t += a[i] * b[i];
    s += t;
  }
  return s;
}

// Euclidean norm scaled by the largest entry (as BLAS nrm2 does): no underflow to 0 for subnormal
// vectors, no overflow for huge ones.
double norm(const std::vector<double>& a) {
  double scale = 0.0;
  for (double v : a) scale = std::max(scale, std::abs(v));
  if (scale == 0.0 || !std::isfinite(scale)) return scale;
  double s = 0.0;
  for (double v : a) s += (v / scale) * (v / scale);
  return scale * std::sqrt(s);
}

bool all_finite(const std::vector<double>& a) {
  for (double v : a)
    if (!std::isfinite(v)) return false;
  return true;
}

// J^T g and J J^T g for `products`: the float64 products of the last true residual, taken at the
// scaled iterate x_products, when that is the returned g scaled by 2^-shift and the power of two
// carries them back exactly (no entry leaves the normal range); else computed from g. Returns
// whether they were reused.
bool solution_products(const ReLUJacobian& J, const double* g, int shift, const std::vector<double>& jt_x,
                       const std::vector<double>& jjt_x, const std::vector<double>& x_products,
                       const SolutionProducts& products, int n_threads) {
  const i64 n = J.n(), md = J.m() * J.d();
  bool reuse = !x_products.empty();
  for (i64 i = 0; reuse && i < n; ++i)
    reuse = std::ldexp(x_products[i], shift) == g[i] && std::ldexp(g[i], -shift) == x_products[i];
  auto exact = [&](const std::vector<double>& v) {
    for (double e : v)
      if (e != 0.0 && !std::isnormal(std::ldexp(e, shift))) return false;
    return true;
  };
  if (reuse && exact(jt_x) && exact(jjt_x)) {
    for (i64 k = 0; k < md; ++k) products.jt_g[k] = std::ldexp(jt_x[k], shift);
    for (i64 i = 0; i < n; ++i) products.jjt_g[i] = std::ldexp(jjt_x[i], shift);
    return true;
  }
  J.rmatvec(g, products.jt_g, n_threads);
  J.matvec(products.jt_g, products.jjt_g, n_threads);
  return false;
}

}  // namespace

// The triangular solves stream R (half of it each) and are memory-bound. They run in blocks of
// kSolveBlock rows: the small triangle on the diagonal on one thread, the streaming part (the update
// of the rest of y, or the dot products of the block's rows with the solved part of y) split over
// the threads, two barriers per block. Each entry is computed by one thread in one fixed order, so
// the result is the same for any thread count. R may be float32 (half the traffic; it is only a
// preconditioner); the vectors and sums are float64. The streaming loops are SIMD kernels picked at
// run time (kernels/triangular_kernels.inc): on the SSE2 baseline the float32 -> float64 conversion
// had made the float32 solve slower than the float64 one.
namespace {
constexpr i64 kSolveBlock = 64;

// (looked up per call: the active SIMD level can be switched at run time, as the tests do)
const kernels::TriangularKernels& triangular() { return SKETCHGN_SELECT_KERNELS(triangular_kernels); }

// Below this size a solve takes tens of microseconds: barriers would cost more than they save.
int solve_threads(i64 n, int n_threads) { return n >= 2048 ? std::max(1, n_threads) : 1; }

void update(const kernels::TriangularKernels& k, const float* R, i64 n, i64 k0, i64 rows, double* y, i64 j0,
            i64 j1) {
  k.update_f32(R, n, k0, rows, y, j0, j1);
}
void update(const kernels::TriangularKernels& k, const double* R, i64 n, i64 k0, i64 rows, double* y,
            i64 j0, i64 j1) {
  k.update_f64(R, n, k0, rows, y, j0, j1);
}
void dots(const kernels::TriangularKernels& k, const float* R, i64 n, i64 i0, i64 rows, const double* y,
          i64 j0, double* sums) {
  k.dots_f32(R, n, i0, rows, y, j0, sums);
}
void dots(const kernels::TriangularKernels& k, const double* R, i64 n, i64 i0, i64 rows, const double* y,
          i64 j0, double* sums) {
  k.dots_f64(R, n, i0, rows, y, j0, sums);
}

// [begin, end) of `len` items for thread t of nt, in multiples of `grain`.
std::pair<i64, i64> share(i64 len, int nt, int t, i64 grain) {
  const i64 per = ((len + nt - 1) / nt + grain - 1) / grain * grain;
  const i64 b = std::min(len, t * per);
  return {b, std::min(len, b + per)};
}
}  // namespace

template <class T>
void solve_upper_transpose(const T* R, i64 n, const double* z, double* y, int n_threads) {
  // R^T y = z, forward: y_k is final once the rows above it are done.
  if (y != z) std::copy(z, z + n, y);
  const auto& kern = triangular();
  const int threads = solve_threads(n, n_threads);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    for (i64 k0 = 0; k0 < n; k0 += kSolveBlock) {
      const i64 k1 = std::min(n, k0 + kSolveBlock);
#pragma omp single
      for (i64 k = k0; k < k1; ++k) {
        const T* row = R + k * n;
        const double yk = (y[k] /= static_cast<double>(row[k]));
        for (i64 j = k + 1; j < k1; ++j) y[j] -= static_cast<double>(row[j]) * yk;
      }
      const auto [b, e] = share(n - k1, nt, t, 16);
      if (b < e) update(kern, R, n, k0, k1 - k0, y, k1 + b, k1 + e);
#pragma omp barrier
    }
  }
}

template <class T>
void solve_upper(const T* R, i64 n, const double* z, double* y, int n_threads) {
  // R y = z, backward, by blocks of rows from the bottom.
  if (y != z) std::copy(z, z + n, y);
  const auto& kern = triangular();
  const int threads = solve_threads(n, n_threads);
  double sums[kSolveBlock];
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    for (i64 i1 = n; i1 > 0;) {
      const i64 i0 = std::max<i64>(0, i1 - kSolveBlock);
      const auto [b, e] = share(i1 - i0, nt, t, 2);
      if (b < e) dots(kern, R, n, i0 + b, e - b, y, i1, sums + b);
#pragma omp barrier
#pragma omp single
      for (i64 i = i1 - 1; i >= i0; --i) {
        const T* row = R + i * n;
        double s = sums[i - i0];
        for (i64 j = i + 1; j < i1; ++j) s += static_cast<double>(row[j]) * y[j];
        y[i] = (y[i] - s) / static_cast<double>(row[i]);
      }
      i1 = i0;
    }
  }
}

template void solve_upper_transpose<float>(const float*, i64, const double*, double*, int);
template void solve_upper_transpose<double>(const double*, i64, const double*, double*, int);
template void solve_upper<float>(const float*, i64, const double*, double*, int);
template void solve_upper<double>(const double*, i64, const double*, double*, int);

template <class T>
PcgResult pcg_solve(const ReLUJacobian& J, const double* r, double damping, const T* R, double tol,
                    i64 maxiter, double* g, int n_threads, const std::function<bool()>& interrupted,
                    bool mixed, const SolutionProducts& products) {
  using clock = std::chrono::steady_clock;
  const i64 n = J.n(), md = J.m() * J.d();
  PcgResult out;
  std::vector<double> rhs(r, r + n), x(g, g + n), res(n), z(n), p(n), q(n), tmp(static_cast<std::size_t>(md));
  // low: the current round uses the float32 operator
  bool low = mixed && GramOperatorF32::applicable(J);

  // Scaling by powers of two, exact and invisible in the result (the same bits as unscaled whenever
  // nothing over- or underflows): the right-hand side to a largest entry near 1, so that the norms
  // and inner products of CG neither overflow for a huge r nor underflow for a tiny one; and, for a
  // damping > 1, the whole system by a power of four c near the damping, (J J^T / c + damping / c I),
  // so that a huge damping does not overflow them either.
  // Solved: (A / c) x' = r / 2^e with x' = c g / 2^e.
  double rhs_top = 0.0;
  for (double v : rhs) rhs_top = std::max(rhs_top, std::abs(v));
  const int rhs_exp = rhs_top > 0.0 && std::isfinite(rhs_top) ? std::ilogb(rhs_top) : 0;
  const int op_exp = damping > 1.0 && std::isfinite(damping) ? 2 * (std::ilogb(damping) / 2) : 0;
  for (double& v : rhs) v = std::ldexp(v, -rhs_exp);
  for (double& v : x) v = std::ldexp(v, op_exp - rhs_exp);
  if (!all_finite(x)) std::fill(x.begin(), x.end(), 0.0);  // a warm start far off the scale of r
  const double inv_op_scale = std::ldexp(1.0, -op_exp);
  // The preconditioner's solves are scaled by rho = a power of two near R's largest pivot (CG is
  // invariant to a constant factor on the preconditioner, and a power of two is exact): z stays on
  // the scale of the residual whatever R's scale or the damping it was built for.
  double rho = 1.0;
  if (R != nullptr) {
    double top = 0.0, bottom = std::numeric_limits<double>::infinity();
    for (i64 i = 0; i < n; ++i) {
      const double pivot = std::abs(static_cast<double>(R[i * n + i]));
      top = std::max(top, pivot);
      bottom = std::min(bottom, pivot);
    }
    if (top > 0.0 && std::isfinite(top)) rho = std::ldexp(1.0, std::ilogb(top));
    // cond(J J^T + damping I) >= (top / bottom)^2 (R^T R approximates it): beyond kMixedPivotRatio^2
    // float32 products cannot gain the factor a round needs, and trying would only waste the round.
    if (!(top <= kMixedPivotRatio * bottom)) low = false;
  }
  std::unique_ptr<GramOperatorF32> op32;
  if (low) op32 = std::make_unique<GramOperatorF32>(J);
  const double scaled_damping = damping * inv_op_scale;

  // The float64 products of the last true residual, kept for `products`: jt = J^T x_products and
  // jjt = J jt (before the damping term joins them).
  std::vector<double> jt, jjt, x_products;
  auto apply_system = [&](const std::vector<double>& v, std::vector<double>& result, bool in_float32,
                          bool keep_products = false) {
    const auto t0 = clock::now();
    if (in_float32) {
      op32->apply(v.data(), result.data(), n_threads);
    } else {
      J.rmatvec(v.data(), tmp.data(), n_threads);
      J.matvec(tmp.data(), result.data(), n_threads);
      if (keep_products && products.jt_g != nullptr) {
        jt = tmp;
        jjt = result;
        x_products = v;
      }
    }
    // (inv_op_scale = 1 and scaled_damping = damping when damping <= 1: the plain J J^T v + damping v)
    for (i64 i = 0; i < n; ++i) result[i] = result[i] * inv_op_scale + scaled_damping * v[i];
    out.seconds_products += seconds_since(t0);
  };
  auto precondition = [&](const std::vector<double>& v, std::vector<double>& result) {
    if (R == nullptr) {
      result = v;
      return;
    }
    const auto t0 = clock::now();
    solve_upper_transpose(R, n, v.data(), result.data(), n_threads);
    if (rho != 1.0)
      for (double& w : result) w *= rho;
    solve_upper(R, n, result.data(), result.data(), n_threads);
    if (rho != 1.0)
      for (double& w : result) w *= rho;
    out.seconds_preconditioner += seconds_since(t0);
  };
  auto true_residual = [&]() {
    apply_system(x, q, false, true);
    for (i64 i = 0; i < n; ++i) res[i] = rhs[i] - q[i];
  };

  const double rhs_norm = norm(rhs);
  if (rhs_norm == 0.0) {
    std::fill(g, g + n, 0.0);
    if (products.jt_g != nullptr) {
      std::fill(products.jt_g, products.jt_g + md, 0.0);
      std::fill(products.jjt_g, products.jjt_g + n, 0.0);
    }
    out.converged = true;
    out.status = PcgStatus::converged;
    return out;
  }
  const double target = tol * rhs_norm;
  bool nonzero_start = false;
  for (double v : x) nonzero_start = nonzero_start || v != 0.0;
  if (nonzero_start)
    true_residual();
  else
    res = rhs;
  // Converged when the true residual meets the target; `restarts` bounds how often the recursive
  // residual may claim convergence while the true one disagrees. The iterate with the smallest
  // residual is kept: on a singular, inconsistent system CG cannot converge and its iterates drift
  // along the null space, so the best one is what is returned (a least-squares-like answer).
  int restarts = 0;
  double res_norm = norm(res);
  if (nonzero_start && !(res_norm <= rhs_norm)) {
    // A warm start worse than none (its residual exceeds ||r||; with a huge damping it can exceed the
    // double range in the inner products): start from zero.
    std::fill(x.begin(), x.end(), 0.0);
    res = rhs;
    res_norm = rhs_norm;
  }
  std::vector<double> best_x = x;
  double best_norm = res_norm;
  i64 best_iteration = 0;
  // Mixed precision: during float32 rounds the best iterate is only taken at the round ends, where
  // its true residual is known; a round that fails returns to it, so that residual is kept too.
  std::vector<double> best_res;
  if (low) best_res = res;
  out.status = PcgStatus::maxiter;
  while (true) {
    if (res_norm <= target) {
      out.status = PcgStatus::converged;
      break;
    }
    // (a float32 round aims at a fixed reduction; float64 at the target itself)
    const double claim_target = low ? std::max(target, kMixedReduction * res_norm) : target;
    precondition(res, z);
    std::copy(z.begin(), z.end(), p.begin());
    double rz = dot(res, z);
    bool claimed = false, round_failed = false;
    i64 round_iterations = 0;
    while (out.iterations < maxiter) {
      if (interrupted && interrupted()) {
        out.status = PcgStatus::interrupted;
        break;
      }
      apply_system(p, q, low);
      const double pq = dot(p, q);
      if (!(pq > 0.0) || !std::isfinite(pq) || !(rz > 0.0)) {
        round_failed = low;
        if (!low) out.status = PcgStatus::breakdown;
        break;
      }
      const double alpha = rz / pq;
      for (i64 i = 0; i < n; ++i) {
        x[i] += alpha * p[i];
        res[i] -= alpha * q[i];
      }
      ++out.iterations;
      ++round_iterations;
      if (low) ++out.iterations_f32;
      res_norm = norm(res);
      if (!std::isfinite(res_norm)) {
        round_failed = low;
        if (!low) out.status = PcgStatus::breakdown;
        break;
      }
      if (low) {
        // (the recursive residual of a float32 round is not a float64 residual: the best iterate is
        // tracked at the true residuals of the round ends instead)
        // (a quarter of the iteration limit at most: a failing round leaves float64 the rest)
        if (round_iterations >= std::max<i64>(1, std::min(kMixedRoundIterations, maxiter / 4))) {
          round_failed = true;
          break;
        }
      } else if (res_norm < best_norm) {
        best_norm = res_norm;
        best_x = x;
        best_iteration = out.iterations;
      } else if (out.iterations - best_iteration > kStagnationIterations) {
        out.status = PcgStatus::stagnated;
        break;
      }
      if (res_norm <= claim_target) {
        claimed = true;
        break;
      }
      precondition(res, z);
      const double rz_new = dot(res, z);
      const double beta = rz_new / rz;
      rz = rz_new;
      for (i64 i = 0; i < n; ++i) p[i] = z[i] + beta * p[i];
    }
    if (low && (claimed || round_failed)) {
      // End of a float32 round: where did it really get?
      if (all_finite(x)) {
        true_residual();
        res_norm = norm(res);
      } else {
        res_norm = std::numeric_limits<double>::infinity();
      }
      if (!(res_norm <= target) && !(res_norm <= kMixedMinGain * best_norm)) {
        // float32 rounding swamps this system: float64 products from here, from the better point
        low = false;
        out.mixed_fallback = true;
      }
      if (res_norm < best_norm) {
        best_norm = res_norm;
        best_x = x;
        best_res = res;
      } else {
        x = best_x;
        res = best_res;
        res_norm = best_norm;
      }
      best_iteration = out.iterations;
      continue;  // (converged, the iteration limit, or the next round)
    }
    if (!claimed) break;
    true_residual();
    res_norm = norm(res);
    if (res_norm <= target) {
      out.status = PcgStatus::converged;
      break;
    }
    if (++restarts > 3) {
      out.status = PcgStatus::inaccurate;
      break;
    }
    if (out.iterations >= maxiter) break;
  }
  if (low && out.status != PcgStatus::converged && all_finite(x)) {
    // stopped inside a float32 round (interrupted, iteration limit): its recursive residual is not a
    // float64 one; compare by the true residual
    true_residual();
    res_norm = norm(res);
  }
  if (out.status != PcgStatus::converged) {
    // Return the best iterate (by the recursive residual), measured by its true residual.
    if (best_norm < res_norm || !all_finite(x)) x = best_x;
    true_residual();
  }
  out.residual = norm(res) / rhs_norm;
  out.converged = out.residual <= tol;
  if (out.converged) out.status = PcgStatus::converged;
  // Back to the scale of r. If that rounded g (entries in the subnormal range), the residual reported
  // must be that of the rounded g: measured again, on it scaled back up (exactly).
  bool rounded = false;
  for (double& v : x) {
    const double scaled = std::ldexp(v, rhs_exp - op_exp);
    rounded = rounded || std::ldexp(scaled, op_exp - rhs_exp) != v;
    v = scaled;
  }
  if (rounded && all_finite(x)) {
    for (double& v : x) v = std::ldexp(v, op_exp - rhs_exp);
    true_residual();
    out.residual = norm(res) / rhs_norm;
    out.converged = out.residual <= tol;
    if (!out.converged && out.status == PcgStatus::converged) out.status = PcgStatus::inaccurate;
    for (double& v : x) v = std::ldexp(v, rhs_exp - op_exp);
  }
  if (!all_finite(x)) {  // the solution itself is beyond the double range
    std::fill(x.begin(), x.end(), 0.0);
    out.converged = false;
    out.status = PcgStatus::overflow;
    out.residual = 1.0;
  }
  std::copy(x.begin(), x.end(), g);
  if (products.jt_g != nullptr)
    out.products_reused = solution_products(J, g, rhs_exp - op_exp, jt, jjt, x_products, products, n_threads);
  return out;
}

template PcgResult pcg_solve<float>(const ReLUJacobian&, const double*, double, const float*, double, i64,
                                    double*, int, const std::function<bool()>&, bool, const SolutionProducts&);
template PcgResult pcg_solve<double>(const ReLUJacobian&, const double*, double, const double*, double, i64,
                                     double*, int, const std::function<bool()>&, bool, const SolutionProducts&);

}  // namespace sketchgn
