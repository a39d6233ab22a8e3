#include "sketchgn/srht.hpp"

#include <cmath>
#include <stdexcept>
#include <vector>

#include "sketchgn/fwht.hpp"
#include "sketchgn/random.hpp"

namespace sketchgn {

namespace {
constexpr std::uint64_t kStreamSigns = 1;
constexpr std::uint64_t kStreamRows = 2;
}  // namespace

std::int64_t next_power_of_two(std::int64_t n) {
  std::int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

SRHT::SRHT(std::int64_t n_in, std::int64_t n_out, std::uint64_t seed)
    : n_in_(n_in), n_out_(n_out), n_pad_(next_power_of_two(n_in)) {
  if (n_in < 1) throw std::invalid_argument("SRHT: n_in must be >= 1");
  if (n_out < 1 || n_out > n_pad_) throw std::invalid_argument("SRHT: n_out must be in [1, n_pad]");
  const std::uint64_t sign_key = stream_key(seed, kStreamSigns);
  signs_.resize(static_cast<std::size_t>(n_in));
  for (std::int64_t i = 0; i < n_in; ++i) signs_[i] = random_sign(sign_key, i) > 0 ? 1 : -1;
  rows_ = sample_without_replacement(n_pad_, n_out, stream_key(seed, kStreamRows));
}

template <class T>
void SRHT::apply(const T* a, std::int64_t k, T* out, int n_threads) const {
  if (k <= 0) return;
  // work[c, :] = D * A[:, c], zero-padded to n_pad.
  std::vector<T> work(static_cast<std::size_t>(k * n_pad_));
  const std::int64_t n_in = n_in_, n_pad = n_pad_;
  const signed char* signs = signs_.data();
  const int threads = k * n_pad >= (1 << 16) ? n_threads : 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (std::int64_t c = 0; c < k; ++c) {
    T* w = work.data() + c * n_pad;
    for (std::int64_t i = 0; i < n_in; ++i) w[i] = signs[i] > 0 ? a[i * k + c] : -a[i * k + c];
    for (std::int64_t i = n_in; i < n_pad; ++i) w[i] = T(0);
  }
  fwht<T>(work.data(), work.data(), k, n_pad, false, n_threads);
  // H is unnormalised here: sqrt(n_pad / n_out) / sqrt(n_pad) = 1 / sqrt(n_out).
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(n_out_)));
  const std::int64_t* rows = rows_.data();
  const std::int64_t n_out = n_out_;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (std::int64_t j = 0; j < n_out; ++j)
    for (std::int64_t c = 0; c < k; ++c) out[j * k + c] = work[c * n_pad + rows[j]] * scale;
}

template void SRHT::apply<float>(const float*, std::int64_t, float*, int) const;
template void SRHT::apply<double>(const double*, std::int64_t, double*, int) const;

}  // namespace sketchgn
