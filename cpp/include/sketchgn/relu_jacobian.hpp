// The Jacobian of a two-layer ReLU network with respect to its first-layer weights, as a matrix-free
// operator.
//
// Model f(W, x) = (1/sqrt(m)) sum_r a_r relu(w_r . x - threshold), W (m, d). Row i of the n x (m d)
// Jacobian is (1/sqrt(m)) (a o D[i, :]) (x) x_i with the activation pattern D[i, r] = 1[w_r . x_i >
// threshold], computed once at construction and stored as bits (n m / 8 bytes). Products are fused
// tiles of X V^T (see kernels/jacobian_kernels.inc); with a sparse pattern they use per-sample and
// per-neuron lists of active neurons and cost O(nnz(D) d).
//
// Invariants: all arrays are row-major and contiguous; every output is accumulated in a fixed order,
// so results are bitwise identical for any thread count.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

namespace sketchgn {

class ReLUJacobian {
 public:
  enum class Path { automatic, dense, sparse };

  // X (n, d), W (m, d), a (m,): copied (padded) into the operator. n, m, d >= 1.
  ReLUJacobian(const double* X, std::int64_t n, std::int64_t d, const double* W, std::int64_t m,
               const double* a, double threshold, Path path, int n_threads);

  std::int64_t n() const { return n_; }
  std::int64_t m() const { return m_; }
  std::int64_t d() const { return d_; }
  double threshold() const { return threshold_; }
  std::int64_t nnz() const { return nnz_; }
  double density() const { return static_cast<double>(nnz_) / (static_cast<double>(n_) * m_); }
  bool is_sparse() const { return sparse_; }

  // f(W, X), shape (n,).
  const std::vector<double>& forward() const { return f_; }

  // out (n,) = J vec(V), V (m, d).
  void matvec(const double* V, double* out, int n_threads) const { matmat(V, 1, out, n_threads); }
  // G (m, d) = J^T u, u (n,).
  void rmatvec(const double* u, double* G, int n_threads) const { rmatmat(u, 1, G, n_threads); }
  // out (k, n): row j is J vec(V_j) for V (k, m, d). One pass over the pattern for all k.
  void matmat(const double* V, std::int64_t k, double* out, int n_threads) const;
  // G (k, m, d): G_j = J^T U_j for U (k, n).
  void rmatmat(const double* U, std::int64_t k, double* G, int n_threads) const;
  // G (n, n) = J J^T = ((D D^T) o (X X^T)) / m. `interrupted` (may be empty) is polled between
  // batches of tiles; returns false when it stopped the computation (G is then incomplete).
  bool gram(double* G, int n_threads, const std::function<bool()>& interrupted = {}) const;

  // Pattern access for sketches: bit r of row i.
  bool active(std::int64_t i, std::int64_t r) const {
    return (bits_[static_cast<std::size_t>(i * row_bytes_ + (r >> 3))] >> (r & 7)) & 1u;
  }
  const std::uint8_t* bits() const { return bits_.data(); }
  std::int64_t row_bytes() const { return row_bytes_; }
  const double* a() const { return a_.data(); }
  const double* x_padded() const { return x_.data(); }
  std::int64_t d_padded() const { return d_pad_; }
  std::int64_t m_padded() const { return m_pad_; }

 private:
  void build_sparse_lists(int n_threads);
  void dense_matmat(const double* V, std::int64_t k, double* out, int n_threads) const;
  void dense_rmatmat(const double* U, std::int64_t k, double* G, int n_threads) const;
  void sparse_matmat(const double* V, std::int64_t k, double* out, int n_threads) const;
  void sparse_rmatmat(const double* U, std::int64_t k, double* G, int n_threads) const;

  std::int64_t n_, m_, d_, m_pad_, d_pad_, row_bytes_;
  double threshold_;
  std::vector<double> x_;       // (n, d_pad)
  std::vector<double> a_;       // (m_pad,)
  std::vector<std::uint8_t> bits_;  // (n, row_bytes)
  std::vector<double> f_;       // (n,)
  std::int64_t nnz_ = 0;
  bool sparse_ = false;
  // Sparse lists, blocked so that the rows of V (or X) one block touches stay in L2:
  // for each block of sparse_neuron_block_ neurons a CSR by sample (row_ptr_ (blocks, n + 1)), and
  // for each block of sparse_sample_block_ samples a CSC by neuron (col_ptr_ (blocks, m + 1)).
  std::int64_t sparse_neuron_block_ = 0, sparse_sample_block_ = 0;
  std::vector<std::int64_t> row_ptr_, col_ptr_;
  std::vector<std::int32_t> cols_, rows_;
};

// q = J J^T p in float32 arithmetic (float64 in and out): the operator of the inner iterations of
// mixed-precision CG (pcg.hpp), at about twice the speed of the float64 products. Holds float32 copies
// of X and of a_r^2 / m; J^T p never leaves float32 and is kept transposed, (d_pad, m_pad), the layout
// J's product reads. Dense patterns only (the sparse products gather rows and are not compute-bound).
// The same bits for any thread count.
class GramOperatorF32 {
 public:
  // Whether J can be used: a dense pattern and X, a within float32 range (|x|, |a| <= 1e30).
  static bool applicable(const ReLUJacobian& J);
  explicit GramOperatorF32(const ReLUJacobian& J);
  void apply(const double* p, double* q, int n_threads);

 private:
  const ReLUJacobian& J_;
  std::vector<float> x_, a2_, u_, gt_;  // (n, d_pad), (m_pad,), (n,), (d_pad, m_pad)
};

}  // namespace sketchgn
