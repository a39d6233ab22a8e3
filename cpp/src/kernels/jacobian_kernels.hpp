// Table of the ReLU-Jacobian kernels compiled for one instruction set (see jacobian_kernels.inc).
//
// Included by per-ISA files compiled with -mavx2 / -mavx512f: no inline functions or templates with
// external linkage here.
#pragma once
#include <cstdint>

namespace sketchgn::kernels {

// Layouts (row-major, zero padded). A "block" is a range of neurons [r0, r0 + nr) with nr a multiple
// of 64; pointers below are already offset to the block (bits by r0 / 8 bytes, a by r0).
//   x     (n, d_pad)           samples, d_pad a multiple of 8
//   bits  (n, row_bytes)       activation pattern: bit (r % 8) of byte r / 8 of a row
//   a     (nr,)                output weights (zero past m)
//   vt    (d_pad, ldv)         the block of a direction V, transposed (zero past m and d)
//   gt    (d_pad, ldg)         the block of J^T u, transposed and unscaled
struct JacobianKernels {
  // z = x W^T on rows [i0, i1) and the block: ORs the pattern bits (z > threshold) into bits
  // (zeroed by the caller) and adds sum_r a_r relu(z_ir - threshold) to f[i].
  void (*pattern_forward)(const double* x, std::int64_t d_pad, const double* wt, std::int64_t ldw,
                          const double* a, std::int64_t nr, double threshold, std::int64_t i0,
                          std::int64_t i1, std::uint8_t* bits, std::int64_t row_bytes, double* f);
  // out[i] += sum_{r in block} a_r D_ir (x_i . v_r), rows [i0, i1).
  void (*matvec)(const double* x, std::int64_t d_pad, const std::uint8_t* bits, std::int64_t row_bytes,
                 const double* a, const double* vt, std::int64_t ldv, std::int64_t nr, std::int64_t i0,
                 std::int64_t i1, double* out);
  // gt[k, c] = sum_{i < n} u_i D_ic x_ik for the block's columns c (overwrites gt).
  void (*rmatvec)(const double* x, std::int64_t n, std::int64_t d_pad, const std::uint8_t* bits,
                  std::int64_t row_bytes, const double* u, std::int64_t nr, double* gt, std::int64_t ldg);
  // The same two products in float32 (x, a, vt, u, gt float; out still accumulates in float64): the
  // operator of the inner iterations of mixed-precision CG, at twice the lanes per instruction.
  void (*matvec_f32)(const float* x, std::int64_t d_pad, const std::uint8_t* bits, std::int64_t row_bytes,
                     const float* a, const float* vt, std::int64_t ldv, std::int64_t nr, std::int64_t i0,
                     std::int64_t i1, double* out);
  void (*rmatvec_f32)(const float* x, std::int64_t n, std::int64_t d_pad, const std::uint8_t* bits,
                      std::int64_t row_bytes, const float* u, std::int64_t nr, float* gt, std::int64_t ldg);
  // counts[i, j] = popcount(bits_i & bits_j) for i in [i0, i1), j in [j0, j1) (leading dim ld).
  void (*common_active)(const std::uint8_t* bits, std::int64_t words_per_row, std::int64_t i0,
                        std::int64_t i1, std::int64_t j0, std::int64_t j1, double* counts,
                        std::int64_t ld);
  // Sparse pattern, lists of one block (see relu_jacobian.cpp). out[i] += x_i . (sum_{r in row i}
  // a_r v_r), v (m, d_pad); work has d_pad entries.
  void (*sparse_matvec)(const double* x, std::int64_t d_pad, const std::int64_t* row_ptr,
                        const std::int32_t* cols, const double* a, const double* v, std::int64_t i0,
                        std::int64_t i1, double* out, double* work);
  // g[r, :] += sum_{i in column r} u_i x_i for r in [r0, r1), g (m, d_pad).
  void (*sparse_rmatvec)(const double* x, std::int64_t d_pad, const std::int64_t* col_ptr,
                         const std::int32_t* rows, const double* u, std::int64_t r0, std::int64_t r1,
                         double* g);
  const char* name;
};

namespace baseline { const JacobianKernels& jacobian_kernels(); }
namespace avx2 { const JacobianKernels& jacobian_kernels(); }
namespace avx512 { const JacobianKernels& jacobian_kernels(); }

}  // namespace sketchgn::kernels
