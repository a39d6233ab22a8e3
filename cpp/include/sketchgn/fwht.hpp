// Fast Walsh-Hadamard transform (natural / Sylvester order) along the last axis of a batch.
//
// Invariants: n is a power of two >= 1; src and dst are contiguous (batch, n) arrays that are either
// identical (in place) or do not overlap; the result is bitwise identical for every thread count and
// for every way the work is split (each output element sees the same operations in the same order).
#pragma once
#include <cstdint>

namespace sketchgn {

// dst[b, :] = H_n src[b, :] (times 1/sqrt(n) when normalize). n_threads >= 1 threads share the
// batch and, for one large transform, its cache-sized blocks.
template <class T>
void fwht(const T* src, T* dst, std::int64_t batch, std::int64_t n, bool normalize, int n_threads);

extern template void fwht<float>(const float*, float*, std::int64_t, std::int64_t, bool, int);
extern template void fwht<double>(const double*, double*, std::int64_t, std::int64_t, bool, int);

// Name of the kernel set fwht uses now ("baseline", "avx2", "avx512").
const char* fwht_kernel_name();

}  // namespace sketchgn
