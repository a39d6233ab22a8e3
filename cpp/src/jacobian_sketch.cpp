#include "sketchgn/jacobian_sketch.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "sketchgn/random.hpp"

namespace sketchgn {

namespace {
using i64 = std::int64_t;
constexpr std::uint64_t kStreamGaussian = 21;
constexpr i64 kGaussianChunk = 32;

// u (m,) = (1/sqrt(m)) (a o D_i): the neuron factor of column i of J^T.
void neuron_factor(const ReLUJacobian& J, i64 i, double* u) {
  const double inv_sqrt_m = 1.0 / std::sqrt(static_cast<double>(J.m()));
  const double* a = J.a();
  for (i64 r = 0; r < J.m(); ++r) u[r] = J.active(i, r) ? a[r] * inv_sqrt_m : 0.0;
}
}  // namespace

void sketch_jacobian_kronecker(const ReLUJacobian& J, const KroneckerSRHT& S, double* T, int n_threads) {
  const i64 n = J.n(), m = J.m(), s = S.n_out(), per = S.m_pad() + S.d_pad();
  const int threads = n * S.m_pad() >= (1 << 15) ? n_threads : 1;
  // D1 (a / sqrt(m)) once: column i's signed neuron factor is then this masked by row i's pattern
  // bits, one branch-free pass (measured 1.3x faster than forming a o D_i and signing it apart).
  const double inv_sqrt_m = 1.0 / std::sqrt(static_cast<double>(m));
  std::vector<double> signed_a(static_cast<std::size_t>(m));
  for (i64 r = 0; r < m; ++r) signed_a[r] = (S.signs_u()[r] > 0 ? 1.0 : -1.0) * J.a()[r] * inv_sqrt_m;
  std::vector<double> work(static_cast<std::size_t>(threads * per));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (i64 i = 0; i < n; ++i) {
    double* w = work.data() + omp_get_thread_num() * per;
    const std::uint8_t* row = J.bits() + i * J.row_bytes();
    for (i64 r = 0; r < m; ++r) w[r] = ((row[r >> 3] >> (r & 7)) & 1u) ? signed_a[r] : 0.0;
    S.apply_kron_column_signed(w, J.x_padded() + i * J.d_padded(), T + i * s, 1, w + S.m_pad());
  }
}

void sketch_jacobian_srht(const ReLUJacobian& J, const SRHT& S, double* T, int n_threads) {
  const i64 n = J.n(), m = J.m(), d = J.d(), s = S.n_out(), md = m * d;
  const int threads = std::max(1, n_threads);
  std::vector<double> work(static_cast<std::size_t>(threads * (md + m)));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (i64 i = 0; i < n; ++i) {
    double* col = work.data() + omp_get_thread_num() * (md + m);
    double* u = col + md;
    neuron_factor(J, i, u);
    const double* x = J.x_padded() + i * J.d_padded();
    for (i64 r = 0; r < m; ++r)
      for (i64 c = 0; c < d; ++c) col[r * d + c] = u[r] * x[c];
    S.apply<double>(col, 1, T + i * s, 1);
  }
}

void sketch_jacobian_gaussian(const ReLUJacobian& J, i64 s, std::uint64_t seed, double* T, int n_threads) {
  const i64 n = J.n(), md = J.m() * J.d();
  const std::uint64_t key = stream_key(seed, kStreamGaussian);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s));
  std::vector<double> dirs(static_cast<std::size_t>(kGaussianChunk * md));
  std::vector<double> prod(static_cast<std::size_t>(kGaussianChunk * n));
  for (i64 j0 = 0; j0 < s; j0 += kGaussianChunk) {
    const i64 k = std::min(kGaussianChunk, s - j0);
    // Row j of S is entries [j md, (j + 1) md) of the stream: the same for any chunking or threads.
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (i64 c = 0; c < k; ++c) fill_standard_normal(dirs.data() + c * md, md, key, (j0 + c) * md);
    J.matmat(dirs.data(), k, prod.data(), n_threads);  // (k, n) = S_chunk J^T
    for (i64 i = 0; i < n; ++i)
      for (i64 c = 0; c < k; ++c) T[i * s + j0 + c] = scale * prod[c * n + i];
  }
}

}  // namespace sketchgn
