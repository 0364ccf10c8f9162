// The one place pybind11 lives. Each layer gets a bind_* function below;
// python/phicpp wraps these into the public API.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "core/error.h"
#include "gguf/gguf.h"

namespace py = pybind11;
using namespace phi;

// ---------------------------------------------------------------- errors
static void register_errors(py::module_& m) {
    static py::exception<Error> base(m, "PhicppError", PyExc_RuntimeError);
    static py::object gguf_error = py::reinterpret_steal<py::object>(PyErr_NewException(
        "phicpp._core.GGUFError", py::make_tuple(base, py::handle(PyExc_ValueError)).ptr(), nullptr));
    static py::object unsupported = py::reinterpret_steal<py::object>(
        PyErr_NewException("phicpp._core.UnsupportedError", base.ptr(), nullptr));
    static py::object context = py::reinterpret_steal<py::object>(PyErr_NewException(
        "phicpp._core.ContextOverflowError", py::make_tuple(base, py::handle(PyExc_ValueError)).ptr(), nullptr));
    m.attr("GGUFError") = gguf_error;
    m.attr("UnsupportedError") = unsupported;
    m.attr("ContextOverflowError") = context;
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const Error& e) {
            switch (e.kind()) {
                case ErrorKind::file_not_found: PyErr_SetString(PyExc_FileNotFoundError, e.what()); break;
                case ErrorKind::format: PyErr_SetString(gguf_error.ptr(), e.what()); break;
                case ErrorKind::unsupported: PyErr_SetString(unsupported.ptr(), e.what()); break;
                case ErrorKind::context: PyErr_SetString(context.ptr(), e.what()); break;
                case ErrorKind::invalid_arg: PyErr_SetString(PyExc_ValueError, e.what()); break;
                default: PyErr_SetString(base.ptr(), e.what()); break;
            }
        }
    });
}

// ---------------------------------------------------------------- gguf
static void bind_gguf(py::module_& m) {
    // GGUF reader: metadata and tensor table (owned by the gguf helper).
}

// ---------------------------------------------------------------- quant
static void bind_quant(py::module_& m) {
    // Block formats, reference (de)quantizers, kernels by ISA (owned by the quant helper).
}

// ---------------------------------------------------------------- tokenizer
static void bind_tokenizer(py::module_& m) {
    // Tokenizers from GGUF metadata (owned by the tokenizer helper).
}

// ---------------------------------------------------------------- sampling
static void bind_sampling(py::module_& m) {
    // Sampler chain (owned by the sampling/CLI helper).
}

// ---------------------------------------------------------------- model
static void bind_model(py::module_& m) {
    // Model: load, eval, reset, KV cache.
}

PYBIND11_MODULE(_core, m) {
    m.doc() = "phicpp native core";
    register_errors(m);
    bind_gguf(m);
    bind_quant(m);
    bind_tokenizer(m);
    bind_sampling(m);
    bind_model(m);
}
