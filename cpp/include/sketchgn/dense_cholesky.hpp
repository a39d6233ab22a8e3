// Dense Gram and Cholesky factorizations for the preconditioner and the exact solve.
//
// They run on the BLAS/LAPACK that SciPy ships (OpenBLAS, with its run-time CPU dispatch), reached
// through function pointers that the Python package takes from scipy.linalg.cython_blas and
// cython_lapack at import: no second BLAS is linked, and the work runs without the GIL. Each
// factorization is split into blocks (a K-blocked SYRK, a right-looking blocked Cholesky) so that the
// caller can poll for Ctrl-C between blocks: a factorization of n = 8000 takes seconds, one block a
// fraction of a second. Blocking changes no result between thread counts: the blocks are fixed by
// the sizes alone.
#pragma once
#include <cstdint>
#include <functional>

namespace sketchgn {

// The Fortran BLAS/LAPACK signatures of scipy.linalg.cython_blas / cython_lapack (LP64: int), in
// float64 and float32 (the preconditioner of a mixed-precision solve is factored in float32).
template <class Real>
struct LapackFunctionsOf {
  void (*syrk)(char* uplo, char* trans, int* n, int* k, Real* alpha, Real* a, int* lda, Real* beta,
               Real* c, int* ldc) = nullptr;
  void (*trsm)(char* side, char* uplo, char* transa, char* diag, int* m, int* n, Real* alpha, Real* a,
               int* lda, Real* b, int* ldb) = nullptr;
  void (*potrf)(char* uplo, int* n, Real* a, int* lda, int* info) = nullptr;
};

struct LapackFunctions {
  LapackFunctionsOf<double> f64;  // dsyrk, dtrsm, dpotrf
  LapackFunctionsOf<float> f32;   // ssyrk, strsm, spotrf
};

void set_lapack_functions(const LapackFunctions& functions);
bool lapack_functions_set();

// Polled between blocks; returns true to stop (the result is then unspecified).
using InterruptCheck = std::function<bool()>;

// C (n x n, row-major) = T T^T + shift I for T (n, s) row-major: the Gram of the sketch S A = T^T.
// Only the upper triangle of C is written (the strictly lower part is set to zero). Returns false if
// interrupted. Real is double or float: in float32 the SYRK runs at about twice the rate and the
// result's rounding (a backward error of about sqrt(s) 6e-8 relative to sqrt(C_ii C_jj)) perturbs a
// preconditioner built from it by about that times cond(C) (see SketchPreconditioner's precision).
template <class Real>
bool sketch_gram_upper(const Real* T, std::int64_t n, std::int64_t s, double shift, Real* C,
                       const InterruptCheck& interrupted);

// In place: the upper triangle of C (row-major, symmetric positive definite) becomes R, upper
// triangular with R^T R = C; the strictly lower part is zeroed. Returns 0 on success, k > 0 when the
// leading minor of order k is not positive definite (as LAPACK's info), -1 if interrupted.
// Real is double or float.
template <class Real>
std::int64_t cholesky_upper(Real* C, std::int64_t n, const InterruptCheck& interrupted);

}  // namespace sketchgn
