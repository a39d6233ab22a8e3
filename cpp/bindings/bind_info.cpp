#include <pybind11/stl.h>

#include "bindings.hpp"
#include "sketchgn/build_info.hpp"
#include "sketchgn/simd.hpp"

namespace sketchgn::bindings {

void bind_info(py::module_& m) {
  m.def("build_info", [] {
    const BuildInfo info = build_info();
    py::list available;
    for (SimdLevel l : available_simd_levels()) available.append(simd_name(l));
    py::dict d;
    d["version"] = info.version;
    d["simd"] = simd_name(active_simd_level());
    d["simd_available"] = available;
    d["openmp"] = info.openmp;
    d["max_threads"] = info.max_threads;
    d["compiler"] = info.compiler;
    d["eigen_version"] = info.eigen_version;
    d["build_type"] = info.build_type;
    return d;
  });
  // (std::invalid_argument from a bad SKETCHGN_SIMD becomes ValueError; sketchgn calls this at import.)
  m.def("simd_level", [] { return std::string(simd_name(active_simd_level())); },
        "The SIMD path the kernels use now.");
  m.def("set_simd_level", [](const std::string& name) {
    try {
      set_active_simd_level(parse_simd_level(name));
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  }, py::arg("level"), "Switch the SIMD path (for tests); a level the CPU lacks is a ValueError.");
}

}  // namespace sketchgn::bindings
