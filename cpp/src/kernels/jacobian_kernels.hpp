// Table of the ReLU-Jacobian kernels compiled for one instruction set (see jacobian_kernels.inc).
//
// Included by per-ISA files compiled with -mavx2 / -mavx512f: no inline functions or templates with
// external linkage here.
#pragma once
#include <cstdint>

namespace sketchgn::kernels {

// Layouts shared by every kernel (all row-major, all padded with zeros):
//   x      (n, d_pad)      samples, d_pad a multiple of 8
//   bits   (n, m_pad / 8)  activation pattern, bit (r % 8) of byte r / 8 of row i; m_pad % 64 == 0
//   a      (m_pad,)        output weights (zero past m)
//   vt     (d_pad, m_pad)  a direction V transposed (zero past m and d)
//   gt     (d_pad, m_pad)  J^T u transposed, before scaling by a_r / sqrt(m)
struct JacobianKernels {
  // z = X W^T on rows [i0, i1): sets the pattern bits (z > threshold) and
  // f[i] = sum_r a_r relu(z_ir - threshold) (unscaled). wt is W transposed, like vt.
  void (*pattern_forward)(const double* x, std::int64_t d_pad, const double* wt, const double* a,
                          std::int64_t m_pad, double threshold, std::int64_t i0, std::int64_t i1,
                          std::uint8_t* bits, double* f);
  // out[i] = sum_r a_r D_ir (x_i . v_r) (unscaled) for rows [i0, i1).
  void (*matvec)(const double* x, std::int64_t d_pad, const std::uint8_t* bits, const double* a,
                 const double* vt, std::int64_t m_pad, std::int64_t i0, std::int64_t i1, double* out);
  // gt[k, r] = sum_i u_i D_ir x_ik over all n rows, for neurons [r0, r1) (multiples of 16).
  void (*rmatvec)(const double* x, std::int64_t n, std::int64_t d_pad, const std::uint8_t* bits,
                  const double* u, std::int64_t m_pad, std::int64_t r0, std::int64_t r1, double* gt);
  // counts[i, j] = popcount(bits_i & bits_j) for i in [i0, i1), j in [j0, j1) (row-major, ld n).
  void (*common_active)(const std::uint8_t* bits, std::int64_t words_per_row, std::int64_t i0,
                        std::int64_t i1, std::int64_t j0, std::int64_t j1, double* counts,
                        std::int64_t ld);
  const char* name;
};

namespace baseline { const JacobianKernels& jacobian_kernels(); }
namespace avx2 { const JacobianKernels& jacobian_kernels(); }
namespace avx512 { const JacobianKernels& jacobian_kernels(); }

}  // namespace sketchgn::kernels
