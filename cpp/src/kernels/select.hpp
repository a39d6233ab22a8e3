// Picks the kernel table of the active SIMD level (see simd.hpp). For the drivers only: the kernel
// files themselves never include this.
#pragma once
#include "sketchgn/simd.hpp"

#if defined(SKETCHGN_HAVE_KERNELS_AVX2)
#define SKETCHGN_AVX2_KERNELS(getter) (&::sketchgn::kernels::avx2::getter)
#else
#define SKETCHGN_AVX2_KERNELS(getter) nullptr
#endif
#if defined(SKETCHGN_HAVE_KERNELS_AVX512)
#define SKETCHGN_AVX512_KERNELS(getter) (&::sketchgn::kernels::avx512::getter)
#else
#define SKETCHGN_AVX512_KERNELS(getter) nullptr
#endif

namespace sketchgn::kernels {

template <class Table>
const Table& select_kernels(const Table& (*baseline_fn)(), const Table& (*avx2_fn)(),
                            const Table& (*avx512_fn)()) {
  switch (active_simd_level()) {
    case SimdLevel::avx512:
      if (avx512_fn != nullptr) return avx512_fn();
      [[fallthrough]];
    case SimdLevel::avx2:
      if (avx2_fn != nullptr) return avx2_fn();
      [[fallthrough]];
    default:
      return baseline_fn();
  }
}

}  // namespace sketchgn::kernels

// select_kernels over the three compiled sets of one table getter, e.g. fwht_kernels.
#define SKETCHGN_SELECT_KERNELS(getter)                                                   \
  ::sketchgn::kernels::select_kernels(&::sketchgn::kernels::baseline::getter,             \
                                      SKETCHGN_AVX2_KERNELS(getter), SKETCHGN_AVX512_KERNELS(getter))
