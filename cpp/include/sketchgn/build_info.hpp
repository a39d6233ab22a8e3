// What this build is and what it runs on: version, compiler, OpenMP, Eigen, SIMD paths.
#pragma once
#include <string>

namespace sketchgn {

struct BuildInfo {
  std::string version;
  std::string compiler;
  std::string openmp;       // OpenMP version (from _OPENMP), e.g. "4.5 (201511)"
  int max_threads;          // omp_get_max_threads()
  std::string eigen_version;
  std::string build_type;
};

BuildInfo build_info();

}  // namespace sketchgn
