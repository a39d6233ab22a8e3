// Table of the triangular-solve kernels compiled for one instruction set (see
// triangular_kernels.inc): the preconditioner's R^{-T} z and R^{-1} z inside every PCG iteration.
//
// Included by per-ISA files compiled with -mavx2 / -mavx512f: no inline functions or templates with
// external linkage here.
#pragma once
#include <cstdint>

namespace sketchgn::kernels {

// R (n, n) row-major upper triangular, float32 or float64; y (n,) float64, in place: on entry the
// right-hand side, on exit the solution. Each entry is accumulated in one fixed order.
struct TriangularKernels {
  void (*solve_transpose_f32)(const float* R, std::int64_t n, double* y);   // R^T y = z
  void (*solve_transpose_f64)(const double* R, std::int64_t n, double* y);
  void (*solve_f32)(const float* R, std::int64_t n, double* y);             // R y = z
  void (*solve_f64)(const double* R, std::int64_t n, double* y);
  const char* name;
};

namespace baseline { const TriangularKernels& triangular_kernels(); }
namespace avx2 { const TriangularKernels& triangular_kernels(); }
namespace avx512 { const TriangularKernels& triangular_kernels(); }

}  // namespace sketchgn::kernels
