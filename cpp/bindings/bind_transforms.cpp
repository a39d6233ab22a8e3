// Bindings of the Walsh-Hadamard transform.
//
// sketchgn.fwht is a C-level function with a fast path: when every argument is already exactly what
// the kernel needs (an ndarray of float32/float64, C-contiguous, power-of-two last axis; out None or
// a matching writeable array; normalize a bool; n_threads None or an int >= -1 and != 0) it calls the
// kernel directly, which costs about 0.1 us instead of the 2 us of a validating Python wrapper around
// a pybind11 call -- that overhead would dominate transforms of length <= 2^12. Anything else goes to
// the Python implementation (sketchgn._transforms._fwht_checked), which converts what it may and
// raises the documented TypeError/ValueError. Both paths run the same kernel.
#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

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
  const std::int64_t batch = static_cast<std::int64_t>(x.size()) / n;
  const T* src = x.data();
  T* dst = out.mutable_data();
  py::gil_scoped_release release;
  fwht<T>(src, dst, batch, n, normalize, n_threads);
}

// State of the fast entry point, set once by sketchgn._transforms at import.
struct FastState {
  PyObject* fallback = nullptr;    // the validating Python implementation
  PyObject* ndarray_type = nullptr;
  PyObject* empty_like = nullptr;  // numpy.empty_like
  PyObject* str_normalize = nullptr;
  PyObject* str_out = nullptr;
  PyObject* str_n_threads = nullptr;
  int default_threads = 1;
  int max_threads = 1;  // requests above this are capped (as sketchgn._validation does)
};
FastState g_fast;

// Transforms below this many elements keep the GIL: releasing it costs more than the work.
constexpr Py_ssize_t kReleaseGilElements = 1 << 12;

// A Py_buffer released on scope exit.
struct Buffer {
  Py_buffer view{};
  bool held = false;
  bool acquire(PyObject* obj, int flags) {
    if (PyObject_GetBuffer(obj, &view, flags) != 0) {
      PyErr_Clear();
      return false;
    }
    held = true;
    return true;
  }
  ~Buffer() {
    if (held) PyBuffer_Release(&view);
  }
};

// 'f' -> 4 (float32), 'd' -> 8 (float64), anything else 0.
int float_kind(const Py_buffer& v) {
  if (v.format == nullptr || v.format[0] == '\0') return 0;
  const char* f = v.format;
  if (*f == '=' || *f == '<' || *f == '@') ++f;  // native little-endian only (x86-64, aarch64)
  if (f[0] == 'f' && f[1] == '\0' && v.itemsize == 4) return 4;
  if (f[0] == 'd' && f[1] == '\0' && v.itemsize == 8) return 8;
  return 0;
}

bool same_shape(const Py_buffer& a, const Py_buffer& b) {
  if (a.ndim != b.ndim) return false;
  for (int i = 0; i < a.ndim; ++i)
    if (a.shape[i] != b.shape[i]) return false;
  return true;
}

bool overlaps(const Py_buffer& a, const Py_buffer& b) {
  const char* a0 = static_cast<const char*>(a.buf);
  const char* b0 = static_cast<const char*>(b.buf);
  return a0 < b0 + b.len && b0 < a0 + a.len;
}

PyObject* call_fallback(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  if (g_fast.fallback == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "sketchgn._core.fwht_entry used before sketchgn was imported");
    return nullptr;
  }
  return PyObject_Vectorcall(g_fast.fallback, args, static_cast<size_t>(nargs), kwnames);
}

PyObject* fwht_entry(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  if (nargs != 1 || g_fast.fallback == nullptr) return call_fallback(args, nargs, kwnames);
  PyObject* x = args[0];
  PyObject* out = Py_None;
  bool normalize = false;
  int n_threads = g_fast.default_threads;
  const Py_ssize_t n_kw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t i = 0; i < n_kw; ++i) {
    PyObject* name = PyTuple_GET_ITEM(kwnames, i);
    PyObject* value = args[nargs + i];
    if (name == g_fast.str_normalize || PyUnicode_Compare(name, g_fast.str_normalize) == 0) {
      if (value != Py_True && value != Py_False) return call_fallback(args, nargs, kwnames);
      normalize = value == Py_True;
    } else if (name == g_fast.str_out || PyUnicode_Compare(name, g_fast.str_out) == 0) {
      out = value;
    } else if (name == g_fast.str_n_threads || PyUnicode_Compare(name, g_fast.str_n_threads) == 0) {
      if (value == Py_None) continue;
      if (!PyLong_CheckExact(value)) return call_fallback(args, nargs, kwnames);
      int overflow = 0;
      const long v = PyLong_AsLongAndOverflow(value, &overflow);
      if (overflow != 0 || v == 0 || v < -1 || v > (1 << 16)) return call_fallback(args, nargs, kwnames);
      n_threads = v == -1 ? g_fast.default_threads : std::min(static_cast<int>(v), g_fast.max_threads);
    } else {
      return call_fallback(args, nargs, kwnames);
    }
  }
  if (PyErr_Occurred()) PyErr_Clear();  // from PyUnicode_Compare on odd names: the fallback decides

  if (Py_TYPE(x) != reinterpret_cast<PyTypeObject*>(g_fast.ndarray_type))
    return call_fallback(args, nargs, kwnames);
  Buffer src;
  if (!src.acquire(x, PyBUF_RECORDS_RO) || src.view.ndim < 1 || !PyBuffer_IsContiguous(&src.view, 'C') ||
      reinterpret_cast<std::uintptr_t>(src.view.buf) % static_cast<std::uintptr_t>(src.view.itemsize) != 0)
    return call_fallback(args, nargs, kwnames);  // (unaligned data: the fallback makes an aligned copy)
  const int kind = float_kind(src.view);
  const Py_ssize_t n = src.view.shape[src.view.ndim - 1];
  if (kind == 0 || n < 1 || (n & (n - 1)) != 0) return call_fallback(args, nargs, kwnames);

  PyObject* result = nullptr;
  Buffer dst;
  if (out == Py_None) {
    result = PyObject_CallOneArg(g_fast.empty_like, x);
    if (result == nullptr) return nullptr;
    if (!dst.acquire(result, PyBUF_RECORDS)) {
      Py_DECREF(result);
      return call_fallback(args, nargs, kwnames);
    }
  } else {
    if (Py_TYPE(out) != reinterpret_cast<PyTypeObject*>(g_fast.ndarray_type) ||
        !dst.acquire(out, PyBUF_RECORDS) || !PyBuffer_IsContiguous(&dst.view, 'C') ||
        float_kind(dst.view) != kind || !same_shape(src.view, dst.view) ||
        reinterpret_cast<std::uintptr_t>(dst.view.buf) % static_cast<std::uintptr_t>(dst.view.itemsize) != 0 ||
        (dst.view.buf != src.view.buf && overlaps(src.view, dst.view)))
      return call_fallback(args, nargs, kwnames);
    Py_INCREF(out);
    result = out;
  }

  const std::int64_t total = static_cast<std::int64_t>(src.view.len / src.view.itemsize);
  const std::int64_t batch = total / n;
  if (total > 0) {
    const bool release = total >= kReleaseGilElements;
    PyThreadState* state = release ? PyEval_SaveThread() : nullptr;
    if (kind == 4)
      fwht<float>(static_cast<const float*>(src.view.buf), static_cast<float*>(dst.view.buf), batch, n,
                  normalize, n_threads);
    else
      fwht<double>(static_cast<const double*>(src.view.buf), static_cast<double*>(dst.view.buf), batch,
                   n, normalize, n_threads);
    if (release) PyEval_RestoreThread(state);
  }
  return result;
}

PyMethodDef g_fwht_def = {
    "fwht", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fwht_entry)),
    METH_FASTCALL | METH_KEYWORDS,
    "fwht(x, *, normalize=False, out=None, n_threads=None)\n--\n\n"
    "Walsh-Hadamard transform along the last axis.\n\n"
    "Computes ``H_n @ x[..., :]`` for every leading index, where ``H_n`` is the Hadamard matrix in\n"
    "natural (Sylvester) order, ``H_1 = [1]`` and ``H_2n = [[H_n, H_n], [H_n, -H_n]]`` (the matrix of\n"
    "``scipy.linalg.hadamard``). Cost O(n log n) per transform.\n\n"
    "Parameters\n----------\n"
    "x : array_like, shape (..., n)\n"
    "    n must be a power of two (n >= 1). float32 and float64 are computed in their own precision;\n"
    "    integer and bool input is converted to float64. Non-contiguous input is copied once.\n"
    "normalize : bool, default False\n"
    "    Scale by ``1/sqrt(n)``, which makes the transform orthonormal and an involution.\n"
    "out : ndarray, optional\n"
    "    C-contiguous, writeable array with the shape and dtype of the result. May be ``x`` itself\n"
    "    for an in-place transform.\n"
    "n_threads : int or None\n"
    "    None or -1: all cores this process may use; k > 0: k threads. Threads share the batch and\n"
    "    the cache-sized blocks of one large transform. The result is bitwise identical for any value.\n\n"
    "Returns\n-------\n"
    "ndarray\n    ``out`` if given, else a new array.\n\n"
    "Examples\n--------\n"
    ">>> import numpy as np, sketchgn as sg\n"
    ">>> sg.fwht(np.array([1.0, 0.0, 0.0, 0.0]))\n"
    "array([1., 1., 1., 1.])\n"};

}  // namespace

void bind_transforms(py::module_& m) {
  m.def("fwht", &fwht_binding<float>, py::arg("x").noconvert(), py::arg("out").noconvert(),
        py::arg("normalize"), py::arg("n_threads"));
  m.def("fwht", &fwht_binding<double>, py::arg("x").noconvert(), py::arg("out").noconvert(),
        py::arg("normalize"), py::arg("n_threads"),
        "out[..., :] = H x[..., :] along the last axis (private: validated by sketchgn.fwht).");
  m.def("fwht_kernel_name", [] { return std::string(fwht_kernel_name()); });

  PyObject* entry = PyCFunction_NewEx(&g_fwht_def, nullptr, m.attr("__name__").ptr());
  if (entry == nullptr) throw py::error_already_set();
  m.add_object("fwht_entry", py::reinterpret_steal<py::object>(entry));

  m.def(
      "configure_fwht_entry",
      [](py::object fallback, int default_threads, int max_threads) {
        require(default_threads >= 1 && max_threads >= 1, "thread counts must be >= 1");
        py::module_ np = py::module_::import("numpy");
        // Kept for the life of the process (module state of a module that is never unloaded).
        g_fast.fallback = fallback.release().ptr();
        g_fast.ndarray_type = py::object(np.attr("ndarray")).release().ptr();
        g_fast.empty_like = py::object(np.attr("empty_like")).release().ptr();
        g_fast.str_normalize = PyUnicode_InternFromString("normalize");
        g_fast.str_out = PyUnicode_InternFromString("out");
        g_fast.str_n_threads = PyUnicode_InternFromString("n_threads");
        g_fast.default_threads = default_threads;
        g_fast.max_threads = max_threads;
      },
      py::arg("fallback"), py::arg("default_threads"), py::arg("max_threads"));
}

}  // namespace sketchgn::bindings
