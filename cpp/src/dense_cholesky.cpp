#include "sketchgn/dense_cholesky.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "sketchgn/rounding.hpp"

namespace sketchgn {

namespace {

LapackFunctions g_lapack;

using i64 = std::int64_t;

int as_int(i64 v) {
  if (v > std::numeric_limits<int>::max()) throw std::length_error("matrix dimension exceeds the BLAS int range");
  return static_cast<int>(v);
}

template <class Real>
const LapackFunctionsOf<Real>& lapack() {
  if (!lapack_functions_set()) throw std::logic_error("BLAS/LAPACK functions were not set");
  if constexpr (std::is_same_v<Real, float>)
    return g_lapack.f32;
  else
    return g_lapack.f64;
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
  const auto set = [](const auto& f) { return f.syrk != nullptr && f.trsm != nullptr && f.potrf != nullptr; };
  return set(g_lapack.f64) && set(g_lapack.f32);
}

// Layout: T (n, s) row-major is, read column-major, the s x n matrix B = S A with leading dimension s;
// C = B^T B. A row-major upper triangle is a column-major lower one, so every call below is 'L' in
// column-major terms.
template <class Real>
bool sketch_gram_upper(const Real* T, i64 n, i64 s, double shift, Real* C, const InterruptCheck& interrupted) {
  const auto& f = lapack<Real>();
  if (n == 0) return true;
  char uplo = 'L', trans = 'T';
  int nn = as_int(n);
  const i64 kc = gram_block(n, s);
  std::fill(C, C + n * n, Real(0));  // (first touch of n^2 doubles: 0.1-1 s of page faults at n = 8000)
  if (interrupted && interrupted()) return false;
  int lda = as_int(s);
  Real alpha = 1, beta = 1;
  for (i64 k0 = 0; k0 < s; k0 += kc) {
    int kk = as_int(std::min(kc, s - k0));
    f.syrk(&uplo, &trans, &nn, &kk, &alpha, const_cast<Real*>(T + k0), &lda, &beta, C, &nn);
    if (interrupted && interrupted()) return false;
  }
  if (shift != 0.0)
    for (i64 i = 0; i < n; ++i) C[i * n + i] = round_to<Real>(static_cast<double>(C[i * n + i]) + shift);
  return true;
}

// Right-looking blocked Cholesky, column-major lower (= row-major upper): for each panel of nb
// columns, factor its diagonal block (dpotrf), solve for the panel below it (dtrsm) and update the
// trailing matrix (dsyrk), which holds nearly all the n^3 / 3 flops.
template <class Real>
i64 cholesky_upper(Real* C, i64 n, const InterruptCheck& interrupted) {
  const auto& f = lapack<Real>();
  if (n == 0) return 0;
  const int ld = as_int(n);
  // Up to n = 2048 one dpotrf call does it all (at most ~3e9 flops: tens of milliseconds between
  // interrupt checks); the panels of 256 cost calls, and at n = 1000 made the factorization 2.5x
  // slower than dpotrf's own blocking.
  const i64 nb = n <= 2048 ? n : 256;
  for (i64 k = 0; k < n; k += nb) {
    const i64 b = std::min(nb, n - k);
    Real* akk = C + k * n + k;
    char lower = 'L';
    int bb = as_int(b), info = 0, ldc = ld;
    f.potrf(&lower, &bb, akk, &ldc, &info);
    if (info < 0) throw std::logic_error("potrf: invalid argument");
    if (info > 0) return k + info;
    const i64 rest = n - k - b;
    if (rest > 0) {
      Real* a21 = C + k * n + (k + b);        // column-major (k + b, k)
      Real* a22 = C + (k + b) * n + (k + b);  // column-major (k + b, k + b)
      char right = 'R', trans = 'T', nondiag = 'N', notrans = 'N';
      int rr = as_int(rest);
      Real one = 1, minus_one = -1;
      f.trsm(&right, &lower, &trans, &nondiag, &rr, &bb, &one, akk, &ldc, a21, &ldc);
      f.syrk(&lower, &notrans, &rr, &bb, &minus_one, a21, &ldc, &one, a22, &ldc);
    }
    if (interrupted && interrupted()) return -1;
  }
  // Zero the other triangle (row-major strictly lower).
  for (i64 i = 1; i < n; ++i) std::fill(C + i * n, C + i * n + i, Real(0));
  return 0;
}

template bool sketch_gram_upper<double>(const double*, i64, i64, double, double*, const InterruptCheck&);
template bool sketch_gram_upper<float>(const float*, i64, i64, double, float*, const InterruptCheck&);
template i64 cholesky_upper<double>(double*, i64, const InterruptCheck&);
template i64 cholesky_upper<float>(float*, i64, const InterruptCheck&);

}  // namespace sketchgn
