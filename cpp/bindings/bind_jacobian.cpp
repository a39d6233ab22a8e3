#include "bindings.hpp"
#include "sketchgn/relu_jacobian.hpp"

namespace sketchgn::bindings {

namespace {

ReLUJacobian::Path parse_path(const std::string& path) {
  if (path == "auto") return ReLUJacobian::Path::automatic;
  if (path == "dense") return ReLUJacobian::Path::dense;
  if (path == "sparse") return ReLUJacobian::Path::sparse;
  throw py::value_error("path must be 'auto', 'dense' or 'sparse', got '" + path + "'");
}

void require_shape(const CArray<double>& arr, std::initializer_list<std::int64_t> shape, const char* what) {
  bool ok = arr.ndim() == static_cast<py::ssize_t>(shape.size());
  std::size_t i = 0;
  for (std::int64_t s : shape) ok = ok && arr.shape(i++) == s;
  require(ok, std::string("ReLUJacobian: ") + what + " has the wrong shape");
}

}  // namespace

void bind_jacobian(py::module_& m) {
  py::class_<ReLUJacobian>(m, "ReLUJacobian")
      .def(py::init([](const CArray<double>& X, const CArray<double>& W, const CArray<double>& a,
                       double threshold, const std::string& path, int n_threads) {
             checked_threads(n_threads);
             require(X.ndim() == 2 && W.ndim() == 2 && a.ndim() == 1, "ReLUJacobian: X, W must be 2-D, a 1-D");
             const std::int64_t n = X.shape(0), d = X.shape(1), mm = W.shape(0);
             require(n >= 1 && d >= 1 && mm >= 1, "ReLUJacobian: n, m and d must be >= 1");
             require(W.shape(1) == d && a.shape(0) == mm, "ReLUJacobian: shapes of X, W, a disagree");
             const auto p = parse_path(path);
             const double* x = X.data();
             const double* w = W.data();
             const double* av = a.data();
             py::gil_scoped_release release;
             return new ReLUJacobian(x, n, d, w, mm, av, threshold, p, n_threads);
           }),
           py::arg("X").noconvert(), py::arg("W").noconvert(), py::arg("a").noconvert(), py::arg("threshold"),
           py::arg("path"), py::arg("n_threads"))
      .def_property_readonly("n", &ReLUJacobian::n)
      .def_property_readonly("m", &ReLUJacobian::m)
      .def_property_readonly("d", &ReLUJacobian::d)
      .def_property_readonly("nnz", &ReLUJacobian::nnz)
      .def_property_readonly("density", &ReLUJacobian::density)
      .def_property_readonly("is_sparse", &ReLUJacobian::is_sparse)
      .def_property_readonly("threshold", &ReLUJacobian::threshold)
      .def("forward", [](const ReLUJacobian& J) {
        const auto& f = J.forward();
        return CArray<double>(static_cast<py::ssize_t>(f.size()), f.data());
      })
      .def("pattern", [](const ReLUJacobian& J) {
        // The activation pattern as a dense bool array (tests and small problems only).
        py::array_t<bool> out({static_cast<py::ssize_t>(J.n()), static_cast<py::ssize_t>(J.m())});
        auto o = out.mutable_unchecked<2>();
        for (std::int64_t i = 0; i < J.n(); ++i)
          for (std::int64_t r = 0; r < J.m(); ++r) o(i, r) = J.active(i, r);
        return out;
      })
      .def("matmat", [](const ReLUJacobian& J, const CArray<double>& V, int n_threads) {
        // V (k, m, d) -> (k, n)
        checked_threads(n_threads);
        require(V.ndim() == 3, "ReLUJacobian.matmat: V must be (k, m, d)");
        require_shape(V, {V.shape(0), J.m(), J.d()}, "V");
        const std::int64_t k = V.shape(0);
        CArray<double> out({static_cast<py::ssize_t>(k), static_cast<py::ssize_t>(J.n())});
        const double* v = V.data();
        double* o = out.mutable_data();
        py::gil_scoped_release release;
        J.matmat(v, k, o, n_threads);
        return out;
      }, py::arg("V").noconvert(), py::arg("n_threads"))
      .def("rmatmat", [](const ReLUJacobian& J, const CArray<double>& U, int n_threads) {
        // U (k, n) -> (k, m, d)
        checked_threads(n_threads);
        require(U.ndim() == 2, "ReLUJacobian.rmatmat: U must be (k, n)");
        require_shape(U, {U.shape(0), J.n()}, "U");
        const std::int64_t k = U.shape(0);
        CArray<double> out({static_cast<py::ssize_t>(k), static_cast<py::ssize_t>(J.m()),
                            static_cast<py::ssize_t>(J.d())});
        const double* u = U.data();
        double* o = out.mutable_data();
        py::gil_scoped_release release;
        J.rmatmat(u, k, o, n_threads);
        return out;
      }, py::arg("U").noconvert(), py::arg("n_threads"))
      .def("gram", [](const ReLUJacobian& J, int n_threads) {
        checked_threads(n_threads);
        CArray<double> out({static_cast<py::ssize_t>(J.n()), static_cast<py::ssize_t>(J.n())});
        double* o = out.mutable_data();
        SignalPoll poll;
        {
          py::gil_scoped_release release;
          J.gram(o, n_threads, std::ref(poll));
        }
        if (poll.signalled) throw py::error_already_set();
        return out;
      }, py::arg("n_threads"));
}

}  // namespace sketchgn::bindings
