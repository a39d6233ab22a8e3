#include "sketchgn/relu_jacobian.hpp"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kernels/jacobian_kernels.hpp"
#include "kernels/select.hpp"
#include "sketchgn/rounding.hpp"

namespace sketchgn {
namespace {

using i64 = std::int64_t;

// Neurons per block: the (d_pad x block) slice of V^T a thread packs stays in L2.
constexpr i64 kNeuronBlock = 512;
// Neurons per block of J v: the slice of V^T stays in L1 while groups of 4 rows pass over it.
// (Measured, n=8000 m=16384 d=32 on one AVX-512 core: 62 GF/s with 512-neuron blocks, 115 with 64.)
i64 matvec_block(i64 d_pad, i64 elem_bytes = 8) {
  return std::max<i64>(64, (16 * 1024) / (elem_bytes * d_pad) / 64 * 64);
}
// Rows per tile of the Gram matrix.
constexpr i64 kGramTile = 64;
// Density at or below which the automatic path uses the sparse lists. Measured crossover on AVX-512
// (bench/bench_jacobian.py): the dense kernel runs near GEMM speed, the sparse one pays a gather per
// active neuron, so sparse wins below roughly a tenth.
constexpr double kSparseDensity = 0.10;
// Bytes of V (or X) rows one block of the sparse lists gathers: fits in L2 with room to spare.
constexpr i64 kSparseBlockBytes = 256 * 1024;
// Work (n m d) below which products run on one thread.
constexpr double kSerialWork = 1 << 18;

const kernels::JacobianKernels& active_kernels() { return SKETCHGN_SELECT_KERNELS(jacobian_kernels); }

i64 round_up(i64 v, i64 multiple) { return (v + multiple - 1) / multiple * multiple; }

int threads_for(double work, int n_threads) { return work < kSerialWork ? 1 : std::max(1, n_threads); }

// [begin, end) of part t of n items split into parts of multiples of `align`.
std::pair<i64, i64> split(i64 n, int parts, int t, i64 align) {
  const i64 chunk = round_up((n + parts - 1) / parts, align);
  const i64 begin = std::min(n, chunk * t);
  return {begin, std::min(n, begin + chunk)};
}

// vt (d_pad, block) = V[r0 : r0 + block, :]^T, zero past m and d.
void pack_transposed(const double* V, i64 m, i64 d, i64 d_pad, i64 r0, i64 block, double* vt) {
  std::fill(vt, vt + d_pad * block, 0.0);
  const i64 r_end = std::min(m, r0 + block);
  for (i64 r = r0; r < r_end; ++r)
    for (i64 k = 0; k < d; ++k) vt[k * block + (r - r0)] = V[r * d + k];
}

}  // namespace

ReLUJacobian::ReLUJacobian(const double* X, i64 n, i64 d, const double* W, i64 m, const double* a,
                           double threshold, Path path, int n_threads)
    : n_(n), m_(m), d_(d), m_pad_(round_up(m, 64)), d_pad_(round_up(d, 8)), row_bytes_(m_pad_ / 8),
      threshold_(threshold) {
  if (n < 1 || m < 1 || d < 1) throw std::invalid_argument("ReLUJacobian: n, m and d must be >= 1");
  const auto& kern = active_kernels();
  x_.assign(static_cast<std::size_t>(n * d_pad_), 0.0);
  for (i64 i = 0; i < n; ++i) std::copy(X + i * d, X + (i + 1) * d, x_.begin() + i * d_pad_);
  a_.assign(static_cast<std::size_t>(m_pad_), 0.0);
  std::copy(a, a + m, a_.begin());
  bits_.assign(static_cast<std::size_t>(n * row_bytes_), 0);
  f_.assign(static_cast<std::size_t>(n), 0.0);
  std::vector<double> wt(static_cast<std::size_t>(d_pad_ * m_pad_));
  pack_transposed(W, m, d, d_pad_, 0, m_pad_, wt.data());

  const int threads = threads_for(static_cast<double>(n) * m * d, n_threads);
  const double inv_sqrt_m = 1.0 / std::sqrt(static_cast<double>(m));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const auto [i0, i1] = split(n, nt, t, 4);
    for (i64 r0 = 0; r0 < m_pad_; r0 += kNeuronBlock) {
      const i64 nr = std::min(kNeuronBlock, m_pad_ - r0);
      kern.pattern_forward(x_.data(), d_pad_, wt.data() + r0, m_pad_, a_.data() + r0, nr, threshold, i0,
                           i1, bits_.data() + r0 / 8, row_bytes_, f_.data());
    }
    for (i64 i = i0; i < i1; ++i) f_[i] *= inv_sqrt_m;
  }
  // Padding neurons have w = 0 and a = 0: clear their bits (0 > threshold when threshold < 0).
  if (m_pad_ != m) {
    for (i64 i = 0; i < n; ++i)
      for (i64 r = m; r < m_pad_; ++r) bits_[i * row_bytes_ + (r >> 3)] &= static_cast<std::uint8_t>(~(1u << (r & 7)));
  }
  i64 nnz = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : nnz) schedule(static)
  for (i64 i = 0; i < n; ++i) {
    const std::uint8_t* row = bits_.data() + i * row_bytes_;
    for (i64 w = 0; w < row_bytes_; w += 8) {
      std::uint64_t word;
      std::memcpy(&word, row + w, 8);
      nnz += __builtin_popcountll(word);
    }
  }
  nnz_ = nnz;
  sparse_ = path == Path::sparse || (path == Path::automatic && density() <= kSparseDensity);
  if (sparse_) build_sparse_lists(threads);
}

void ReLUJacobian::build_sparse_lists(int n_threads) {
  // Blocks sized so that the rows a block gathers (of V, or of X) fill about kSparseBlockBytes.
  const i64 row_doubles = d_pad_;
  sparse_neuron_block_ = std::max<i64>(64, kSparseBlockBytes / (8 * row_doubles) / 64 * 64);
  sparse_sample_block_ = std::max<i64>(64, kSparseBlockBytes / (8 * row_doubles));
  const i64 nb = (m_ + sparse_neuron_block_ - 1) / sparse_neuron_block_;
  const i64 sb = (n_ + sparse_sample_block_ - 1) / sparse_sample_block_;

  // CSR by sample, block-major: entries of block b, row i at [row_ptr_[b (n+1) + i], ... + 1]).
  row_ptr_.assign(static_cast<std::size_t>(nb * (n_ + 1)), 0);
  cols_.resize(static_cast<std::size_t>(nnz_));
  std::vector<i64> block_start(static_cast<std::size_t>(nb + 1), 0);
  for (i64 b = 0; b < nb; ++b) {
    const i64 r0 = b * sparse_neuron_block_, r1 = std::min(m_, r0 + sparse_neuron_block_);
    i64* ptr = row_ptr_.data() + b * (n_ + 1);
    ptr[0] = block_start[b];
    for (i64 i = 0; i < n_; ++i) {
      i64 count = 0;
      for (i64 r = r0; r < r1; ++r) count += active(i, r);
      ptr[i + 1] = ptr[i] + count;
    }
    block_start[b + 1] = ptr[n_];
  }
#pragma omp parallel for num_threads(n_threads) schedule(static) collapse(2)
  for (i64 b = 0; b < nb; ++b)
    for (i64 i = 0; i < n_; ++i) {
      const i64 r0 = b * sparse_neuron_block_, r1 = std::min(m_, r0 + sparse_neuron_block_);
      i64 p = row_ptr_[b * (n_ + 1) + i];
      for (i64 r = r0; r < r1; ++r)
        if (active(i, r)) cols_[p++] = static_cast<std::int32_t>(r);
    }

  // CSC by neuron, block-major over samples.
  col_ptr_.assign(static_cast<std::size_t>(sb * (m_ + 1)), 0);
  rows_.resize(static_cast<std::size_t>(nnz_));
  i64 offset = 0;
  for (i64 s = 0; s < sb; ++s) {
    const i64 i0 = s * sparse_sample_block_, i1 = std::min(n_, i0 + sparse_sample_block_);
    i64* ptr = col_ptr_.data() + s * (m_ + 1);
    for (i64 i = i0; i < i1; ++i)
      for (i64 r = 0; r < m_; ++r) ptr[r + 1] += active(i, r);
    ptr[0] = offset;
    for (i64 r = 0; r < m_; ++r) ptr[r + 1] += ptr[r];
    offset = ptr[m_];
    std::vector<i64> next(ptr, ptr + m_);
    for (i64 i = i0; i < i1; ++i)
      for (i64 r = 0; r < m_; ++r)
        if (active(i, r)) rows_[next[r]++] = static_cast<std::int32_t>(i);
  }
}

void ReLUJacobian::matmat(const double* V, i64 k, double* out, int n_threads) const {
  if (k <= 0) return;
  if (sparse_)
    sparse_matmat(V, k, out, n_threads);
  else
    dense_matmat(V, k, out, n_threads);
}

void ReLUJacobian::rmatmat(const double* U, i64 k, double* G, int n_threads) const {
  if (k <= 0) return;
  if (sparse_)
    sparse_rmatmat(U, k, G, n_threads);
  else
    dense_rmatmat(U, k, G, n_threads);
}

void ReLUJacobian::dense_matmat(const double* V, i64 k, double* out, int n_threads) const {
  const auto& kern = active_kernels();
  const int threads = threads_for(static_cast<double>(n_) * m_ * d_ * k, n_threads);
  const double inv_sqrt_m = 1.0 / std::sqrt(static_cast<double>(m_));
  // Each thread owns a range of rows and packs its own blocks of V^T (no n x m intermediate, and
  // only threads * d_pad * kNeuronBlock doubles of workspace).
  std::vector<double> work(static_cast<std::size_t>(threads * d_pad_ * kNeuronBlock));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const auto [i0, i1] = split(n_, nt, t, 4);
    double* vt = work.data() + static_cast<i64>(t) * d_pad_ * kNeuronBlock;
    for (i64 j = 0; j < k; ++j)
      for (i64 i = i0; i < i1; ++i) out[j * n_ + i] = 0.0;
    const i64 block = std::min(kNeuronBlock, matvec_block(d_pad_));
    if (i0 < i1) {
      for (i64 r0 = 0; r0 < m_pad_; r0 += block) {
        const i64 nr = std::min(block, m_pad_ - r0);
        for (i64 j = 0; j < k; ++j) {
          pack_transposed(V + j * m_ * d_, m_, d_, d_pad_, r0, nr, vt);
          kern.matvec(x_.data(), d_pad_, bits_.data() + r0 / 8, row_bytes_, a_.data() + r0, vt, nr, nr, i0,
                      i1, out + j * n_);
        }
      }
      for (i64 j = 0; j < k; ++j)
        for (i64 i = i0; i < i1; ++i) out[j * n_ + i] *= inv_sqrt_m;
    }
  }
}

void ReLUJacobian::dense_rmatmat(const double* U, i64 k, double* G, int n_threads) const {
  const auto& kern = active_kernels();
  const int threads = threads_for(static_cast<double>(n_) * m_ * d_ * k, n_threads);
  const double inv_sqrt_m = 1.0 / std::sqrt(static_cast<double>(m_));
  const i64 blocks = (m_pad_ + kNeuronBlock - 1) / kNeuronBlock;
  std::vector<double> work(static_cast<std::size_t>(threads * d_pad_ * kNeuronBlock));
#pragma omp parallel num_threads(threads)
  {
    double* gt = work.data() + static_cast<i64>(omp_get_thread_num()) * d_pad_ * kNeuronBlock;
#pragma omp for schedule(static)
    for (i64 b = 0; b < blocks; ++b) {
      const i64 r0 = b * kNeuronBlock, nr = std::min(kNeuronBlock, m_pad_ - r0);
      const i64 r_end = std::min(m_, r0 + nr);
      for (i64 j = 0; j < k; ++j) {
        kern.rmatvec(x_.data(), n_, d_pad_, bits_.data() + r0 / 8, row_bytes_, U + j * n_, nr, gt, nr);
        double* Gj = G + j * m_ * d_;
        for (i64 r = r0; r < r_end; ++r) {
          const double scale = a_[r] * inv_sqrt_m;
          for (i64 c = 0; c < d_; ++c) Gj[r * d_ + c] = scale * gt[c * nr + (r - r0)];
        }
      }
    }
  }
}

void ReLUJacobian::sparse_matmat(const double* V, i64 k, double* out, int n_threads) const {
  const auto& kern = active_kernels();
  const int threads = threads_for(static_cast<double>(nnz_) * d_ * k * 8, n_threads);
  const double inv_sqrt_m = 1.0 / std::sqrt(static_cast<double>(m_));
  const i64 nb = static_cast<i64>(row_ptr_.size()) / (n_ + 1);
  // The kernels read V as (m, d_pad): V itself when d is already a multiple of 8.
  std::vector<double> padded;
  if (d_pad_ != d_) padded.assign(static_cast<std::size_t>(m_ * d_pad_), 0.0);
  std::vector<double> work(static_cast<std::size_t>(threads * d_pad_));
  for (i64 j = 0; j < k; ++j) {
    const double* Vj = V + j * m_ * d_;
    if (d_pad_ != d_)
      for (i64 r = 0; r < m_; ++r) std::copy(Vj + r * d_, Vj + (r + 1) * d_, padded.begin() + r * d_pad_);
    const double* v = d_pad_ != d_ ? padded.data() : Vj;
    double* oj = out + j * n_;
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const auto [i0, i1] = split(n_, nt, t, 1);
      for (i64 i = i0; i < i1; ++i) oj[i] = 0.0;
      // Neuron blocks in order: each row sums its blocks in the same order for any thread split.
      for (i64 b = 0; b < nb; ++b)
        kern.sparse_matvec(x_.data(), d_pad_, row_ptr_.data() + b * (n_ + 1), cols_.data(), a_.data(), v,
                           i0, i1, oj, work.data() + static_cast<i64>(t) * d_pad_);
      for (i64 i = i0; i < i1; ++i) oj[i] *= inv_sqrt_m;
    }
  }
}

void ReLUJacobian::sparse_rmatmat(const double* U, i64 k, double* G, int n_threads) const {
  const auto& kern = active_kernels();
  const int threads = threads_for(static_cast<double>(nnz_) * d_ * k * 8, n_threads);
  const double inv_sqrt_m = 1.0 / std::sqrt(static_cast<double>(m_));
  const i64 sb = static_cast<i64>(col_ptr_.size()) / (m_ + 1);
  std::vector<double> padded;
  if (d_pad_ != d_) padded.resize(static_cast<std::size_t>(m_ * d_pad_));
  for (i64 j = 0; j < k; ++j) {
    double* Gj = G + j * m_ * d_;
    double* g = d_pad_ != d_ ? padded.data() : Gj;
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const auto [r0, r1] = split(m_, nt, t, 1);
      std::fill(g + r0 * d_pad_, g + r1 * d_pad_, 0.0);
      for (i64 s = 0; s < sb; ++s)
        kern.sparse_rmatvec(x_.data(), d_pad_, col_ptr_.data() + s * (m_ + 1), rows_.data(), U + j * n_, r0,
                            r1, g);
      for (i64 r = r0; r < r1; ++r) {
        const double scale = a_[r] * inv_sqrt_m;
        for (i64 c = 0; c < d_; ++c) Gj[r * d_ + c] = scale * g[r * d_pad_ + c];
      }
    }
  }
}

bool ReLUJacobian::gram(double* G, int n_threads, const std::function<bool()>& interrupted) const {
  const auto& kern = active_kernels();
  using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const RowMatrix> X(x_.data(), n_, d_pad_);
  const i64 tiles = (n_ + kGramTile - 1) / kGramTile;
  const i64 pairs = tiles * (tiles + 1) / 2;
  // (D diag(a^2) D^T)_ij: with |a_r| all equal (a in {-1, +1} in the paper) it is a^2 times the
  // number of neurons active for both samples, a popcount of ANDed bit rows. Otherwise a GEMM of
  // the tiles of D diag(|a|).
  bool uniform = true;
  for (i64 r = 1; r < m_ && uniform; ++r) uniform = std::abs(a_[r]) == std::abs(a_[0]);
  const double weight = uniform ? a_[0] * a_[0] / static_cast<double>(m_) : 1.0 / static_cast<double>(m_);
  const int threads = threads_for(static_cast<double>(n_) * n_ * m_ / (uniform ? 64 : 1), n_threads);
  auto weighted_tile = [&](i64 i0, i64 i1) {
    RowMatrix t = RowMatrix::Zero(i1 - i0, m_);
    for (i64 i = i0; i < i1; ++i)
      for (i64 r = 0; r < m_; ++r)
        if (active(i, r)) t(i - i0, r) = std::abs(a_[r]);
    return t;
  };
  // Lower-triangular tiles (ti >= tj), each computed by one thread, then mirrored; in batches of
  // about 1/16 of the work, polling `interrupted` between them (a Gram of n = 8000 takes ~1 s).
  const i64 batch = std::max<i64>(64, pairs / 16);
  for (i64 p0 = 0; p0 < pairs; p0 += batch) {
    const i64 p1 = std::min(pairs, p0 + batch);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
    for (i64 p = p0; p < p1; ++p) {
      i64 ti = static_cast<i64>((std::sqrt(8.0 * static_cast<double>(p) + 1.0) - 1.0) / 2.0);
      while (ti * (ti + 1) / 2 > p) --ti;
      while ((ti + 1) * (ti + 2) / 2 <= p) ++ti;
      const i64 tj = p - ti * (ti + 1) / 2;
      const i64 i0 = ti * kGramTile, i1 = std::min(n_, i0 + kGramTile);
      const i64 j0 = tj * kGramTile, j1 = std::min(n_, j0 + kGramTile);
      RowMatrix common;
      if (uniform) {
        kern.common_active(bits_.data(), row_bytes_ / 8, i0, i1, j0, j1, G, n_);
      } else {
        common = weighted_tile(i0, i1) * weighted_tile(j0, j1).transpose();
      }
      const RowMatrix xx = X.middleRows(i0, i1 - i0) * X.middleRows(j0, j1 - j0).transpose();
      for (i64 i = i0; i < i1; ++i)
        for (i64 j = j0; j < (ti == tj ? i + 1 : j1); ++j) {  // diagonal tile: its lower half only
          const double c = uniform ? G[i * n_ + j] : common(i - i0, j - j0);
          // (no common active neuron: exactly 0, also when x_i . x_j or a_r^2 overflows)
          const double v = c == 0.0 ? 0.0 : c * xx(i - i0, j - j0) * weight;
          G[i * n_ + j] = v;
          G[j * n_ + i] = v;
        }
    }
    if (interrupted && interrupted()) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------- GramOperatorF32

namespace {
// Largest |x| or |a| the float32 operator accepts: far enough below FLT_MAX that the conversions are
// exact-or-rounded, never out of range (which would be undefined behaviour).
constexpr double kFloat32Limit = 1e30;
}  // namespace

bool GramOperatorF32::applicable(const ReLUJacobian& J) {
  if (J.is_sparse()) return false;
  const double* x = J.x_padded();
  for (i64 i = 0, size = J.n() * J.d_padded(); i < size; ++i)
    if (!(std::abs(x[i]) <= kFloat32Limit)) return false;
  for (i64 r = 0; r < J.m(); ++r)
    if (!(std::abs(J.a()[r]) <= kFloat32Limit)) return false;
  return true;
}

GramOperatorF32::GramOperatorF32(const ReLUJacobian& J) : J_(J) {
  const i64 n = J.n(), d_pad = J.d_padded(), m_pad = J.m_padded();
  x_.resize(static_cast<std::size_t>(n * d_pad));
  for (i64 i = 0; i < n * d_pad; ++i) x_[i] = round_to<float>(J.x_padded()[i]);
  // J J^T p = sum_r a_r^2 / m D_ir x_i . (sum_j p_j D_jr x_j): the scale of both products in one factor
  a2_.assign(static_cast<std::size_t>(m_pad), 0.0f);
  const double inv_m = 1.0 / static_cast<double>(J.m());
  for (i64 r = 0; r < J.m(); ++r) a2_[r] = round_to<float>(J.a()[r] * J.a()[r] * inv_m);
  u_.resize(static_cast<std::size_t>(n));
  gt_.resize(static_cast<std::size_t>(d_pad * m_pad));
}

void GramOperatorF32::apply(const double* p, double* q, int n_threads) {
  const auto& kern = active_kernels();
  const i64 n = J_.n(), m = J_.m(), d = J_.d(), d_pad = J_.d_padded(), m_pad = J_.m_padded();
  const i64 row_bytes = J_.row_bytes();
  const std::uint8_t* bits = J_.bits();
  const int threads = threads_for(static_cast<double>(n) * m * d, n_threads);
  for (i64 i = 0; i < n; ++i) u_[i] = round_to<float>(p[i]);
  const i64 blocks = (m_pad + kNeuronBlock - 1) / kNeuronBlock;
  const i64 block = std::min(kNeuronBlock, matvec_block(d_pad, sizeof(float)));
  std::vector<float> work(static_cast<std::size_t>(threads * d_pad * block));
#pragma omp parallel num_threads(threads)
  {
    // J^T p, transposed: each block of neurons by one thread, written in place (ldg = m_pad)
#pragma omp for schedule(static)
    for (i64 b = 0; b < blocks; ++b) {
      const i64 r0 = b * kNeuronBlock, nr = std::min(kNeuronBlock, m_pad - r0);
      kern.rmatvec_f32(x_.data(), n, d_pad, bits + r0 / 8, row_bytes, u_.data(), nr, gt_.data() + r0, m_pad);
    }
    // (the implicit barrier of the loop: gt_ is complete)
    // J of it: rows split over the threads, blocks of neurons packed into L1 in increasing order
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const auto [i0, i1] = split(n, nt, t, 4);
    float* vt = work.data() + static_cast<i64>(t) * d_pad * block;
    for (i64 i = i0; i < i1; ++i) q[i] = 0.0;
    if (i0 < i1)
      for (i64 r0 = 0; r0 < m_pad; r0 += block) {
        const i64 nr = std::min(block, m_pad - r0);
        for (i64 k = 0; k < d_pad; ++k) std::copy(gt_.data() + k * m_pad + r0, gt_.data() + k * m_pad + r0 + nr, vt + k * nr);
        kern.matvec_f32(x_.data(), d_pad, bits + r0 / 8, row_bytes, a2_.data() + r0, vt, nr, nr, i0, i1, q);
      }
  }
}

}  // namespace sketchgn
