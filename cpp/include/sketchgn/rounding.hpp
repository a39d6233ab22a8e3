// Rounding a double to the scalar type of a float32 or float64 computation.
#pragma once
#include <cmath>
#include <limits>
#include <type_traits>

namespace sketchgn {

// v rounded to Real; beyond Real's largest finite value, +-inf. A static_cast of an out-of-range
// double to float is undefined behaviour in C++, so float32 paths convert through this and their
// callers see the result non-finite (and fall back to float64, or refuse it).
template <class Real>
Real round_to(double v) {
  if constexpr (std::is_same_v<Real, double>) {
    return v;
  } else {
    if (std::abs(v) <= static_cast<double>(std::numeric_limits<Real>::max()) || std::isnan(v))
      return static_cast<Real>(v);
    return v > 0 ? std::numeric_limits<Real>::infinity() : -std::numeric_limits<Real>::infinity();
  }
}

}  // namespace sketchgn
