// Sketches of J^T (m d x n) for the Gauss-Newton preconditioner: the s x n matrix S J^T, returned
// transposed, T = (S J^T)^T of shape (n, s) row-major -- which is S J^T in column-major order, the
// layout LAPACK's SYRK/QR take without a copy. Column i of J^T is (1/sqrt(m)) (a o D_i) (x) x_i.
#pragma once
#include <cstdint>
#include <vector>

#include "sketchgn/dense_cholesky.hpp"
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

// The Kronecker SRHT restricted to whole rows of its m_pad x d_pad grid ("kronecker_rows"):
// S = (1/sqrt(s)) (R_P H D1) (x) (H D2), P a uniform sample of `rows` of the m_pad neuron indices
// (sorted), s = rows * d_pad. Column i of J^T, u_i (x) x_i with u_i = (a o D_i) / sqrt(m), maps to
// (1/sqrt(s)) (H D1 u_i)[P] (x) (H D2 x_i), and since H D2 is orthogonal up to sqrt(d_pad) the Gram
// of the sketch factors:
//   (S J^T)^T (S J^T) = (1/|P|) (Uhat Uhat^T) o (X X^T),   Uhat (n, |P|), row i = (H D1 u_i)[P].
// Forming it costs O(n m log m + n^2 |P| + n^2 d) instead of the O(n^2 s) of a SYRK of the sketch:
// d_pad times less. Its preconditioned condition numbers come close to uniform cells' from about 64
// rows on (measured, DESIGN notes in BENCHMARKS.md); with few rows (large d, small s) they do not.
class NeuronRowSketch {
 public:
  // Requires m, d >= 1 and 1 <= rows <= m_pad (throws std::invalid_argument).
  NeuronRowSketch(std::int64_t m, std::int64_t d, std::int64_t rows, std::uint64_t seed);
  std::int64_t rows() const { return static_cast<std::int64_t>(p_.size()); }
  std::int64_t m_pad() const { return m_pad_; }
  std::int64_t d_pad() const { return d_pad_; }
  std::int64_t n_out() const { return rows() * d_pad_; }
  const std::vector<std::int64_t>& rows_u() const { return p_; }
  const std::vector<signed char>& signs_u() const { return s1_; }
  const std::vector<signed char>& signs_x() const { return s2_; }

 private:
  std::int64_t m_pad_, d_pad_;
  std::vector<std::int64_t> p_;
  std::vector<signed char> s1_, s2_;
};

// Uhat (n, rows) row-major: the neuron factors of the columns of J^T, transformed and sampled.
void sketch_neuron_rows(const ReLUJacobian& J, const NeuronRowSketch& S, double* Uhat, int n_threads);
// T (n, n_out) = (S J^T)^T explicitly (for Householder QR and the tests): row i is
// (1/sqrt(n_out)) Uhat_i (x) (H D2 x_i), cell (k, q) at column k d_pad + q.
void sketch_jacobian_rows(const ReLUJacobian& J, const NeuronRowSketch& S, double* T, int n_threads);
// C (n, n) row-major, upper triangle = (Uhat Uhat^T o X X^T) / rows + shift I: the Gram of the
// "kronecker_rows" sketch of J^T from its factor Uhat (n, rows). Real is double or float: in float32
// Uhat is rounded (after a division by a power of two near its largest entry, so that neither it nor
// its SYRK under- or overflows whatever the scale of a) and the SYRK runs in float32; the Hadamard
// product is formed in double either way and rounded once. Entries beyond float's range are +-inf.
// Returns false if interrupted (C is then unspecified).
template <class Real>
bool neuron_rows_gram_upper(const ReLUJacobian& J, const double* Uhat, std::int64_t rows, double shift, Real* C,
                            int n_threads, const InterruptCheck& interrupted);

}  // namespace sketchgn
