#include "sketchgn/build_info.hpp"

#include <omp.h>

#include <Eigen/Core>

namespace sketchgn {

namespace {
std::string openmp_version() {
  const long v = _OPENMP;
  const char* name = v >= 202011 ? "5.1" : v >= 201811 ? "5.0" : v >= 201511 ? "4.5" : v >= 201307 ? "4.0" : "3.x";
  return std::string(name) + " (" + std::to_string(v) + ")";
}
}  // namespace

BuildInfo build_info() {
  BuildInfo info;
#ifdef SKETCHGN_VERSION
  info.version = SKETCHGN_VERSION;
#endif
#if defined(__clang__)
  info.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info.compiler = std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  info.compiler = "msvc " + std::to_string(_MSC_VER);
#else
  info.compiler = "unknown";
#endif
  info.openmp = openmp_version();
  info.max_threads = omp_get_max_threads();
  info.eigen_version = std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) +
                       "." + std::to_string(EIGEN_MINOR_VERSION);
#ifdef NDEBUG
  info.build_type = "release";
#else
  info.build_type = "debug";
#endif
  return info;
}

}  // namespace sketchgn
