// Counter-based pseudo-random numbers: value i of stream (seed, stream) is a pure function of the three,
// so sketches are identical on every machine and for every thread count (the RandBLAS way).
#pragma once
#include <cstdint>
#include <vector>

namespace sketchgn {

// The splitmix64 finaliser: a bijective mixer of 64-bit words.
std::uint64_t mix64(std::uint64_t x);

// Key of an independent stream derived from a user seed and a stream label.
std::uint64_t stream_key(std::uint64_t seed, std::uint64_t stream);

// Value number `counter` of the stream with this key.
inline std::uint64_t counter_random(std::uint64_t key, std::uint64_t counter) {
  return mix64(key + 0x9E3779B97F4A7C15ull * (counter + 1));
}

// +1 or -1, each with probability 1/2.
inline double random_sign(std::uint64_t key, std::uint64_t counter) {
  return (counter_random(key, counter) >> 63) ? -1.0 : 1.0;
}

// Sorted sample of `count` distinct integers from [0, population), uniform over all such subsets.
std::vector<std::int64_t> sample_without_replacement(std::int64_t population, std::int64_t count,
                                                      std::uint64_t key);

// count independent standard normals (Box-Muller on the stream), for the Gaussian sketch.
void fill_standard_normal(double* out, std::int64_t count, std::uint64_t key, std::int64_t offset);

}  // namespace sketchgn
