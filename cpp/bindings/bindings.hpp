// Shared declarations of the binding files: one registration function per area.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace sketchgn::bindings {

namespace py = pybind11;

template <class T>
using CArray = py::array_t<T, py::array::c_style>;

void bind_info(py::module_& m);
void bind_transforms(py::module_& m);
void bind_sketch(py::module_& m);
void bind_jacobian(py::module_& m);
void bind_solver(py::module_& m);

// The Python layer validates everything; these re-checks guard the C++ core against a caller that
// bypasses it (nothing reaches a kernel with a size it cannot handle).
inline void require(bool ok, const std::string& message) {
  if (!ok) throw py::value_error(message);
}

// Polls Python's signal handlers (Ctrl-C) from a GIL-released computation, taking the GIL just for
// that; remembers that a handler raised (the caller then throws error_already_set).
struct SignalPoll {
  bool signalled = false;
  bool operator()() {
    py::gil_scoped_acquire acquire;
    if (PyErr_CheckSignals() != 0) signalled = true;
    return signalled;
  }
};

inline int checked_threads(int n_threads) {
  require(n_threads >= 1, "n_threads must be a resolved count >= 1, got " + std::to_string(n_threads));
  return n_threads;
}

}  // namespace sketchgn::bindings
