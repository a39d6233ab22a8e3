#include "sketchgn/pcg.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

namespace sketchgn {

namespace {
using i64 = std::int64_t;
constexpr i64 kTriBlock = 256;
// Below this order the triangular solves run on one thread.
constexpr i64 kSerialOrder = 1024;

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

double norm(const std::vector<double>& a) { return std::sqrt(dot(a, a)); }

bool all_finite(const std::vector<double>& a) {
  for (double v : a)
    if (!std::isfinite(v)) return false;
  return true;
}
}  // namespace

void solve_upper_transpose(const double* R, i64 n, const double* z, double* y, int n_threads) {
  // R^T y = z: for each block of rows K of R, solve with the diagonal block, then subtract
  // R[K, rest]^T y_K from the rest (a panel each thread splits by columns).
  if (y != z) std::copy(z, z + n, y);
  const int threads = n >= kSerialOrder ? std::max(1, n_threads) : 1;
  for (i64 k0 = 0; k0 < n; k0 += kTriBlock) {
    const i64 k1 = std::min(n, k0 + kTriBlock);
    for (i64 k = k0; k < k1; ++k) {
      y[k] /= R[k * n + k];
      const double yk = y[k];
      for (i64 j = k + 1; j < k1; ++j) y[j] -= R[k * n + j] * yk;
    }
    const i64 rest = n - k1;
    if (rest <= 0) continue;
    const i64 chunk = (rest + threads - 1) / threads;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int t = 0; t < threads; ++t) {
      const i64 j0 = k1 + t * chunk, j1 = std::min(n, j0 + chunk);
      for (i64 k = k0; k < k1; ++k) {
        const double yk = y[k];
        const double* row = R + k * n;
        for (i64 j = j0; j < j1; ++j) y[j] -= row[j] * yk;
      }
    }
  }
}

void solve_upper(const double* R, i64 n, const double* z, double* y, int n_threads) {
  // R y = z from the bottom block up: y_K = R[K,K]^{-1} (z_K - R[K, below] y_below), the panel
  // product split by rows.
  if (y != z) std::copy(z, z + n, y);
  const int threads = n >= kSerialOrder ? std::max(1, n_threads) : 1;
  const i64 blocks = (n + kTriBlock - 1) / kTriBlock;
  for (i64 b = blocks - 1; b >= 0; --b) {
    const i64 k0 = b * kTriBlock, k1 = std::min(n, k0 + kTriBlock);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (i64 i = k0; i < k1; ++i) {
      const double* row = R + i * n;
      double s = 0.0;
      for (i64 j = k1; j < n; ++j) s += row[j] * y[j];
      y[i] -= s;
    }
    for (i64 i = k1 - 1; i >= k0; --i) {
      const double* row = R + i * n;
      double s = 0.0;
      for (i64 j = i + 1; j < k1; ++j) s += row[j] * y[j];
      y[i] = (y[i] - s) / row[i];
    }
  }
}

PcgResult pcg_solve(const ReLUJacobian& J, const double* r, double damping, const double* R, double tol,
                    i64 maxiter, double* g, int n_threads, const std::function<bool()>& interrupted) {
  using clock = std::chrono::steady_clock;
  const i64 n = J.n(), md = J.m() * J.d();
  PcgResult out;
  std::vector<double> rhs(r, r + n), x(g, g + n), res(n), z(n), p(n), q(n), tmp(static_cast<std::size_t>(md));

  auto apply_system = [&](const std::vector<double>& v, std::vector<double>& result) {
    const auto t0 = clock::now();
    J.rmatvec(v.data(), tmp.data(), n_threads);
    J.matvec(tmp.data(), result.data(), n_threads);
    for (i64 i = 0; i < n; ++i) result[i] += damping * v[i];
    out.seconds_products += seconds_since(t0);
  };
  auto precondition = [&](const std::vector<double>& v, std::vector<double>& result) {
    if (R == nullptr) {
      result = v;
      return;
    }
    const auto t0 = clock::now();
    solve_upper_transpose(R, n, v.data(), result.data(), n_threads);
    solve_upper(R, n, result.data(), result.data(), n_threads);
    out.seconds_preconditioner += seconds_since(t0);
  };
  auto true_residual = [&]() {
    apply_system(x, q);
    for (i64 i = 0; i < n; ++i) res[i] = rhs[i] - q[i];
  };

  const double rhs_norm = norm(rhs);
  if (rhs_norm == 0.0) {
    std::fill(g, g + n, 0.0);
    out.converged = true;
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
  // residual may claim convergence while the true one disagrees.
  int restarts = 0;
  double res_norm = norm(res);
  while (true) {
    if (res_norm <= target) {
      out.converged = true;
      break;
    }
    precondition(res, z);
    std::copy(z.begin(), z.end(), p.begin());
    double rz = dot(res, z);
    bool claimed = false;
    while (out.iterations < maxiter) {
      if (interrupted && interrupted()) {
        out.interrupted = true;
        break;
      }
      apply_system(p, q);
      const double pq = dot(p, q);
      if (!(pq > 0.0) || !std::isfinite(pq) || !(rz > 0.0)) {
        out.breakdown = true;
        break;
      }
      const double alpha = rz / pq;
      for (i64 i = 0; i < n; ++i) {
        x[i] += alpha * p[i];
        res[i] -= alpha * q[i];
      }
      ++out.iterations;
      res_norm = norm(res);
      if (!std::isfinite(res_norm)) {
        out.breakdown = true;
        break;
      }
      if (res_norm <= target) {
        claimed = true;
        break;
      }
      precondition(res, z);
      const double rz_new = dot(res, z);
      const double beta = rz_new / rz;
      rz = rz_new;
      for (i64 i = 0; i < n; ++i) p[i] = z[i] + beta * p[i];
    }
    if (!claimed || out.interrupted || out.breakdown) break;
    true_residual();
    res_norm = norm(res);
    if (res_norm <= target || ++restarts > 3 || out.iterations >= maxiter) {
      out.converged = res_norm <= target;
      break;
    }
  }
  if (!all_finite(x)) {
    // Never hand back NaN: return g = 0 (residual = 1) and report the breakdown.
    std::fill(x.begin(), x.end(), 0.0);
    out.breakdown = true;
    out.converged = false;
    res = rhs;
  } else if (!out.converged || out.interrupted || out.breakdown) {
    true_residual();
  }
  out.residual = norm(res) / rhs_norm;
  if (out.interrupted || out.breakdown) out.converged = out.residual <= tol;
  std::copy(x.begin(), x.end(), g);
  return out;
}

}  // namespace sketchgn
