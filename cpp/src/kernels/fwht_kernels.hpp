// Table of the Walsh-Hadamard kernels compiled for one instruction set.
//
// This header is included by the per-ISA kernel files, which are compiled with -mavx2 / -mavx512f:
// it must stay free of inline functions and templates with external linkage, or the linker could
// pick an AVX-512 copy of them for code that runs on an older CPU.
#pragma once
#include <cstdint>

namespace sketchgn::kernels {

struct FwhtKernels {
  // Transform of one contiguous vector of length n (a power of two, n >= 1). src may equal dst.
  // When do_scale, every output is multiplied by scale (folded into the last pass).
  void (*block_f32)(const float* src, float* dst, std::int64_t n, float scale, bool do_scale);
  void (*block_f64)(const double* src, double* dst, std::int64_t n, double scale, bool do_scale);
  // In-place transform along axis 0 of a (rows, cols) row-major panel with leading dimension ld:
  // butterflies combine whole rows. rows is a power of two; cols is a multiple of 16.
  void (*rows_f32)(float* base, std::int64_t rows, std::int64_t cols, std::int64_t ld, float scale,
                   bool do_scale);
  void (*rows_f64)(double* base, std::int64_t rows, std::int64_t cols, std::int64_t ld,
                   double scale, bool do_scale);
  int lanes_f32;  // SIMD lanes of one vector register
  int lanes_f64;
  const char* name;
};

namespace baseline { const FwhtKernels& fwht_kernels(); }
namespace avx2 { const FwhtKernels& fwht_kernels(); }
namespace avx512 { const FwhtKernels& fwht_kernels(); }

}  // namespace sketchgn::kernels
