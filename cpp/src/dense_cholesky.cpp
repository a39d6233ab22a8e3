#include "sketchgn/dense_cholesky.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <vector>

namespace sketchgn {

namespace {

LapackFunctions g_lapack;

using i64 = std::int64_t;

int as_int(i64 v) {
  if (v > std::numeric_limits<int>::max()) throw std::length_error("matrix dimension exceeds the BLAS int range");
  return static_cast<int>(v);
}

const LapackFunctions& lapack() {
  if (!lapack_functions_set()) throw std::logic_error("BLAS/LAPACK functions were not set");
  return g_lapack;
}

// K-block of the SYRK: about 3e10 flops (a few tenths of a second here), at least 512 columns so
// that each call runs at the GEMM rate.
i64 gram_block(i64 n, i64 s) {
  const double per_column = std::max(1.0, static_cast<double>(n) * static_cast<double>(n));
  const i64 kc = static_cast<i64>(3e10 / per_column);
  return std::clamp<i64>(kc, 512, std::max<i64>(s, 1));
}

}  // namespace

void set_lapack_functions(const LapackFunctions& functions) { g_lapack = functions; }

bool lapack_functions_set() {
  return g_lapack.dsyrk != nullptr && g_lapack.dtrsm != nullptr && g_lapack.dpotrf != nullptr;
}

// Layout: T (n, s) row-major is, read column-major, the s x n matrix B = S A with leading dimension s;
// C = B^T B. A row-major upper triangle is a column-major lower one, so every call below is 'L' in
// column-major terms.
bool sketch_gram_upper(const double* T, i64 n, i64 s, double shift, double* C,
                       const InterruptCheck& interrupted) {
  const auto& f = lapack();
  if (n == 0) return true;
  char uplo = 'L', trans = 'T';
  int nn = as_int(n);
  const i64 kc = gram_block(n, s);
  std::fill(C, C + n * n, 0.0);  // (first touch of n^2 doubles: 0.1-1 s of page faults at n = 8000)
  if (interrupted && interrupted()) return false;
  int lda = as_int(s);
  double alpha = 1.0, beta = 1.0;
  for (i64 k0 = 0; k0 < s; k0 += kc) {
    int kk = as_int(std::min(kc, s - k0));
    f.dsyrk(&uplo, &trans, &nn, &kk, &alpha, const_cast<double*>(T + k0), &lda, &beta, C, &nn);
    if (interrupted && interrupted()) return false;
  }
  if (shift != 0.0)
    for (i64 i = 0; i < n; ++i) C[i * n + i] += shift;
  return true;
}

// Right-looking blocked Cholesky, column-major lower (= row-major upper): for each panel of nb
// columns, factor its diagonal block (dpotrf), solve for the panel below it (dtrsm) and update the
// trailing matrix (dsyrk), which holds nearly all the n^3 / 3 flops.
i64 cholesky_upper(double* C, i64 n, const InterruptCheck& interrupted) {
  const auto& f = lapack();
  if (n == 0) return 0;
  const int ld = as_int(n);
  // Up to n = 2048 one dpotrf call does it all (at most ~3e9 flops: tens of milliseconds between
  // interrupt checks); the panels of 256 cost calls, and at n = 1000 made the factorization 2.5x
  // slower than dpotrf's own blocking.
  const i64 nb = n <= 2048 ? n : 256;
  for (i64 k = 0; k < n; k += nb) {
    const i64 b = std::min(nb, n - k);
    double* akk = C + k * n + k;
    char lower = 'L';
    int bb = as_int(b), info = 0, ldc = ld;
    f.dpotrf(&lower, &bb, akk, &ldc, &info);
    if (info < 0) throw std::logic_error("dpotrf: invalid argument");
    if (info > 0) return k + info;
    const i64 rest = n - k - b;
    if (rest > 0) {
      double* a21 = C + k * n + (k + b);        // column-major (k + b, k)
      double* a22 = C + (k + b) * n + (k + b);  // column-major (k + b, k + b)
      char right = 'R', trans = 'T', nondiag = 'N', notrans = 'N';
      int rr = as_int(rest);
      double one = 1.0, minus_one = -1.0;
      f.dtrsm(&right, &lower, &trans, &nondiag, &rr, &bb, &one, akk, &ldc, a21, &ldc);
      f.dsyrk(&lower, &notrans, &rr, &bb, &minus_one, a21, &ldc, &one, a22, &ldc);
    }
    if (interrupted && interrupted()) return -1;
  }
  // Zero the other triangle (row-major strictly lower).
  for (i64 i = 1; i < n; ++i) std::fill(C + i * n, C + i * n + i, 0.0);
  return 0;
}

}  // namespace sketchgn
