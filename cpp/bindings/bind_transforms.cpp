#include "bindings.hpp"
#include "sketchgn/fwht.hpp"

namespace sketchgn::bindings {

namespace {

template <class T>
void fwht_binding(const CArray<T>& x, CArray<T>& out, bool normalize, int n_threads) {
  checked_threads(n_threads);
  require(x.ndim() >= 1 && out.ndim() == x.ndim(), "fwht: x and out must have the same shape");
  for (py::ssize_t i = 0; i < x.ndim(); ++i)
    require(x.shape(i) == out.shape(i), "fwht: x and out must have the same shape");
  require(out.writeable(), "fwht: out must be writeable");
  const std::int64_t n = x.shape(x.ndim() - 1);
  require(n >= 1 && (n & (n - 1)) == 0, "fwht: the last axis must have a power-of-two length");
  const std::int64_t batch = n == 0 ? 0 : static_cast<std::int64_t>(x.size()) / n;
  const T* src = x.data();
  T* dst = out.mutable_data();
  py::gil_scoped_release release;
  fwht<T>(src, dst, batch, n, normalize, n_threads);
}

}  // namespace

void bind_transforms(py::module_& m) {
  m.def("fwht", &fwht_binding<float>, py::arg("x").noconvert(), py::arg("out").noconvert(),
        py::arg("normalize"), py::arg("n_threads"));
  m.def("fwht", &fwht_binding<double>, py::arg("x").noconvert(), py::arg("out").noconvert(),
        py::arg("normalize"), py::arg("n_threads"),
        "out[..., :] = H x[..., :] along the last axis (private: validated by sketchgn.fwht).");
  m.def("fwht_kernel_name", [] { return std::string(fwht_kernel_name()); });
}

}  // namespace sketchgn::bindings
