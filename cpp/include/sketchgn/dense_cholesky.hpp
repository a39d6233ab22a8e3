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

// The Fortran BLAS/LAPACK signatures of scipy.linalg.cython_blas / cython_lapack (LP64: int).
struct LapackFunctions {
  void (*dsyrk)(char* uplo, char* trans, int* n, int* k, double* alpha, double* a, int* lda, double* beta,
                double* c, int* ldc) = nullptr;
  void (*dtrsm)(char* side, char* uplo, char* transa, char* diag, int* m, int* n, double* alpha, double* a,
                int* lda, double* b, int* ldb) = nullptr;
  void (*dpotrf)(char* uplo, int* n, double* a, int* lda, int* info) = nullptr;
};

void set_lapack_functions(const LapackFunctions& functions);
bool lapack_functions_set();

// Polled between blocks; returns true to stop (the result is then unspecified).
using InterruptCheck = std::function<bool()>;

// C (n x n, row-major) = T T^T + shift I for T (n, s) row-major: the Gram of the sketch S A = T^T.
// Only the upper triangle of C is written (the strictly lower part is set to zero). Returns false if
// interrupted. (A float32 variant was examined and left out: rounding the sketch to float32 perturbs
// the preconditioner by ~1e-3 times the scaled condition number of the Gram.)
bool sketch_gram_upper(const double* T, std::int64_t n, std::int64_t s, double shift, double* C,
                       const InterruptCheck& interrupted);

// In place: the upper triangle of C (row-major, symmetric positive definite) becomes R, upper
// triangular with R^T R = C; the strictly lower part is zeroed. Returns 0 on success, k > 0 when the
// leading minor of order k is not positive definite (as LAPACK's info), -1 if interrupted.
std::int64_t cholesky_upper(double* C, std::int64_t n, const InterruptCheck& interrupted);

}  // namespace sketchgn
