#include "sketchgn/jacobian_sketch.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "sketchgn/fwht.hpp"
#include "sketchgn/random.hpp"
#include "sketchgn/rounding.hpp"

namespace sketchgn {

namespace {
using i64 = std::int64_t;
constexpr std::uint64_t kStreamGaussian = 21;
constexpr std::uint64_t kStreamRowSigns = 31;
constexpr std::uint64_t kStreamRowFeatureSigns = 32;
constexpr std::uint64_t kStreamRows = 33;
constexpr i64 kGaussianChunk = 32;

// out[r] = values[r] where bit r of the pattern row is set, +0.0 elsewhere. Branch-free, by masking
// the bits of the double: the pattern is random, and the branch per neuron the compiler made of a
// conditional was mispredicted half the time -- 35 us of the 40 us per column of the Kronecker sketch
// at m = 16384 (perf).
void select_active(const std::uint8_t* row, const double* values, i64 m, double* out) {
  for (i64 r = 0; r < m; ++r) {
    const std::uint64_t keep = 0 - static_cast<std::uint64_t>((row[r >> 3] >> (r & 7)) & 1u);
    std::uint64_t v;
    std::memcpy(&v, values + r, sizeof v);
    v &= keep;
    std::memcpy(out + r, &v, sizeof v);
  }
}

// (1/sqrt(m)) a: column i's neuron factor is this restricted to row i's active neurons.
std::vector<double> scaled_output_weights(const ReLUJacobian& J) {
  const double inv_sqrt_m = 1.0 / std::sqrt(static_cast<double>(J.m()));
  std::vector<double> scaled(static_cast<std::size_t>(J.m()));
  for (i64 r = 0; r < J.m(); ++r) scaled[r] = J.a()[r] * inv_sqrt_m;
  return scaled;
}

// D1 (a / sqrt(m)) for a sketch's signs D1: the Kronecker sketches fold the signs in once, and each
// column's neuron factor is then this masked by the row's pattern (measured 1.3x faster than forming
// a o D_i and signing it apart).
std::vector<double> signed_output_weights(const ReLUJacobian& J, const std::vector<signed char>& signs) {
  std::vector<double> signed_a = scaled_output_weights(J);
  for (i64 r = 0; r < J.m(); ++r)
    if (signs[r] < 0) signed_a[r] = -signed_a[r];
  return signed_a;
}
}  // namespace

void sketch_jacobian_kronecker(const ReLUJacobian& J, const KroneckerSRHT& S, double* T, int n_threads) {
  const i64 n = J.n(), m = J.m(), s = S.n_out(), per = S.m_pad() + S.d_pad();
  const int threads = n * S.m_pad() >= (1 << 15) ? n_threads : 1;
  const std::vector<double> signed_a = signed_output_weights(J, S.signs_u());
  std::vector<double> work(static_cast<std::size_t>(threads * per));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (i64 i = 0; i < n; ++i) {
    double* w = work.data() + omp_get_thread_num() * per;
    select_active(J.bits() + i * J.row_bytes(), signed_a.data(), m, w);
    S.apply_kron_column_signed(w, J.x_padded() + i * J.d_padded(), T + i * s, 1, w + S.m_pad());
  }
}

void sketch_jacobian_srht(const ReLUJacobian& J, const SRHT& S, double* T, int n_threads) {
  const i64 n = J.n(), m = J.m(), d = J.d(), s = S.n_out(), md = m * d;
  const int threads = std::max(1, n_threads);
  const std::vector<double> scaled_a = scaled_output_weights(J);
  std::vector<double> work(static_cast<std::size_t>(threads * (md + m)));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (i64 i = 0; i < n; ++i) {
    double* col = work.data() + omp_get_thread_num() * (md + m);
    double* u = col + md;
    select_active(J.bits() + i * J.row_bytes(), scaled_a.data(), m, u);
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

// ------------------------------------------------------------------------------ NeuronRowSketch

NeuronRowSketch::NeuronRowSketch(i64 m, i64 d, i64 rows, std::uint64_t seed)
    : m_pad_(next_power_of_two(m)), d_pad_(next_power_of_two(d)) {
  if (m < 1 || d < 1) throw std::invalid_argument("NeuronRowSketch: m and d must be >= 1");
  if (rows < 1 || rows > m_pad_) throw std::invalid_argument("NeuronRowSketch: rows must be in [1, m_pad]");
  const std::uint64_t ku = stream_key(seed, kStreamRowSigns), kx = stream_key(seed, kStreamRowFeatureSigns);
  s1_.resize(static_cast<std::size_t>(m));
  s2_.resize(static_cast<std::size_t>(d));
  for (i64 i = 0; i < m; ++i) s1_[i] = random_sign(ku, i) > 0 ? 1 : -1;
  for (i64 i = 0; i < d; ++i) s2_[i] = random_sign(kx, i) > 0 ? 1 : -1;
  p_ = sample_without_replacement(m_pad_, rows, stream_key(seed, kStreamRows));
  std::sort(p_.begin(), p_.end());  // (ascending: the gathers of sketch_neuron_rows walk forward)
}

void sketch_neuron_rows(const ReLUJacobian& J, const NeuronRowSketch& S, double* Uhat, int n_threads) {
  const i64 n = J.n(), m = J.m(), m_pad = S.m_pad(), rows = S.rows();
  const int threads = n * m_pad >= (1 << 15) ? n_threads : 1;
  const std::vector<double> signed_a = signed_output_weights(J, S.signs_u());
  const i64* P = S.rows_u().data();
  std::vector<double> work(static_cast<std::size_t>(threads * m_pad));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (i64 i = 0; i < n; ++i) {
    double* w = work.data() + omp_get_thread_num() * m_pad;
    select_active(J.bits() + i * J.row_bytes(), signed_a.data(), m, w);
    std::fill(w + m, w + m_pad, 0.0);
    fwht<double>(w, w, 1, m_pad, false, 1);
    double* out = Uhat + i * rows;
    for (i64 k = 0; k < rows; ++k) out[k] = w[P[k]];
  }
}

void sketch_jacobian_rows(const ReLUJacobian& J, const NeuronRowSketch& S, double* T, int n_threads) {
  const i64 n = J.n(), d = J.d(), d_pad = S.d_pad(), rows = S.rows(), s = S.n_out();
  std::vector<double> Uhat(static_cast<std::size_t>(n * rows));
  sketch_neuron_rows(J, S, Uhat.data(), n_threads);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s));
  std::vector<double> work(static_cast<std::size_t>(std::max(1, n_threads) * d_pad));
#pragma omp parallel for num_threads(std::max(1, n_threads)) schedule(static)
  for (i64 i = 0; i < n; ++i) {
    double* xh = work.data() + omp_get_thread_num() * d_pad;
    const double* x = J.x_padded() + i * J.d_padded();
    for (i64 q = 0; q < d_pad; ++q) xh[q] = q < d ? (S.signs_x()[q] > 0 ? x[q] : -x[q]) : 0.0;
    fwht<double>(xh, xh, 1, d_pad, false, 1);
    for (i64 k = 0; k < rows; ++k) {
      const double u = scale * Uhat[i * rows + k];
      for (i64 q = 0; q < d_pad; ++q) T[i * s + k * d_pad + q] = u * xh[q];
    }
  }
}

namespace {

// C <- factor (C o X X^T) + shift I on the upper triangle of C (n, n) row-major (the products in
// double, each entry rounded to Real once).
template <class Real>
void scale_by_feature_gram_upper(const ReLUJacobian& J, double factor, double shift, Real* C, int n_threads) {
  const i64 n = J.n(), d = J.d(), d_pad = J.d_padded();
  const double* x = J.x_padded();
  // X^T (d, n): for row i the dot products x_i . x_j, j >= i, are then d passes of an axpy over
  // contiguous j (vectorized), instead of one short dot product per entry (measured 0.5 s -> 0.05 s
  // at n = 8000, d = 32). Each sum runs over k in increasing order: the same bits for any split.
  std::vector<double> xt(static_cast<std::size_t>(d * n));
  for (i64 i = 0; i < n; ++i)
    for (i64 k = 0; k < d; ++k) xt[k * n + i] = x[i * d_pad + k];
  const int threads = std::max(1, n_threads);
  std::vector<double> work(static_cast<std::size_t>(threads * n));
  // (rows of the triangle get shorter: dynamic chunks balance the threads)
#pragma omp parallel for num_threads(threads) schedule(dynamic, 32)
  for (i64 i = 0; i < n; ++i) {
    double* dot = work.data() + omp_get_thread_num() * n;
    std::fill(dot + i, dot + n, 0.0);
    for (i64 k = 0; k < d; ++k) {
      const double xik = x[i * d_pad + k];
      const double* row = xt.data() + k * n;
      for (i64 j = i; j < n; ++j) dot[j] += xik * row[j];
    }
    Real* ci = C + i * n;
    // (the products in double: a float32 C is rounded once)
    for (i64 j = i; j < n; ++j) ci[j] = round_to<Real>(factor * (static_cast<double>(ci[j]) * dot[j]));
    ci[i] = round_to<Real>(static_cast<double>(ci[i]) + shift);
  }
}

}  // namespace

template <class Real>
bool neuron_rows_gram_upper(const ReLUJacobian& J, const double* Uhat, i64 rows, double shift, Real* C,
                            int n_threads, const InterruptCheck& interrupted) {
  const i64 n = J.n();
  double factor = 1.0 / static_cast<double>(rows);
  if constexpr (std::is_same_v<Real, double>) {
    if (!sketch_gram_upper<double>(Uhat, n, rows, 0.0, C, interrupted)) return false;
  } else {
    // Uhat carries a's scale (entries ~ |a|; J's entries are |a| |x| / sqrt(m), and |a| = 1e-22 with
    // |x| = 1e22 is a fine Jacobian): divided by 2^e near its largest entry before the rounding, and
    // 2^(2e) comes back, exactly, in the double factor of the Hadamard step.
    double top = 0.0;
    for (i64 k = 0; k < n * rows; ++k) top = std::max(top, std::abs(Uhat[k]));
    const int e = top > 0.0 && std::isfinite(top) ? std::ilogb(top) : 0;
    std::vector<float> rounded(static_cast<std::size_t>(n * rows));
    for (i64 k = 0; k < n * rows; ++k) rounded[k] = static_cast<float>(std::ldexp(Uhat[k], -e));
    factor = std::ldexp(factor, 2 * e);
    if (!sketch_gram_upper<float>(rounded.data(), n, rows, 0.0, C, interrupted)) return false;
  }
  scale_by_feature_gram_upper<Real>(J, factor, shift, C, n_threads);
  return true;
}

template bool neuron_rows_gram_upper<double>(const ReLUJacobian&, const double*, i64, double, double*, int,
                                             const InterruptCheck&);
template bool neuron_rows_gram_upper<float>(const ReLUJacobian&, const double*, i64, double, float*, int,
                                            const InterruptCheck&);

}  // namespace sketchgn
