#include <pybind11/stl.h>

#include "bindings.hpp"
#include "sketchgn/srht.hpp"

namespace sketchgn::bindings {

namespace {

template <class T>
CArray<T> srht_apply(const SRHT& s, const CArray<T>& a, int n_threads) {
  checked_threads(n_threads);
  require(a.ndim() == 2 && a.shape(0) == s.n_in(), "SRHT.apply: A must have shape (n_in, k)");
  const std::int64_t k = a.shape(1);
  CArray<T> out({static_cast<py::ssize_t>(s.n_out()), static_cast<py::ssize_t>(k)});
  const T* src = a.data();
  T* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    s.apply<T>(src, k, dst, n_threads);
  }
  return out;
}

}  // namespace

void bind_sketch(py::module_& m) {
  py::class_<SRHT>(m, "SRHT")
      .def(py::init([](std::int64_t n_in, std::int64_t n_out, std::uint64_t seed) {
             require(n_in >= 1, "SRHT: n_in must be >= 1");
             require(n_out >= 1 && n_out <= next_power_of_two(n_in), "SRHT: n_out must be in [1, n_pad]");
             py::gil_scoped_release release;
             return SRHT(n_in, n_out, seed);
           }),
           py::arg("n_in"), py::arg("n_out"), py::arg("seed"))
      .def_property_readonly("n_in", &SRHT::n_in)
      .def_property_readonly("n_out", &SRHT::n_out)
      .def_property_readonly("n_pad", &SRHT::n_pad)
      .def_property_readonly("rows", [](const SRHT& s) {
        const auto& r = s.rows();
        return CArray<std::int64_t>(static_cast<py::ssize_t>(r.size()), r.data());
      })
      .def_property_readonly("signs", [](const SRHT& s) {
        const auto& v = s.signs();
        CArray<double> out(static_cast<py::ssize_t>(v.size()));
        for (std::size_t i = 0; i < v.size(); ++i) out.mutable_at(i) = v[i];
        return out;
      })
      .def("apply", &srht_apply<float>, py::arg("a").noconvert(), py::arg("n_threads"))
      .def("apply", &srht_apply<double>, py::arg("a").noconvert(), py::arg("n_threads"));
}

}  // namespace sketchgn::bindings
