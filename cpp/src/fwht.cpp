// Driver of the Walsh-Hadamard transform: picks the kernel set, splits the work into cache-sized
// pieces and threads. The arithmetic is in kernels/fwht_kernels.inc.
//
// A transform of length n that fits in L2 runs as one in-cache block. A longer one is viewed as an
// (n1, n2) matrix, H_n = H_n1 (x) H_n2: first the axis-0 transforms of column panels (each panel
// copied to a contiguous buffer, which avoids the cache-set conflicts of power-of-two strides), then
// the in-cache transform of each row of length n2. That is two passes over memory whatever n is.
#include "sketchgn/fwht.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "kernels/fwht_kernels.hpp"
#include "sketchgn/simd.hpp"

namespace sketchgn {
namespace {

using i64 = std::int64_t;

// Sizes in bytes. L2 is 512 KiB to 2 MiB on current x86-64 cores; keep a block within half of it.
constexpr i64 kInCacheBytes = 256 * 1024;
constexpr i64 kRowBlockBytes = 128 * 1024;
constexpr i64 kPanelBytes = 128 * 1024;
// Below this many elements in total the transform runs on one thread (thread start-up dominates).
constexpr i64 kSerialElements = 1 << 15;

const kernels::FwhtKernels& active_kernels() {
  switch (active_simd_level()) {
#if defined(SKETCHGN_HAVE_KERNELS_AVX512)
    case SimdLevel::avx512: return kernels::avx512::fwht_kernels();
#endif
#if defined(SKETCHGN_HAVE_KERNELS_AVX2)
    case SimdLevel::avx2: return kernels::avx2::fwht_kernels();
#endif
    default: return kernels::baseline::fwht_kernels();
  }
}

template <class T>
struct Ops;
template <>
struct Ops<float> {
  static auto block(const kernels::FwhtKernels& k) { return k.block_f32; }
  static auto rows(const kernels::FwhtKernels& k) { return k.rows_f32; }
};
template <>
struct Ops<double> {
  static auto block(const kernels::FwhtKernels& k) { return k.block_f64; }
  static auto rows(const kernels::FwhtKernels& k) { return k.rows_f64; }
};

struct AlignedDelete {
  void operator()(void* p) const { ::operator delete(p, std::align_val_t(64)); }
};

template <class T>
std::unique_ptr<T, AlignedDelete> aligned_buffer(i64 count) {
  return std::unique_ptr<T, AlignedDelete>(
      static_cast<T*>(::operator new(sizeof(T) * static_cast<std::size_t>(count), std::align_val_t(64))));
}

int log2_exact(i64 n) {
  int k = 0;
  while ((i64(1) << k) < n) ++k;
  return k;
}

// One transform too large for the cache, as an (n1, n2) matrix (see the file comment).
template <class T>
void large_transform(const kernels::FwhtKernels& kern, const T* src, T* dst, i64 n, T scale,
                     bool do_scale, int n_threads) {
  const auto block = Ops<T>::block(kern);
  const auto rows = Ops<T>::rows(kern);
  const int log_n = log2_exact(n);
  const int log_n2 = std::min(log_n - 1, log2_exact(kRowBlockBytes / static_cast<i64>(sizeof(T))));
  const i64 n2 = i64(1) << log_n2;
  const i64 n1 = n / n2;
  // Panel width: as many columns as fit in kPanelBytes, at least 16 (a multiple of every lane
  // count) and at most n2.
  i64 panel = 16;
  while (panel * 2 <= n2 && n1 * panel * 2 * static_cast<i64>(sizeof(T)) <= kPanelBytes) panel *= 2;
  const i64 n_panels = n2 / panel;

  // Allocated before the parallel region: nothing may throw inside it.
  auto buffers = aligned_buffer<T>(n1 * panel * n_threads);
#pragma omp parallel num_threads(n_threads)
  {
    T* buf = buffers.get() + n1 * panel * omp_get_thread_num();
#pragma omp for schedule(static)
    for (i64 p = 0; p < n_panels; ++p) {
      const i64 col = p * panel;
      for (i64 i = 0; i < n1; ++i)
        std::memcpy(buf + i * panel, src + i * n2 + col, sizeof(T) * static_cast<std::size_t>(panel));
      rows(buf, n1, panel, panel, T(1), false);
      for (i64 i = 0; i < n1; ++i)
        std::memcpy(dst + i * n2 + col, buf + i * panel, sizeof(T) * static_cast<std::size_t>(panel));
    }
    // (implicit barrier: every column transform is done before the rows start)
#pragma omp for schedule(static)
    for (i64 i = 0; i < n1; ++i) block(dst + i * n2, dst + i * n2, n2, scale, do_scale);
  }
}

}  // namespace

const char* fwht_kernel_name() { return active_kernels().name; }

template <class T>
void fwht(const T* src, T* dst, i64 batch, i64 n, bool normalize, int n_threads) {
  if (batch <= 0 || n <= 0) return;
  const auto& kern = active_kernels();
  const T scale = normalize ? static_cast<T>(1.0 / std::sqrt(static_cast<double>(n))) : T(1);
  const bool do_scale = normalize && n > 1;
  if (n_threads < 1) n_threads = 1;

  if (n * static_cast<i64>(sizeof(T)) <= kInCacheBytes) {
    const auto block = Ops<T>::block(kern);
    const int threads = batch * n >= kSerialElements ? static_cast<int>(std::min<i64>(n_threads, batch)) : 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (i64 b = 0; b < batch; ++b) block(src + b * n, dst + b * n, n, scale, do_scale);
    return;
  }
  for (i64 b = 0; b < batch; ++b)
    large_transform<T>(kern, src + b * n, dst + b * n, n, scale, do_scale, n_threads);
}

template void fwht<float>(const float*, float*, i64, i64, bool, int);
template void fwht<double>(const double*, double*, i64, i64, bool, int);

}  // namespace sketchgn
