// The compiled core of sketchgn. Everything here is private API: the public surface, with its
// validation, is the Python package.
#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "sketchgn compiled core (private; use the sketchgn package)";
  sketchgn::bindings::bind_info(m);
  sketchgn::bindings::bind_transforms(m);
  sketchgn::bindings::bind_sketch(m);
  sketchgn::bindings::bind_jacobian(m);
  sketchgn::bindings::bind_solver(m);
}
