// Bindings of the Gauss-Newton solver pieces: the Kronecker sketch, sketches of J^T, triangular
// solves with the preconditioner's R, and the PCG loop (which runs with the GIL released and takes it
// back briefly between iterations to let Ctrl-C through).
#include <Python.h>

#include "bindings.hpp"
#include "sketchgn/dense_cholesky.hpp"
#include "sketchgn/jacobian_sketch.hpp"
#include "sketchgn/kronecker_srht.hpp"
#include "sketchgn/pcg.hpp"

namespace sketchgn::bindings {

namespace {

template <class Fn>
Fn capsule_function(const py::object& capsule, const char* name) {
  PyObject* c = capsule.ptr();
  if (!PyCapsule_CheckExact(c)) throw py::type_error(std::string(name) + " must be a PyCapsule");
  void* p = PyCapsule_GetPointer(c, PyCapsule_GetName(c));
  if (p == nullptr) throw py::error_already_set();
  return reinterpret_cast<Fn>(p);
}

CArray<double> sketch_transpose(const ReLUJacobian& J, const std::string& kind, std::int64_t s,
                                std::uint64_t seed, int n_threads) {
  checked_threads(n_threads);
  require(s >= 1, "sketch size must be >= 1");
  CArray<double> T({static_cast<py::ssize_t>(J.n()), static_cast<py::ssize_t>(s)});
  double* t = T.mutable_data();
  if (kind == "kronecker") {
    require(s <= next_power_of_two(J.m()) * next_power_of_two(J.d()), "sketch size too large for 'kronecker'");
    py::gil_scoped_release release;
    const KroneckerSRHT S(J.m(), J.d(), s, seed);
    sketch_jacobian_kronecker(J, S, t, n_threads);
  } else if (kind == "srht") {
    require(s <= next_power_of_two(J.m() * J.d()), "sketch size too large for 'srht'");
    py::gil_scoped_release release;
    const SRHT S(J.m() * J.d(), s, seed);
    sketch_jacobian_srht(J, S, t, n_threads);
  } else if (kind == "gaussian") {
    py::gil_scoped_release release;
    sketch_jacobian_gaussian(J, s, seed, t, n_threads);
  } else if (kind == "kronecker_rows") {
    const std::int64_t d_pad = next_power_of_two(J.d());
    require(s % d_pad == 0 && s / d_pad <= next_power_of_two(J.m()),
            "sketch size for 'kronecker_rows' must be a multiple of d_pad and at most m_pad * d_pad");
    py::gil_scoped_release release;
    const NeuronRowSketch S(J.m(), J.d(), s / d_pad, seed);
    sketch_jacobian_rows(J, S, t, n_threads);
  } else {
    throw py::value_error("unknown sketch '" + kind + "'");
  }
  return T;
}

}  // namespace

void bind_solver(py::module_& m) {
  py::class_<KroneckerSRHT>(m, "KroneckerSRHT")
      .def(py::init([](std::int64_t mm, std::int64_t d, std::int64_t n_out, std::uint64_t seed) {
             require(mm >= 1 && d >= 1, "KroneckerSRHT: m and d must be >= 1");
             require(mm <= (std::int64_t(1) << 40) && d <= (std::int64_t(1) << 40) &&
                         next_power_of_two(mm) <= (std::int64_t(1) << 62) / next_power_of_two(d),
                     "KroneckerSRHT: m_pad * d_pad must be <= 2**62");
             require(n_out >= 1 && n_out <= next_power_of_two(mm) * next_power_of_two(d),
                     "KroneckerSRHT: n_out must be in [1, m_pad * d_pad]");
             py::gil_scoped_release release;
             return KroneckerSRHT(mm, d, n_out, seed);
           }),
           py::arg("m"), py::arg("d"), py::arg("n_out"), py::arg("seed"))
      .def_property_readonly("m", &KroneckerSRHT::m)
      .def_property_readonly("d", &KroneckerSRHT::d)
      .def_property_readonly("n_out", &KroneckerSRHT::n_out)
      .def_property_readonly("m_pad", &KroneckerSRHT::m_pad)
      .def_property_readonly("d_pad", &KroneckerSRHT::d_pad)
      .def_property_readonly("rows_u", [](const KroneckerSRHT& s) {
        return CArray<std::int64_t>(static_cast<py::ssize_t>(s.rows_u().size()), s.rows_u().data());
      })
      .def_property_readonly("rows_x", [](const KroneckerSRHT& s) {
        return CArray<std::int64_t>(static_cast<py::ssize_t>(s.rows_x().size()), s.rows_x().data());
      })
      .def_property_readonly("signs_u", [](const KroneckerSRHT& s) {
        CArray<double> out(static_cast<py::ssize_t>(s.m()));
        for (std::int64_t i = 0; i < s.m(); ++i) out.mutable_at(i) = s.signs_u()[i];
        return out;
      })
      .def_property_readonly("signs_x", [](const KroneckerSRHT& s) {
        CArray<double> out(static_cast<py::ssize_t>(s.d()));
        for (std::int64_t i = 0; i < s.d(); ++i) out.mutable_at(i) = s.signs_x()[i];
        return out;
      })
      .def("apply_kron", [](const KroneckerSRHT& s, const CArray<double>& U, const CArray<double>& X, int n_threads) {
        checked_threads(n_threads);
        require(U.ndim() == 2 && X.ndim() == 2 && U.shape(0) == X.shape(0) && U.shape(1) == s.m() &&
                    X.shape(1) == s.d(), "KroneckerSRHT.apply_kron: U must be (k, m) and X (k, d)");
        const std::int64_t k = U.shape(0);
        CArray<double> out({static_cast<py::ssize_t>(s.n_out()), static_cast<py::ssize_t>(k)});
        const double* u = U.data();
        const double* x = X.data();
        double* o = out.mutable_data();
        py::gil_scoped_release release;
        s.apply_kron(u, x, k, o, n_threads);
        return out;
      }, py::arg("U").noconvert(), py::arg("X").noconvert(), py::arg("n_threads"))
      .def("apply", [](const KroneckerSRHT& s, const CArray<double>& A, int n_threads) {
        checked_threads(n_threads);
        require(A.ndim() == 2 && A.shape(0) == s.m() * s.d(), "KroneckerSRHT.apply: A must be (m*d, k)");
        const std::int64_t k = A.shape(1);
        CArray<double> out({static_cast<py::ssize_t>(s.n_out()), static_cast<py::ssize_t>(k)});
        const double* a = A.data();
        double* o = out.mutable_data();
        py::gil_scoped_release release;
        s.apply(a, k, o, n_threads);
        return out;
      }, py::arg("A").noconvert(), py::arg("n_threads"));

  m.def("sketch_jacobian_transpose", &sketch_transpose, py::arg("J"), py::arg("kind"), py::arg("s"),
        py::arg("seed"), py::arg("n_threads"),
        "T (n, s) = (S J^T)^T for the sketch kind 'kronecker', 'kronecker_rows', 'srht' or 'gaussian'.");

  m.def("sketch_neuron_rows", [](const ReLUJacobian& J, std::int64_t rows, std::uint64_t seed, int n_threads) {
    checked_threads(n_threads);
    require(rows >= 1 && rows <= next_power_of_two(J.m()), "rows must be in [1, m_pad]");
    CArray<double> U({static_cast<py::ssize_t>(J.n()), static_cast<py::ssize_t>(rows)});
    double* u = U.mutable_data();
    py::gil_scoped_release release;
    const NeuronRowSketch S(J.m(), J.d(), rows, seed);
    sketch_neuron_rows(J, S, u, n_threads);
    return U;
  }, py::arg("J"), py::arg("rows"), py::arg("seed"), py::arg("n_threads"),
     "Uhat (n, rows): row i = (H D1 u_i)[P] of the 'kronecker_rows' sketch.");

  // (for the tests: the random choices of a "kronecker_rows" sketch, to build it densely in NumPy)
  m.def("neuron_row_sketch_params", [](std::int64_t mm, std::int64_t d, std::int64_t rows, std::uint64_t seed) {
    require(mm >= 1 && d >= 1 && rows >= 1 && rows <= next_power_of_two(mm), "need m, d >= 1, 1 <= rows <= m_pad");
    const NeuronRowSketch S(mm, d, rows, seed);
    CArray<std::int64_t> p(static_cast<py::ssize_t>(rows));
    CArray<double> su(static_cast<py::ssize_t>(mm)), sx(static_cast<py::ssize_t>(d));
    for (std::int64_t k = 0; k < rows; ++k) p.mutable_at(k) = S.rows_u()[k];
    for (std::int64_t i = 0; i < mm; ++i) su.mutable_at(i) = S.signs_u()[i];
    for (std::int64_t i = 0; i < d; ++i) sx.mutable_at(i) = S.signs_x()[i];
    return py::make_tuple(p, su, sx);
  }, py::arg("m"), py::arg("d"), py::arg("rows"), py::arg("seed"));

  m.def("neuron_rows_gram_upper", [](const ReLUJacobian& J, const CArray<double>& U, double shift, int n_threads,
                                     bool single) -> py::array {
    checked_threads(n_threads);
    require(U.ndim() == 2 && U.shape(0) == J.n() && U.shape(1) >= 1, "Uhat must be (n, rows)");
    const std::int64_t n = J.n(), rows = U.shape(1);
    const double* u = U.data();
    auto gram = [&](auto tag) {
      using Real = decltype(tag);
      CArray<Real> C({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(n)});
      Real* c = C.mutable_data();
      SignalPoll poll;
      {
        py::gil_scoped_release release;
        neuron_rows_gram_upper<Real>(J, u, rows, shift, c, n_threads, std::ref(poll));
      }
      if (poll.signalled) throw py::error_already_set();
      return py::array(C);
    };
    return single ? gram(float{}) : gram(double{});
  }, py::arg("J"), py::arg("Uhat").noconvert(), py::arg("shift"), py::arg("n_threads"), py::arg("single") = false,
     "C (n, n) upper triangle = (Uhat Uhat^T o X X^T) / rows + shift I: the Gram of the "
     "'kronecker_rows' sketch of J^T (GIL released, Ctrl-C between blocks); float32 when single "
     "(Uhat rounded to float32, the SYRK in float32).");

  m.def("_set_lapack", [](py::object dsyrk, py::object dtrsm, py::object dpotrf, py::object ssyrk, py::object strsm,
                          py::object spotrf) {
    LapackFunctions f;
    f.f64.syrk = capsule_function<decltype(f.f64.syrk)>(dsyrk, "dsyrk");
    f.f64.trsm = capsule_function<decltype(f.f64.trsm)>(dtrsm, "dtrsm");
    f.f64.potrf = capsule_function<decltype(f.f64.potrf)>(dpotrf, "dpotrf");
    f.f32.syrk = capsule_function<decltype(f.f32.syrk)>(ssyrk, "ssyrk");
    f.f32.trsm = capsule_function<decltype(f.f32.trsm)>(strsm, "strsm");
    f.f32.potrf = capsule_function<decltype(f.f32.potrf)>(spotrf, "spotrf");
    set_lapack_functions(f);
  }, "Take SciPy's BLAS/LAPACK (capsules of scipy.linalg.cython_blas / cython_lapack), float64 then float32.");

  m.def("sketch_gram_upper", [](const CArray<double>& T, double shift) {
    require(T.ndim() == 2, "T must be (n, s)");
    const std::int64_t n = T.shape(0), s = T.shape(1);
    CArray<double> C({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(n)});
    const double* t = T.data();
    double* c = C.mutable_data();
    SignalPoll poll;
    {
      py::gil_scoped_release release;
      sketch_gram_upper(t, n, s, shift, c, std::ref(poll));
    }
    if (poll.signalled) throw py::error_already_set();
    return C;
  }, py::arg("T").noconvert(), py::arg("shift"),
     "C (n, n) upper triangle = T T^T + shift I (GIL released, Ctrl-C between blocks).");

  m.def("cholesky_upper", [](py::array C) {
    require(C.ndim() == 2 && C.shape(0) == C.shape(1), "C must be (n, n)");
    require((C.flags() & py::array::c_style) && C.writeable(), "C must be a writeable C-contiguous array");
    const std::int64_t n = C.shape(0);
    auto factor = [&](auto* c) {
      SignalPoll poll;
      std::int64_t info;
      {
        py::gil_scoped_release release;
        info = cholesky_upper(c, n, std::ref(poll));
      }
      if (poll.signalled) throw py::error_already_set();
      return info;
    };
    if (C.dtype().equal(py::dtype::of<float>())) return factor(static_cast<float*>(C.mutable_data()));
    if (C.dtype().equal(py::dtype::of<double>())) return factor(static_cast<double*>(C.mutable_data()));
    throw py::type_error("C must be float32 or float64");
  }, py::arg("C").noconvert(),
     "In place: upper triangle of C (float32 or float64) -> R (R^T R = C); 0, or the order of the "
     "first non-positive minor.");

  m.def("solve_upper", [](py::array R_any, const CArray<double>& z, bool transpose, int n_threads) {
    checked_threads(n_threads);
    require(R_any.ndim() == 2 && R_any.shape(0) == R_any.shape(1), "R must be (n, n)");
    const std::int64_t n = R_any.shape(0);
    require(z.ndim() == 1 && z.shape(0) == n, "z must be (n,)");
    CArray<double> y(static_cast<py::ssize_t>(n));
    const double* zp = z.data();
    double* yp = y.mutable_data();
    auto run = [&](auto R) {
      const auto* rp = R.data();
      py::gil_scoped_release release;
      if (transpose)
        solve_upper_transpose(rp, n, zp, yp, n_threads);
      else
        solve_upper(rp, n, zp, yp, n_threads);
    };
    if (R_any.dtype().equal(py::dtype::of<float>()))
      run(R_any.cast<CArray<float>>());
    else
      run(R_any.cast<CArray<double>>());
    return y;
  }, py::arg("R"), py::arg("z").noconvert(), py::arg("transpose"), py::arg("n_threads"));

  // The float32 operator of mixed-precision CG alone: for the tests (against J J^T in float64) and
  // for the float32 rate that solver="auto" calibrates.
  m.def("gram_apply_f32", [](const ReLUJacobian& J, const CArray<double>& p, int n_threads) {
    checked_threads(n_threads);
    require(p.ndim() == 1 && p.shape(0) == J.n(), "p must be (n,)");
    require(GramOperatorF32::applicable(J), "J has a sparse pattern or entries beyond the float32 range");
    CArray<double> q(static_cast<py::ssize_t>(J.n()));
    const double* pp = p.data();
    double* qp = q.mutable_data();
    {
      py::gil_scoped_release release;
      GramOperatorF32 op(J);
      op.apply(pp, qp, n_threads);
    }
    return q;
  }, py::arg("J"), py::arg("p").noconvert(), py::arg("n_threads"));

  m.def("pcg", [](const ReLUJacobian& J, const CArray<double>& r, double damping, py::object R_obj,
                  double tol, std::int64_t maxiter, const CArray<double>& x0, int n_threads, bool mixed,
                  bool with_products) {
    checked_threads(n_threads);
    const std::int64_t n = J.n();
    require(r.ndim() == 1 && r.shape(0) == n, "r must be (n,)");
    require(x0.ndim() == 1 && x0.shape(0) == n, "x0 must be (n,)");
    CArray<double> R64;
    CArray<float> R32;
    bool have32 = false, have64 = false;  // (a default-constructed array_t is an empty array, not null)
    if (!R_obj.is_none()) {
      py::array R_any = R_obj.cast<py::array>();
      require(R_any.ndim() == 2 && R_any.shape(0) == n && R_any.shape(1) == n, "R must be (n, n)");
      require(R_any.flags() & py::array::c_style, "R must be C-contiguous");
      if (R_any.dtype().equal(py::dtype::of<float>())) {
        R32 = R_any.cast<CArray<float>>();
        have32 = true;
      } else if (R_any.dtype().equal(py::dtype::of<double>())) {
        R64 = R_any.cast<CArray<double>>();
        have64 = true;
      } else
        throw py::type_error("R must be float32 or float64");
    }
    CArray<double> g(static_cast<py::ssize_t>(n));
    std::copy(x0.data(), x0.data() + n, g.mutable_data());
    const double* rp = r.data();
    double* gp = g.mutable_data();
    const float* r32 = have32 ? R32.data() : nullptr;
    const double* r64 = have64 ? R64.data() : nullptr;
    // Between iterations: take the GIL just long enough to run Python's signal handlers.
    SignalPoll poll;
    const std::function<bool()> interrupted = std::ref(poll);
    // J^T g as (m, d), the layout of rmatmat's, and J J^T g (n,)
    CArray<double> jt_g, jjt_g;
    SolutionProducts products;
    if (with_products) {
      jt_g = CArray<double>({static_cast<py::ssize_t>(J.m()), static_cast<py::ssize_t>(J.d())});
      jjt_g = CArray<double>(static_cast<py::ssize_t>(n));
      products = {jt_g.mutable_data(), jjt_g.mutable_data()};
    }
    PcgResult res;
    {
      py::gil_scoped_release release;
      if (r32 != nullptr)
        res = pcg_solve<float>(J, rp, damping, r32, tol, maxiter, gp, n_threads, interrupted, mixed, products);
      else
        res = pcg_solve<double>(J, rp, damping, r64, tol, maxiter, gp, n_threads, interrupted, mixed, products);
    }
    if (poll.signalled) throw py::error_already_set();
    py::dict info;
    info["iterations"] = res.iterations;
    info["residual"] = res.residual;
    info["converged"] = res.converged;
    static const char* const kStatus[] = {"converged", "maxiter", "stagnated", "breakdown", "inaccurate",
                                          "interrupted", "overflow"};
    info["status"] = kStatus[static_cast<int>(res.status)];
    info["seconds_products"] = res.seconds_products;
    info["seconds_preconditioner"] = res.seconds_preconditioner;
    info["iterations_f32"] = res.iterations_f32;
    info["mixed_fallback"] = res.mixed_fallback;
    if (with_products) {
      info["jt_g"] = jt_g;
      info["jjt_g"] = jjt_g;
      info["products_reused"] = res.products_reused;
    }
    return py::make_tuple(g, info);
  }, py::arg("J"), py::arg("r").noconvert(), py::arg("damping"), py::arg("R"), py::arg("tol"),
     py::arg("maxiter"), py::arg("x0").noconvert(), py::arg("n_threads"), py::arg("mixed") = false,
     py::arg("with_products") = false,
     "PCG (GIL released); info holds jt_g = J^T g (m, d) and jjt_g = J J^T g (n,) when with_products.");
}

}  // namespace sketchgn::bindings
