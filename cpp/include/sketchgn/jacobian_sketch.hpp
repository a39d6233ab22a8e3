// Sketches of J^T (m d x n) for the Gauss-Newton preconditioner: the s x n matrix S J^T, returned
// transposed, T = (S J^T)^T of shape (n, s) row-major -- which is S J^T in column-major order, the
// layout LAPACK's SYRK/QR take without a copy. Column i of J^T is (1/sqrt(m)) (a o D_i) (x) x_i.
#pragma once
#include <cstdint>

#include "sketchgn/kronecker_srht.hpp"
#include "sketchgn/relu_jacobian.hpp"
#include "sketchgn/srht.hpp"

namespace sketchgn {

// With the Kronecker SRHT (m, d, s): O(n (m log m + d log d + s)).
void sketch_jacobian_kronecker(const ReLUJacobian& J, const KroneckerSRHT& S, double* T, int n_threads);
// With the SRHT of R^{m d}: forms each column of J^T, O(n m d log(m d)).
void sketch_jacobian_srht(const ReLUJacobian& J, const SRHT& S, double* T, int n_threads);
// With a Gaussian S (s, m d) of N(0, 1/s) entries drawn from (seed, index): O(s n m d) through the
// fused products of J, in chunks of directions (never more than 32 rows of S at once).
void sketch_jacobian_gaussian(const ReLUJacobian& J, std::int64_t s, std::uint64_t seed, double* T,
                              int n_threads);

}  // namespace sketchgn
