// Kronecker ("tensor") SRHT: a sketch of vectors u (x) x in R^{m d} that never forms them.
//
// Row j of S is sqrt(m_pad d_pad / n_out) (H D1)[p_j, :] (x) (H D2)[q_j, :] with H orthonormal
// Walsh-Hadamard matrices (sizes m_pad, d_pad: m and d padded to powers of two), D1, D2 random signs
// and (p_j, q_j) a uniform sample of n_out distinct cells of the m_pad x d_pad grid (sorted). So
// (S (u (x) x))_j = sqrt(m_pad d_pad / n_out) (H D1 u)[p_j] (H D2 x)[q_j]: a column costs
// O(m log m + d log d + n_out) instead of O(m d log(m d)). E[S^T S] = I. Signs and cells are pure
// functions of the seed (random.hpp), identical on every machine and for every thread count.
#pragma once
#include <cstdint>
#include <vector>

namespace sketchgn {

class KroneckerSRHT {
 public:
  // Requires m, d >= 1 and 1 <= n_out <= m_pad * d_pad (throws std::invalid_argument).
  KroneckerSRHT(std::int64_t m, std::int64_t d, std::int64_t n_out, std::uint64_t seed);

  std::int64_t m() const { return m_; }
  std::int64_t d() const { return d_; }
  std::int64_t n_out() const { return n_out_; }
  std::int64_t m_pad() const { return m_pad_; }
  std::int64_t d_pad() const { return d_pad_; }
  const std::vector<std::int64_t>& rows_u() const { return p_; }  // p_j
  const std::vector<std::int64_t>& rows_x() const { return q_; }  // q_j
  const std::vector<signed char>& signs_u() const { return s1_; }
  const std::vector<signed char>& signs_x() const { return s2_; }

  // One column: out[j * out_stride] = (S (u (x) x))_j. work_u has m_pad entries, work_x d_pad.
  void apply_kron_column(const double* u, const double* x, double* out, std::int64_t out_stride,
                         double* work_u, double* work_x) const;
  // The same when D1 u is already in work_u[0, m) (e.g. built from a bit pattern with the signs
  // folded in): pads, transforms and samples.
  void apply_kron_column_signed(double* work_u, const double* x, double* out, std::int64_t out_stride,
                                double* work_x) const;
  // out (n_out, k) = S [U_0 (x) X_0, ..., U_{k-1} (x) X_{k-1}] for U (k, m), X (k, d).
  void apply_kron(const double* U, const double* X, std::int64_t k, double* out, int n_threads) const;
  // out (n_out, k) = S A for A (m d, k) (row-major flattening r d + c of each column).
  void apply(const double* A, std::int64_t k, double* out, int n_threads) const;

 private:
  std::int64_t m_, d_, n_out_, m_pad_, d_pad_;
  double scale_;  // 1 / sqrt(n_out): the orthonormal scaling folded with sqrt(m_pad d_pad / n_out)
  std::vector<signed char> s1_, s2_;
  std::vector<std::int64_t> p_, q_;
  // The cells as 32-bit p_j * d_pad + q_j (when the grid allows): a quarter of the index traffic of
  // p_ and q_ in the sampling loop, which runs n_out times per column.
  std::vector<std::uint32_t> cells32_;
  int log2_d_pad_ = 0;
};

}  // namespace sketchgn
