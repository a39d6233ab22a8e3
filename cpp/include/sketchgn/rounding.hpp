// Rounding a double to the scalar type of a float32 or float64 computation.
#pragma once
#include <cmath>
#include <limits>
#include <type_traits>

namespace sketchgn {

// v rounded to Real; beyond Real's range, +-inf (as IEEE rounding gives). A static_cast of an
// out-of-range double to float is undefined behaviour in C++, so float32 paths convert through this
// and their callers test the result for inf.
template <class Real>
Real round_to(double v) {
  if constexpr (std::is_same_v<Real, double>) {
    return v;
  } else {
    constexpr double top = static_cast<double>(std::numeric_limits<Real>::max());
    if (std::isnan(v)) return std::numeric_limits<Real>::quiet_NaN();
    if (std::abs(v) > top) {
      // (values that round to max rather than overflow: IEEE rounds to nearest, so up to max + ulp/2)
      using limits = std::numeric_limits<Real>;
      const double half_ulp = std::ldexp(1.0, limits::max_exponent - limits::digits - 1);
      if (std::abs(v) < top + half_ulp) return std::copysign(std::numeric_limits<Real>::max(), v);
      return std::copysign(std::numeric_limits<Real>::infinity(), v);
    }
    return static_cast<Real>(v);
  }
}

}  // namespace sketchgn
