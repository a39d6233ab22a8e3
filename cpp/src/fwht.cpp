// Driver of the Walsh-Hadamard transform: picks the kernel set, splits the work into cache-sized
// pieces and threads. The arithmetic is in kernels/fwht_kernels.inc.
//
// A vector that fits in L1 is one in-register/in-cache block. A longer one is transformed depth
// first, H_n = (H_r (x) I_m)(I_r (x) H_m) with n = r m: first the r contiguous parts of length m
// (recursively, so each part is finished while it is still in the cache level it fits), then one
// pass that combines the r parts with log2(r) levels of butterflies held in registers. Every level of
// the recursion is a sequential sweep over r streams, so only the top pass touches main memory and it
// does so at streaming speed. An out-of-place transform reads src only in the leaves.
#include "sketchgn/fwht.hpp"

#include <algorithm>
#include <cmath>

#include "kernels/fwht_kernels.hpp"
#include "kernels/select.hpp"

namespace sketchgn {
namespace {

using i64 = std::int64_t;

// Leaves of the recursion fit in L1 (48 KiB on current cores): measured fastest at 16 KiB.
constexpr i64 kLeafBytes = 16 * 1024;
// Parts combined per pass: 2^3, the widest radix of the kernels' passes between rows.
constexpr int kCombineLog2 = 3;
// Below this many elements in total the transform runs on one thread (thread start-up dominates).
constexpr i64 kSerialElements = 1 << 15;

const kernels::FwhtKernels& active_kernels() { return SKETCHGN_SELECT_KERNELS(fwht_kernels); }

template <class T>
struct Kernels {
  void (*block)(const T*, T*, i64, T, bool);
  void (*rows)(T*, i64, i64, i64, T, bool);
};
Kernels<float> typed(const kernels::FwhtKernels& k, float*) { return {k.block_f32, k.rows_f32}; }
Kernels<double> typed(const kernels::FwhtKernels& k, double*) { return {k.block_f64, k.rows_f64}; }

int log2_exact(i64 n) {
  int k = 0;
  while ((i64(1) << k) < n) ++k;
  return k;
}

template <class T>
constexpr i64 leaf_length() {
  return kLeafBytes / static_cast<i64>(sizeof(T));
}

// How many levels (log2 r) the combine pass at length n takes: as many as the registers allow.
template <class T>
int combine_levels(i64 n) {
  return std::min(kCombineLog2, log2_exact(n / leaf_length<T>()));
}

// Serial depth-first transform of one vector of length n > leaf (see the file comment).
template <class T>
void transform_serial(const Kernels<T>& k, const T* src, T* dst, i64 n, T scale, bool do_scale) {
  if (n <= leaf_length<T>()) {
    k.block(src, dst, n, scale, do_scale);
    return;
  }
  const int lv = combine_levels<T>(n);
  const i64 r = i64(1) << lv, m = n >> lv;
  for (i64 t = 0; t < r; ++t) transform_serial(k, src + t * m, dst + t * m, m, T(1), false);
  k.rows(dst, r, m, m, scale, do_scale);
}

// The same with n_threads sharing the top level: the parts, then column ranges of the combine pass.
// Each output element sees the same operations as in the serial version, so results are identical.
template <class T>
void transform_parallel(const Kernels<T>& k, const T* src, T* dst, i64 n, T scale, bool do_scale,
                        int n_threads) {
  const int lv = combine_levels<T>(n);
  const i64 r = i64(1) << lv, m = n >> lv;
  // Column ranges are multiples of 16 elements (every kernel's lane count divides 16).
  const i64 chunks = std::max<i64>(1, std::min<i64>(n_threads, m / 16));
  const i64 per_chunk = (m / 16 + chunks - 1) / chunks * 16;
#pragma omp parallel num_threads(n_threads)
  {
#pragma omp for schedule(static)
    for (i64 t = 0; t < r; ++t) transform_serial(k, src + t * m, dst + t * m, m, T(1), false);
#pragma omp for schedule(static)
    for (i64 c = 0; c < chunks; ++c) {
      const i64 begin = c * per_chunk, end = std::min(m, begin + per_chunk);
      if (begin < end) k.rows(dst + begin, r, end - begin, m, scale, do_scale);
    }
  }
}

}  // namespace

const char* fwht_kernel_name() { return active_kernels().name; }

template <class T>
void fwht(const T* src, T* dst, i64 batch, i64 n, bool normalize, int n_threads) {
  if (batch <= 0 || n <= 0) return;
  const Kernels<T> k = typed(active_kernels(), static_cast<T*>(nullptr));
  const T scale = normalize ? static_cast<T>(1.0 / std::sqrt(static_cast<double>(n))) : T(1);
  const bool do_scale = normalize && n > 1;
  const int threads =
      batch * n >= kSerialElements ? std::max(1, n_threads) : 1;

  if (threads == 1 || (batch >= threads && batch >= 2)) {
    // Whole vectors per thread. No OpenMP region at all for one thread: its entry costs more than a
    // small transform.
    if (threads == 1) {
      for (i64 b = 0; b < batch; ++b) transform_serial(k, src + b * n, dst + b * n, n, scale, do_scale);
      return;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (i64 b = 0; b < batch; ++b) transform_serial(k, src + b * n, dst + b * n, n, scale, do_scale);
    return;
  }
  for (i64 b = 0; b < batch; ++b) {
    if (n <= leaf_length<T>())
      transform_serial(k, src + b * n, dst + b * n, n, scale, do_scale);
    else
      transform_parallel(k, src + b * n, dst + b * n, n, scale, do_scale, threads);
  }
}

template void fwht<float>(const float*, float*, i64, i64, bool, int);
template void fwht<double>(const double*, double*, i64, i64, bool, int);

}  // namespace sketchgn
