// Preconditioned conjugate gradient for the Gauss-Newton system (J J^T + damping I) g = r.
//
// The preconditioner is M = R^T R with R (n x n, upper triangular) from the factorization of a
// sketch of [J^T; sqrt(damping) I]: then A R^{-1} is well conditioned and CG on the system needs
// O(log 1/eps) iterations whatever the conditioning of J J^T. Each iteration is one J^T u, one J v
// and two triangular solves. Without R it is plain CG.
//
// Stopping: the recursively updated residual is checked against tol ||r||; on convergence the true
// residual ||r - (J J^T + damping I) g|| is recomputed, and iteration goes on from it if rounding made
// the two drift apart. Without convergence the iterate with the smallest residual is returned (never
// NaN), with the reason in PcgResult::status.
#pragma once
#include <cstdint>
#include <functional>

#include "sketchgn/relu_jacobian.hpp"

namespace sketchgn {

// y = R^{-T} z (forward substitution) and y = R^{-1} z (back substitution) for R (n, n) row-major
// upper triangular; y may equal z. Memory-bound; split over n_threads from n = 2048 on, with the same
// result for every thread count (each entry is accumulated in one fixed order).
template <class T>
void solve_upper_transpose(const T* R, std::int64_t n, const double* z, double* y, int n_threads);
template <class T>
void solve_upper(const T* R, std::int64_t n, const double* z, double* y, int n_threads);

enum class PcgStatus {
  converged,    // true relative residual <= tol
  maxiter,      // iteration limit reached
  stagnated,    // no new smallest residual for many iterations (singular, inconsistent system)
  breakdown,    // non-positive curvature or non-finite values (numerically singular or indefinite)
  inaccurate,   // the recursive residual met tol several times, the true one did not (rounding)
  interrupted,  // stopped by the interrupt check
  overflow,     // the solution is beyond the double range (g = 0 is returned)
};

struct PcgResult {
  std::int64_t iterations = 0;
  double residual = 0.0;  // true relative residual ||r - A g|| / ||r|| of the returned g
  bool converged = false;
  PcgStatus status = PcgStatus::maxiter;
  double seconds_products = 0.0;
  double seconds_preconditioner = 0.0;
  std::int64_t iterations_f32 = 0;  // of `iterations`, those with float32 products (mixed precision)
  bool mixed_fallback = false;      // mixed precision was asked for and fell back to float64 products
  bool products_reused = false;     // `products` came from the last residual check (none computed)
};

// Solves (J J^T + damping I) g = r. R may be null (plain CG). g holds the initial guess on entry
// (zeros for none) and the solution on exit. `interrupted` is polled between iterations (may be
// empty); when it returns true the solve stops with interrupted = true.
// R is float or double (instantiated for both).
//
// mixed = true (used when GramOperatorF32::applicable(J), ignored otherwise): iterative refinement
// with float32 products. Each round runs CG with the float32 operator until its recursive residual
// has fallen by kMixedReduction, then measures the true residual with the float64 products and
// restarts from it; the stopping rule is the same true float64 residual, so the answer meets tol
// exactly as in float64. A round that does not gain a factor of 10 (float32 rounding, about
// 6e-8 cond(J J^T), swamps the system) switches the rest of the solve to float64 products.
//
// products (optional): receives J^T g (m d entries) and J J^T g (n entries) of the returned g, which
// a Gauss-Newton step needs next (its direction and the model's curvature). They are the float64
// products of the last residual check when that was of the returned g (the usual case: no extra
// cost; PcgResult::products_reused), else they are computed. The check's products were of g scaled
// by a power of two, so they are the same bits as J.rmatvec(g) and J.matvec of it unless terms of
// those sums come near the underflow threshold (|entries| ~ 1e-300), where they agree to rounding.
struct SolutionProducts {
  double* jt_g = nullptr;
  double* jjt_g = nullptr;
};

template <class T>
PcgResult pcg_solve(const ReLUJacobian& J, const double* r, double damping, const T* R,
                    double tol, std::int64_t maxiter, double* g, int n_threads,
                    const std::function<bool()>& interrupted, bool mixed = false,
                    const SolutionProducts& products = {});

}  // namespace sketchgn
