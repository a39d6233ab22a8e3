#include "sketchgn/random.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_set>

namespace sketchgn {
namespace {

// Uniform integer in [0, bound) from a sequential draw of the stream (Lemire's multiply-shift with
// rejection, so exactly uniform). `counter` advances past every draw used.
std::uint64_t uniform_below(std::uint64_t bound, std::uint64_t key, std::uint64_t& counter) {
  const std::uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const std::uint64_t x = counter_random(key, counter++);
    const unsigned __int128 product = static_cast<unsigned __int128>(x) * bound;
    if (static_cast<std::uint64_t>(product) >= threshold) return static_cast<std::uint64_t>(product >> 64);
  }
}

}  // namespace

std::uint64_t mix64(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

std::uint64_t stream_key(std::uint64_t seed, std::uint64_t stream) {
  return mix64(mix64(seed) ^ mix64(stream + 0x632BE59BD9B4E019ull));
}

std::vector<std::int64_t> sample_without_replacement(std::int64_t population, std::int64_t count,
                                                      std::uint64_t key) {
  std::vector<std::int64_t> out;
  if (count <= 0) return out;
  std::uint64_t counter = 0;
  if (2 * count >= population) {
    // Dense case: a partial Fisher-Yates shuffle of [0, population).
    std::vector<std::int64_t> all(static_cast<std::size_t>(population));
    std::iota(all.begin(), all.end(), std::int64_t(0));
    for (std::int64_t i = 0; i < count; ++i) {
      const auto j = i + static_cast<std::int64_t>(
                             uniform_below(static_cast<std::uint64_t>(population - i), key, counter));
      std::swap(all[i], all[j]);
    }
    out.assign(all.begin(), all.begin() + count);
  } else {
    // Sparse case: Floyd's algorithm, O(count) memory.
    std::unordered_set<std::int64_t> chosen;
    chosen.reserve(static_cast<std::size_t>(count) * 2);
    out.reserve(static_cast<std::size_t>(count));
    for (std::int64_t j = population - count; j < population; ++j) {
      const auto t = static_cast<std::int64_t>(uniform_below(static_cast<std::uint64_t>(j + 1), key, counter));
      const std::int64_t pick = chosen.count(t) ? j : t;
      chosen.insert(pick);
      out.push_back(pick);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

void fill_standard_normal(double* out, std::int64_t count, std::uint64_t key, std::int64_t offset) {
  // Pair p of the stream gives normals 2p and 2p+1; element i depends only on (key, offset + i).
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (std::int64_t i = 0; i < count; ++i) {
    const std::int64_t idx = offset + i;
    const std::int64_t pair = idx / 2;
    // 53-bit uniforms in (0, 1] and [0, 1).
    const double u1 = (static_cast<double>(counter_random(key, 2 * pair) >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(counter_random(key, 2 * pair + 1) >> 11) * 0x1.0p-53;
    const double radius = std::sqrt(-2.0 * std::log(u1));
    out[i] = radius * ((idx & 1) ? std::sin(kTwoPi * u2) : std::cos(kTwoPi * u2));
  }
}

}  // namespace sketchgn
