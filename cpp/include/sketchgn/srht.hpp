// Subsampled randomized Hadamard transform S = sqrt(n_pad / n_out) P H D, with D random signs, H the
// orthonormal Walsh-Hadamard matrix on n_in zero-padded to n_pad = 2^ceil(log2 n_in), and P a uniform
// sample of n_out of its rows without replacement (sorted). E[S^T S] = I.
//
// The signs and rows are pure functions of the seed (see random.hpp), so S is the same on every
// machine and for every thread count.
#pragma once
#include <cstdint>
#include <vector>

namespace sketchgn {

class SRHT {
 public:
  // Requires 1 <= n_in and 1 <= n_out <= n_pad (checked by the caller; throws std::invalid_argument).
  SRHT(std::int64_t n_in, std::int64_t n_out, std::uint64_t seed);

  std::int64_t n_in() const { return n_in_; }
  std::int64_t n_out() const { return n_out_; }
  std::int64_t n_pad() const { return n_pad_; }
  const std::vector<std::int64_t>& rows() const { return rows_; }
  const std::vector<signed char>& signs() const { return signs_; }

  // out (n_out, k) = S A for A (n_in, k), both row-major and contiguous. Uses a (k, n_pad) work
  // buffer and the batched transform.
  template <class T>
  void apply(const T* a, std::int64_t k, T* out, int n_threads) const;

 private:
  std::int64_t n_in_, n_out_, n_pad_;
  std::vector<signed char> signs_;
  std::vector<std::int64_t> rows_;
};

extern template void SRHT::apply<float>(const float*, std::int64_t, float*, int) const;
extern template void SRHT::apply<double>(const double*, std::int64_t, double*, int) const;

// Smallest power of two >= n (n >= 1).
std::int64_t next_power_of_two(std::int64_t n);

}  // namespace sketchgn
