#include "sketchgn/kronecker_srht.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <cstdint>

#include <omp.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "sketchgn/fwht.hpp"
#include "sketchgn/random.hpp"
#include "sketchgn/srht.hpp"

namespace sketchgn {

namespace {
constexpr std::uint64_t kStreamSignsU = 11;
constexpr std::uint64_t kStreamSignsX = 12;
constexpr std::uint64_t kStreamCells = 13;
}  // namespace

KroneckerSRHT::KroneckerSRHT(std::int64_t m, std::int64_t d, std::int64_t n_out, std::uint64_t seed)
    : m_(m), d_(d), n_out_(n_out), m_pad_(next_power_of_two(m)), d_pad_(next_power_of_two(d)) {
  if (m < 1 || d < 1) throw std::invalid_argument("KroneckerSRHT: m and d must be >= 1");
  if (n_out < 1 || n_out > m_pad_ * d_pad_)
    throw std::invalid_argument("KroneckerSRHT: n_out must be in [1, m_pad * d_pad]");
  scale_ = 1.0 / std::sqrt(static_cast<double>(n_out));
  const std::uint64_t ku = stream_key(seed, kStreamSignsU), kx = stream_key(seed, kStreamSignsX);
  s1_.resize(static_cast<std::size_t>(m));
  s2_.resize(static_cast<std::size_t>(d));
  for (std::int64_t i = 0; i < m; ++i) s1_[i] = random_sign(ku, i) > 0 ? 1 : -1;
  for (std::int64_t i = 0; i < d; ++i) s2_[i] = random_sign(kx, i) > 0 ? 1 : -1;
  const auto cells = sample_without_replacement(m_pad_ * d_pad_, n_out, stream_key(seed, kStreamCells));
  p_.resize(cells.size());
  q_.resize(cells.size());
  for (std::size_t j = 0; j < cells.size(); ++j) {
    p_[j] = cells[j] / d_pad_;
    q_[j] = cells[j] % d_pad_;
  }
  while ((std::int64_t(1) << log2_d_pad_) < d_pad_) ++log2_d_pad_;
  if (m_pad_ <= (std::int64_t(1) << 32) / d_pad_) cells32_.assign(cells.begin(), cells.end());
}

void KroneckerSRHT::apply_kron_column(const double* u, const double* x, double* out,
                                      std::int64_t out_stride, double* work_u, double* work_x) const {
  for (std::int64_t i = 0; i < m_; ++i) work_u[i] = s1_[i] > 0 ? u[i] : -u[i];
  apply_kron_column_signed(work_u, x, out, out_stride, work_x);
}

void KroneckerSRHT::apply_kron_column_signed(double* work_u, const double* x, double* out,
                                             std::int64_t out_stride, double* work_x) const {
  for (std::int64_t i = m_; i < m_pad_; ++i) work_u[i] = 0.0;
  for (std::int64_t i = 0; i < d_; ++i) work_x[i] = s2_[i] > 0 ? x[i] : -x[i];
  for (std::int64_t i = d_; i < d_pad_; ++i) work_x[i] = 0.0;
  fwht<double>(work_u, work_u, 1, m_pad_, false, 1);
  fwht<double>(work_x, work_x, 1, d_pad_, false, 1);
  if (out_stride != 1 || cells32_.empty()) {
    for (std::int64_t j = 0; j < n_out_; ++j) out[j * out_stride] = scale_ * work_u[p_[j]] * work_x[q_[j]];
    return;
  }
  // A contiguous output row (a row of the sketch of J^T: n_out doubles, written once and read much
  // later by the SYRK): the scale folded into u's m_pad entries, 32-bit cells, and streaming stores
  // that skip the read-for-ownership of each output line (measured at n = 8000, s = 32000: the 2 GB
  // output is most of the sketch's memory traffic). The same bits as the loop above: scale_ * u
  // is formed first there too.
  for (std::int64_t i = 0; i < m_pad_; ++i) work_u[i] *= scale_;
  const std::uint32_t* cells = cells32_.data();
  const std::uint32_t qmask = static_cast<std::uint32_t>(d_pad_ - 1);
  const int shift = log2_d_pad_;
  std::int64_t j = 0;
  auto value = [&](std::int64_t jj) {
    const std::uint32_t c = cells[jj];
    return work_u[c >> shift] * work_x[c & qmask];
  };
#if defined(__SSE2__)
  if ((reinterpret_cast<std::uintptr_t>(out) & 15u) != 0 && j < n_out_) {
    out[j] = value(j);
    ++j;
  }
  for (; j + 2 <= n_out_; j += 2) _mm_stream_pd(out + j, _mm_set_pd(value(j + 1), value(j)));
  _mm_sfence();  // the streamed lines are visible to other threads before the caller goes on
#endif
  for (; j < n_out_; ++j) out[j] = value(j);
}

void KroneckerSRHT::apply_kron(const double* U, const double* X, std::int64_t k, double* out,
                               int n_threads) const {
  const int threads = k * m_pad_ >= (1 << 15) ? n_threads : 1;
  std::vector<double> work(static_cast<std::size_t>(threads * (m_pad_ + d_pad_)));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t c = 0; c < k; ++c) {
    double* wu = work.data() + omp_get_thread_num() * (m_pad_ + d_pad_);
    apply_kron_column(U + c * m_, X + c * d_, out + c, k, wu, wu + m_pad_);
  }
}

void KroneckerSRHT::apply(const double* A, std::int64_t k, double* out, int n_threads) const {
  // Column c reshaped to M (m, d): (H D1 (x) H D2) vec(M) = vec(H D1 M D2 H): transform the rows of
  // the padded, signed M, then its columns (as rows of the transpose), then sample the cells.
  const std::int64_t cells = m_pad_ * d_pad_;
  const int threads = k >= 2 ? n_threads : 1;
  const int inner = threads == 1 ? n_threads : 1;
  std::vector<double> work(static_cast<std::size_t>(threads * 2 * cells));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t c = 0; c < k; ++c) {
    double* M = work.data() + omp_get_thread_num() * 2 * cells;
    double* T = M + cells;
    for (std::int64_t r = 0; r < m_pad_; ++r)
      for (std::int64_t q = 0; q < d_pad_; ++q) {
        double v = 0.0;
        if (r < m_ && q < d_) {
          v = A[(r * d_ + q) * k + c];
          if ((s1_[r] > 0) != (s2_[q] > 0)) v = -v;
        }
        M[r * d_pad_ + q] = v;
      }
    fwht<double>(M, M, m_pad_, d_pad_, false, inner);
    for (std::int64_t r = 0; r < m_pad_; ++r)
      for (std::int64_t q = 0; q < d_pad_; ++q) T[q * m_pad_ + r] = M[r * d_pad_ + q];
    fwht<double>(T, T, d_pad_, m_pad_, false, inner);
    for (std::int64_t j = 0; j < n_out_; ++j) out[j * k + c] = scale_ * T[q_[j] * m_pad_ + p_[j]];
  }
}

}  // namespace sketchgn
