// Table of the triangular-solve kernels compiled for one instruction set (see
// triangular_kernels.inc): the streaming parts of the preconditioner's R^{-T} z and R^{-1} z, which
// run in every PCG iteration. The drivers (pcg.cpp) split them over threads and do the small
// triangles on the diagonal themselves.
//
// Included by per-ISA files compiled with -mavx2 / -mavx512f: no inline functions or templates with
// external linkage here.
#pragma once
#include <cstdint>

namespace sketchgn::kernels {

// R (n, n) row-major, float32 or float64; y float64. Each output is accumulated in one fixed order
// that does not depend on the ranges a caller splits the work into.
struct TriangularKernels {
  // y[j] -= sum_{q < rows} R[k0 + q, j] * y[k0 + q] for j in [j0, j1), rows taken 8 per pass over y
  // (in increasing q) so that y is read and written once per 8 rows.
  void (*update_f32)(const float* R, std::int64_t n, std::int64_t k0, std::int64_t rows, double* y,
                     std::int64_t j0, std::int64_t j1);
  void (*update_f64)(const double* R, std::int64_t n, std::int64_t k0, std::int64_t rows, double* y,
                     std::int64_t j0, std::int64_t j1);
  // sums[q] = sum_{j0 <= j < n} R[i0 + q, j] * y[j] for q < rows (16 partial sums per row, combined
  // in a fixed tree).
  void (*dots_f32)(const float* R, std::int64_t n, std::int64_t i0, std::int64_t rows, const double* y,
                   std::int64_t j0, double* sums);
  void (*dots_f64)(const double* R, std::int64_t n, std::int64_t i0, std::int64_t rows, const double* y,
                   std::int64_t j0, double* sums);
  const char* name;
};

namespace baseline { const TriangularKernels& triangular_kernels(); }
namespace avx2 { const TriangularKernels& triangular_kernels(); }
namespace avx512 { const TriangularKernels& triangular_kernels(); }

}  // namespace sketchgn::kernels
