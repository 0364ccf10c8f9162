// The one place pybind11 lives. Each layer gets a bind_* function below;
// python/phicpp wraps these into the public API.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "core/error.h"
#include "gguf/gguf.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/matmul.h"
#include "quant/repack.h"
#ifdef PHICPP_WITH_CUDA
#include "backend/cuda/attention_plan.h"
#include "backend/cuda/cuda_backend.h"
#endif
#include "quant/quant.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "sampling/sampler.h"

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
    // GGUF reader: metadata and tensor table. Python sees a GGUFFile that owns
    // the mapping; tensor_data() views point into it and keep it alive.
    using gguf::ValueType;
    struct PyGGUF {
        std::unique_ptr<gguf::File> f;
        py::object metadata;  // built on first use: the vocab arrays are large
    };
    struct PyTensor {
        py::object name;  // str; bytes that are not UTF-8 show as U+FFFD
        std::string type;
        uint32_t type_id;
        py::tuple shape;  // GGUF order: ne0 (contiguous) first
        uint64_t offset, rel_offset;
        size_t nbytes;
        int64_t n_elements;
    };
    struct Conv {
        static py::dtype numeric_dtype(ValueType t) {
            switch (t) {
                case ValueType::UINT8: return py::dtype::of<uint8_t>();
                case ValueType::INT8: return py::dtype::of<int8_t>();
                case ValueType::UINT16: return py::dtype::of<uint16_t>();
                case ValueType::INT16: return py::dtype::of<int16_t>();
                case ValueType::UINT32: return py::dtype::of<uint32_t>();
                case ValueType::INT32: return py::dtype::of<int32_t>();
                case ValueType::UINT64: return py::dtype::of<uint64_t>();
                case ValueType::INT64: return py::dtype::of<int64_t>();
                case ValueType::FLOAT32: return py::dtype::of<float>();
                case ValueType::FLOAT64: return py::dtype::of<double>();
                default: return py::dtype::of<bool>();
            }
        }
        static py::object str(std::string_view s) {
            PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
            if (!o) throw py::error_already_set();
            return py::reinterpret_steal<py::object>(o);
        }
        // Scalars -> int/float/bool/str; numeric arrays -> numpy (a copy: the
        // raw elements may be unaligned); string and nested arrays -> lists.
        static py::object value(const gguf::Value& v) {
            switch (v.type) {
                case ValueType::UINT8: case ValueType::UINT16: case ValueType::UINT32:
                case ValueType::UINT64: return py::int_(v.u);
                case ValueType::INT8: case ValueType::INT16: case ValueType::INT32:
                case ValueType::INT64: return py::int_(v.i);
                case ValueType::FLOAT32: case ValueType::FLOAT64: return py::float_(v.f);
                case ValueType::BOOL: return py::bool_(v.u != 0);
                case ValueType::STRING: return str(v.str);
                case ValueType::ARRAY: break;
            }
            if (v.raw) {
                // pointer without a base: numpy copies (and handles unaligned input)
                const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(v.count)};
                if (v.elem_type != ValueType::BOOL)
                    return py::array(numeric_dtype(v.elem_type), shape, {}, v.raw);
                std::vector<uint8_t> b(v.raw, v.raw + v.count);  // any non-zero byte is true
                for (uint8_t& x : b) x = x != 0;
                return py::array(numeric_dtype(v.elem_type), shape, {}, b.data());
            }
            py::list out(v.items.size());
            for (size_t k = 0; k < v.items.size(); ++k) out[k] = value(v.items[k]);
            return std::move(out);
        }
        static std::string type_name(const gguf::Value& v) {
            if (v.type != ValueType::ARRAY) return gguf::value_type_name(v.type);
            std::string inner = gguf::value_type_name(v.elem_type);
            // a nested array names its first element's type when it has one
            if (v.elem_type == ValueType::ARRAY && !v.items.empty()) inner = type_name(v.items[0]);
            return "array[" + inner + "]";
        }
    };

    py::class_<PyTensor>(m, "GGUFTensorInfo")
        .def_readonly("name", &PyTensor::name)
        .def_readonly("type", &PyTensor::type)
        .def_readonly("type_id", &PyTensor::type_id)
        .def_readonly("shape", &PyTensor::shape)
        .def_readonly("offset", &PyTensor::offset, "absolute file offset of the data")
        .def_readonly("rel_offset", &PyTensor::rel_offset, "offset within the data section")
        .def_readonly("nbytes", &PyTensor::nbytes)
        .def_readonly("n_elements", &PyTensor::n_elements)
        .def("__repr__", [](const PyTensor& t) {
            return "GGUFTensorInfo(" + py::str(t.name).cast<std::string>() + ", " + t.type + ", " +
                   py::str(t.shape).cast<std::string>() + ")";
        });

    py::class_<PyGGUF>(m, "GGUFFile")
        .def(py::init([](py::object path) {
                 std::string p = py::str(py::module_::import("os").attr("fspath")(path));
                 return PyGGUF{gguf::File::open(p), py::none()};
             }),
             py::arg("path"))
        .def_property_readonly("path", [](const PyGGUF& g) { return g.f->path(); })
        .def_property_readonly("version", [](const PyGGUF& g) { return g.f->version(); })
        .def_property_readonly("alignment", [](const PyGGUF& g) { return g.f->alignment(); })
        .def_property_readonly("data_offset", [](const PyGGUF& g) { return g.f->data_offset(); })
        .def_property_readonly("file_size", [](const PyGGUF& g) { return g.f->file_size(); })
        .def_property_readonly("metadata", [](PyGGUF& g) {
            if (g.metadata.is_none()) {
                py::dict d;
                for (const auto& [k, v] : g.f->metadata()) d[Conv::str(k)] = Conv::value(v);
                g.metadata = std::move(d);
            }
            return g.metadata;
        }, "dict key -> value in file order; numeric arrays are numpy arrays")
        .def("metadata_type", [](const PyGGUF& g, const std::string& key) {
            const gguf::Value* v = g.f->find(key);
            if (!v) throw py::key_error(key);
            return Conv::type_name(*v);
        }, "GGUF value type of a key: 'uint32', 'string', 'array[float32]', 'array[array[int8]]'...")
        // The C++ typed getters, as the model/tokenizer code sees them (tested from Python).
        .def("get_int", [](const PyGGUF& g, const std::string& k) { return g.f->get_int(k); })
        .def("get_f64", [](const PyGGUF& g, const std::string& k) { return g.f->get_f64(k); })
        .def("get_bool", [](const PyGGUF& g, const std::string& k) { return g.f->get_bool(k); })
        .def("get_string", [](const PyGGUF& g, const std::string& k) {
            return Conv::str(g.f->get_string(k));
        })
        .def("opt_int", [](const PyGGUF& g, const std::string& k) { return g.f->opt_int(k); })
        .def("opt_f64", [](const PyGGUF& g, const std::string& k) { return g.f->opt_f64(k); })
        .def("get_str_array", [](const PyGGUF& g, const std::string& k) {
            py::list out;
            for (std::string_view s : g.f->get_str_array(k)) out.append(Conv::str(s));
            return out;
        })
        .def("get_f32_array", [](const PyGGUF& g, const std::string& k) { return g.f->get_f32_array(k); })
        .def("get_int_array", [](const PyGGUF& g, const std::string& k) { return g.f->get_int_array(k); })
        .def_property_readonly("tensors", [](const PyGGUF& g) {
            py::list out;
            for (const gguf::TensorInfo& t : g.f->tensors()) {
                py::tuple shape(t.n_dims);
                for (int d = 0; d < t.n_dims; ++d) shape[d] = t.ne[d];
                out.append(PyTensor{Conv::str(t.name), dtype_name(t.type), static_cast<uint32_t>(t.type),
                                    shape, g.f->data_offset() + t.offset, t.offset, t.nbytes,
                                    t.n_elements()});
            }
            return out;
        })
        .def("tensor_data", [](py::object self, py::object key) {
            const PyGGUF& g = self.cast<const PyGGUF&>();
            const gguf::TensorInfo* t = nullptr;
            if (py::isinstance<py::int_>(key)) {  // by index, as in .tensors
                const auto k = key.cast<py::ssize_t>();
                if (k < 0 || k >= static_cast<py::ssize_t>(g.f->tensors().size()))
                    throw py::index_error("tensor index out of range");
                t = &g.f->tensors()[k];
            } else {  // by name: str, or bytes for names that are not UTF-8
                t = g.f->find_tensor(key.cast<std::string>());
                if (!t) throw py::key_error(py::str(key));
            }
            // numpy order is outermost first: reverse GGUF's ne
            std::vector<py::ssize_t> shape;
            for (int d = t->n_dims - 1; d >= 0; --d) shape.push_back(t->ne[d]);
            py::dtype dt = py::dtype::of<uint8_t>();
            switch (t->type) {
                case DType::F32: dt = py::dtype::of<float>(); break;
                case DType::F16: dt = py::dtype("float16"); break;
                case DType::BF16: dt = py::dtype::of<uint16_t>(); break;  // numpy has no bf16
                case DType::F64: dt = py::dtype::of<double>(); break;
                case DType::I8: dt = py::dtype::of<int8_t>(); break;
                case DType::I16: dt = py::dtype::of<int16_t>(); break;
                case DType::I32: dt = py::dtype::of<int32_t>(); break;
                case DType::I64: dt = py::dtype::of<int64_t>(); break;
                default:  // block formats: rows of raw bytes
                    if (shape.empty()) shape.push_back(1);
                    shape.back() = static_cast<py::ssize_t>(row_bytes(t->type, t->ne[0]));
            }
            py::array a(dt, shape, {}, t->data, self);  // a view; `self` keeps the mapping alive
            a.attr("setflags")(py::arg("write") = false);
            return a;
        }, py::arg("name"), "read-only numpy view of a tensor's bytes (numpy shape order); "
                            "name: str, bytes or index into .tensors")
        .def("__repr__", [](const PyGGUF& g) {
            return "GGUFFile('" + g.f->path() + "', v" + std::to_string(g.f->version()) + ", " +
                   std::to_string(g.f->metadata().size()) + " keys, " +
                   std::to_string(g.f->tensors().size()) + " tensors)";
        });
}

// ---------------------------------------------------------------- quant
static const char* layout_name(WeightLayout l) {
    switch (l) {
        case WeightLayout::q4_0_x8: return "q4_0_x8";
        case WeightLayout::planar: return "planar";
        default: return "rows";
    }
}

static WeightLayout parse_layout(const std::string& name) {
    for (const WeightLayout l : {WeightLayout::rows, WeightLayout::q4_0_x8, WeightLayout::planar})
        if (name == layout_name(l)) return l;
    fail(ErrorKind::invalid_arg, "unknown weight layout '", name, "' (rows, q4_0_x8, planar)");
}

// A weight's type, shape (rows, K) and layout, without data: what the kernel
// choices (preferred_layout, gemm_applies) look at.
static Tensor weight_shape(DType t, std::pair<int64_t, int64_t> shape, WeightLayout layout = WeightLayout::rows) {
    Tensor W;
    W.type = t;
    W.ne0 = shape.second;
    W.ne1 = shape.first;
    W.layout = layout;
    return W;
}

// A weight of `shape` (rows, K) in the file layout over caller bytes, checked.
static Tensor weight_of(const void* data, size_t bytes, DType t, std::pair<int64_t, int64_t> shape) {
    Tensor W = weight_shape(t, shape);
    quant::check_row_length(t, W.ne0);
    if (W.ne1 <= 0 || bytes != W.nbytes())
        fail(ErrorKind::invalid_arg, "weight has ", bytes, " bytes, expected ",
             row_bytes(t, W.ne0) * std::max<int64_t>(W.ne1, 0));
    W.data = data;
    return W;
}

// Type names are GGML's, case-insensitive ("q4_K", "Q4_K", "f16").
static DType parse_type(const std::string& name) {
    auto lower = [](std::string s) {
        for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return s;
    };
    const std::string want = lower(name);
    for (uint32_t id = 0; id < 40; ++id) {
        const char* n = dtype_traits(id).name;
        if (n && lower(n) == want) return static_cast<DType>(id);
    }
    fail(ErrorKind::invalid_arg, "unknown tensor type '", name, "'");
}

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using I32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

static void bind_quant(py::module_& m) {
    // Block formats, reference (de)quantizers, the CPU's weight layouts.
    m.def("quant_types", [] { return quant::type_names(quant::can_quantize); }, "Types quantize() can produce.");
    m.def("dequant_types", [] { return quant::type_names(quant::can_dequantize); }, "Types dequantize() accepts.");
    m.def("matmul_types", [] { return quant::type_names(quant::can_matmul); }, "Weight types matmul() accepts.");
    m.def("type_info", [](const std::string& name) {
        const DTypeTraits& t = dtype_traits(parse_type(name));
        return py::make_tuple(t.name, t.block_size, t.type_size);
    }, "(name, block_size, bytes_per_block) of a GGML type.");

    m.def("quantize", [](F32Array x, const std::string& type, int n_threads) {
        const DType t = parse_type(type);
        if (x.ndim() != 2) fail(ErrorKind::invalid_arg, "quantize expects a 2-D float32 array");
        const int64_t rows = x.shape(0), K = x.shape(1);
        quant::check_row_length(t, K);
        if (!quant::can_quantize(t)) fail(ErrorKind::unsupported, "cannot quantize to ", dtype_name(t));
        check_thread_count(n_threads);
        const size_t rb = row_bytes(t, K);
        U8Array out({rows, static_cast<int64_t>(rb)});
        const float* src = x.data();
        uint8_t* dst = out.mutable_data();
        {
            py::gil_scoped_release nogil;
            cpu::ThreadPool pool(std::max(1, n_threads));
            pool.parallel_for(rows, 1, [&](int64_t r0, int64_t r1) {
                for (int64_t r = r0; r < r1; ++r) quant::quantize_row(t, src + r * K, dst + r * rb, K);
            });
        }
        return out;
    }, py::arg("x"), py::arg("type"), py::arg("n_threads") = 1,
       "Quantize rows of a 2-D float32 array; returns uint8 [rows, row_bytes] of GGML blocks.");

    m.def("dequantize", [](U8Array data, const std::string& type, std::vector<int64_t> shape) {
        const DType t = parse_type(type);
        if (shape.empty()) fail(ErrorKind::invalid_arg, "shape must not be empty");
        const int64_t K = shape.back();
        int64_t rows = 1;
        for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
        quant::check_row_length(t, K);
        const size_t rb = row_bytes(t, K);
        if (static_cast<size_t>(data.size()) != rb * static_cast<size_t>(rows))
            fail(ErrorKind::invalid_arg, "expected ", rb * rows, " bytes of ", dtype_name(t), ", got ", data.size());
        F32Array out(shape);
        const uint8_t* src = data.data();
        float* dst = out.mutable_data();
        {
            py::gil_scoped_release nogil;
            for (int64_t r = 0; r < rows; ++r) quant::dequantize_row(t, src + r * rb, dst + r * K, K);
        }
        return out;
    }, py::arg("data"), py::arg("type"), py::arg("shape"), "Dequantize GGML blocks to float32 of `shape`.");

    m.def("repack_weight", [](U8Array w, const std::string& type, std::pair<int64_t, int64_t> shape,
                              const std::string& layout) {
        const Tensor W = weight_of(w.data(), static_cast<size_t>(w.size()), parse_type(type), shape);
        const WeightLayout l = parse_layout(layout);
        U8Array out(static_cast<py::ssize_t>(W.nbytes()));
        if (l == WeightLayout::planar) {
            if (!quant::planar_fits(W.type)) fail(ErrorKind::invalid_arg, "no planar layout for ", type);
            quant::repack_planar(W.data, out.mutable_data(), W.type, W.ne1, W.ne0);
        } else {
            cpu::ThreadPool pool(1);
            cpu::repack_weight(W, l, out.mutable_data(), pool);
        }
        return out;
    }, py::arg("w"), py::arg("type"), py::arg("shape"), py::arg("layout"),
       "The bytes of W (file layout) reordered into another layout (see csrc/quant/repack.h).");

    m.def("planar_split", [](const std::string& type) {
        const quant::PlanarSplit s = quant::planar_split(parse_type(type));
        return py::make_tuple(s.bits_offset, s.bits_bytes);
    }, py::arg("type"), "(offset, bytes) of a block's quant bits in the planar layout's first plane.");

    m.def("preferred_layout", [](const std::string& type, std::pair<int64_t, int64_t> shape, const std::string& isa) {
        return std::string(layout_name(cpu::preferred_layout(weight_shape(parse_type(type), shape),
                                                             cpu::choose_isa(isa))));
    }, py::arg("type"), py::arg("shape"), py::arg("isa") = "auto",
       "The layout a CPU backend of this ISA gives a matmul weight of this type and shape at load.");

    m.def("gemm_min_tokens", [] { return cpu::kGemmMinTokens; },
          "Token count from which CPU matmuls multiply dequantized weights with f32 activations.");

    m.def("matmul_uses_gemm", [](const std::string& type, std::pair<int64_t, int64_t> shape, int n,
                                 const std::string& layout, const std::string& isa) {
        const Tensor W = weight_shape(parse_type(type), shape, parse_layout(layout));
        return cpu::gemm_applies(W, n, cpu::choose_isa(isa));
    }, py::arg("type"), py::arg("shape"), py::arg("n"), py::arg("layout") = "rows", py::arg("isa") = "auto",
       "Whether a CPU matmul with n tokens takes the GEMM path (f32 activations) on the ISA, not the row kernels.");

    m.def("matmul_prefill_path", [](const std::string& type, std::pair<int64_t, int64_t> shape, int n,
                                    const std::string& layout, const std::string& isa) {
        const Tensor W = weight_shape(parse_type(type), shape, parse_layout(layout));
        switch (cpu::prefill_path(W, n, cpu::choose_isa(isa))) {
            case cpu::PrefillPath::gemm_f32: return std::string("f32");
            case cpu::PrefillPath::gemm_i8: return std::string("i8");
            case cpu::PrefillPath::gemm_bf16: return std::string("bf16");
            default: return std::string("rows");
        }
    }, py::arg("type"), py::arg("shape"), py::arg("n"), py::arg("layout") = "rows", py::arg("isa") = "auto",
       "The kernels a CPU matmul with n tokens runs on the ISA: 'rows' (row kernels, 8-bit activations of the "
       "type's decode kind), 'f32' (f32 GEMM, f32 activations) 'i8' (int8 GEMM, activations in Q8_0 blocks) or 'bf16' (AMX-BF16 tiles: weights and activations rounded to bf16).");

#if defined(PHICPP_AMX_EMULATE)
    m.attr("amx_emulated") = true;  // a test build: the "amx" ISA runs emulated tile instructions
#else
    m.attr("amx_emulated") = false;
#endif
    m.def("available_isas", &cpu::available_isas, "ISAs this CPU can run, weakest first.");
    m.def("_threadpool_throw", [](int n_threads, int thrower, int runs) {
        py::gil_scoped_release nogil;
        cpu::ThreadPool pool(n_threads);
        int done = 0;
        for (int r = 0; r < runs; ++r) {
            try {
                auto job = [&](int ti, int) {
                    if (ti == thrower) fail(ErrorKind::invalid_arg, "thread ", ti, " failed");
                };
                pool.run(cpu::JobRef(job));
            } catch (const Error&) {
                ++done;
            }
        }
        std::atomic<int> ran{0};
        auto ok = [&](int, int) { ran.fetch_add(1); };
        pool.run(cpu::JobRef(ok));  // the pool still works
        return std::make_pair(done, ran.load());
    }, py::arg("n_threads"), py::arg("thrower"), py::arg("runs") = 1,
       "Test hook: thread `thrower` of a pool throws in each of `runs` runs; returns (errors the caller caught, "
       "threads that ran the job after them).");
    m.def("cuda_available", &cuda_available, "Whether this build has a CUDA backend and a CUDA device to run it.");
    m.def("cuda_unavailable_reason", &cuda_unavailable_reason,
          "Why there is no CUDA device to run on (empty when there is one).");
    m.def("cuda_memory", []() -> py::object {
#ifdef PHICPP_WITH_CUDA
        size_t free = 0, total = 0;
        if (cuda::memory_info(free, total)) return py::make_tuple(free, total);
#endif
        return py::none();
    }, "(free, total) bytes of the CUDA device's memory, or None without one.");
#ifdef PHICPP_WITH_CUDA
    m.def("cuda_attention_plan", [](int n_q, int n_head, int n_head_kv, int head_dim, int kv_len,
                                    const std::string& cache_type, int sm_count, size_t smem_per_cta,
                                    size_t smem_per_sm, int warps_per_sm, int cta_warps, int stages, int cta_smem_kb,
                                    int window, bool decode, int decode_keys, bool rows_alone) {
        AttentionParams a;
        a.n_head = n_head;
        a.n_head_kv = n_head_kv;
        a.head_dim = head_dim;
        a.window = window;
        const DType type = parse_type(cache_type);
        const cuda::AttentionPlan p = cuda::attention_plan(n_q, a, kv_len, type, {sm_count, smem_per_cta, smem_per_sm},
                                                           {warps_per_sm, cta_warps, stages, cta_smem_kb, decode,
                                                            decode_keys},
                                                           rows_alone);
        py::dict d;
        d["tiles"] = p.tiles;
        d["splits"] = p.splits;
        d["warps"] = p.warps;
        d["stages"] = p.stages;
        d["q_rows"] = p.q_rows;
        d["decode"] = p.decode;
        d["block_keys"] = p.block_keys;
        d["cta_smem"] = cuda::attention_cta_smem(p, head_dim, type);
        return d;
    }, py::arg("n_q"), py::arg("n_head"), py::arg("n_head_kv"), py::arg("head_dim"), py::arg("kv_len"),
       py::arg("cache_type") = "f16", py::arg("sm_count") = 132, py::arg("smem_per_cta") = 232448,
       py::arg("smem_per_sm") = 233472, py::arg("warps_per_sm") = 8, py::arg("cta_warps") = 8, py::arg("stages") = 0,
       py::arg("cta_smem_kb") = 0, py::arg("window") = 0, py::arg("decode") = true, py::arg("decode_keys") = 256,
       py::arg("rows_alone") = false,
       "Test hook (CUDA builds; no device needed): the one-token attention's plan for a device of sm_count SMs "
       "and that shared memory (defaults: an H100/H200), as a dict of tiles, splits, warps, stages, q_rows, decode (the one-row kernel), block_keys and "
       "cta_smem (bytes).");
#endif
}

// ---------------------------------------------------------------- backends
// One backend instance (a device, and for the CPU one ISA) with numpy in and
// out: the op-test harness runs the same cases through every backend there
// is, and the kernel benchmarks time them. Inputs are copied into the
// backend's memory, the op runs as a step of its own, the result comes back.
struct PyBackend {
    std::unique_ptr<Backend> be;
    std::vector<void*> owned;  // this call's buffers

    explicit PyBackend(std::unique_ptr<Backend> b) : be(std::move(b)) {}
    ~PyBackend() { release(); }
    void release() {
        if (!be) return;
        be->synchronize();
        for (void* p : owned) be->dealloc(p);
        owned.clear();
        for (auto& set : held)
            for (const Tensor& w : set) be->free_weight(w);
        held.clear();
    }
    template <class T>
    T* upload(const T* host, size_t count) {
        void* p = be->alloc(std::max<size_t>(1, count) * sizeof(T));
        owned.push_back(p);
        if (count) be->copy_to_device(p, host, count * sizeof(T));
        return static_cast<T*>(p);
    }
    // The norm's vectors (host) into backend memory.
    RowNorm upload_norm(RowNorm rn, const float* w, const float* b, int64_t K) {
        if (rn.kind == NormKind::none) return rn;
        rn.w = upload(w, K);
        rn.b = b ? upload(b, K) : nullptr;
        return rn;
    }
    // Weights as the backend holds them, for the current step (freed with its buffers).
    Experts weights(const std::vector<Tensor>& host, WeightUse use) {
        held.emplace_back();
        for (const Tensor& t : host) held.back().push_back(be->weight(t, use));
        return Experts{held.back().data(), static_cast<int>(held.back().size())};
    }
    Tensor weight(const Tensor& host, WeightUse use) { return weights({host}, use).w[0]; }
    std::vector<std::vector<Tensor>> held;  // this call's weights
    template <class T>
    T* zeros(size_t count) {
        void* p = be->alloc(std::max<size_t>(1, count) * sizeof(T));
        owned.push_back(p);
        return static_cast<T*>(p);
    }
    // Runs fn as one step without the GIL; buffers go when it ends, also on error.
    template <class Fn>
    void step(int pos0, int n_tok, Fn&& fn) {
        py::gil_scoped_release nogil;
        try {
            be->begin_step(pos0, n_tok, false);
            fn();
            be->end_step();
            be->synchronize();
        } catch (...) {
            release();
            throw;
        }
        release();
    }
};

// An Epilogue from its name; swiglu needs an even number of rows (gate | up).
static Epilogue parse_epilogue(const std::string& name, int64_t rows) {
    Epilogue ep;
    if (name == "store") ep = Epilogue::store;
    else if (name == "add") ep = Epilogue::add;
    else if (name == "gelu") ep = Epilogue::gelu;
    else if (name == "swiglu") ep = Epilogue::swiglu;
    else fail(ErrorKind::invalid_arg, "unknown epilogue '", name, "' (store, add, gelu, swiglu)");
    if (ep == Epilogue::swiglu && rows % 2) fail(ErrorKind::invalid_arg, "swiglu needs an even number of rows");
    return ep;
}

// A RowNorm from the harness' arguments (its vectors still on the host).
static RowNorm parse_row_norm(const std::string& norm, const std::optional<F32Array>& w,
                              const std::optional<F32Array>& b, float eps, int64_t K) {
    RowNorm rn;
    if (norm == "layer" || norm == "rms") {
        rn.kind = norm == "layer" ? NormKind::layer : NormKind::rms;
        if (!w || w->size() != K) fail(ErrorKind::invalid_arg, "norm_w must have ", K, " elements");
        if (b && (rn.kind != NormKind::layer || b->size() != K))
            fail(ErrorKind::invalid_arg, "norm_b (LayerNorm only) must have ", K, " elements");
        rn.eps = eps;
    } else if (norm != "none") {
        fail(ErrorKind::invalid_arg, "unknown norm '", norm, "' (none, layer, rms)");
    }
    return rn;
}

// Experts for the MoE ops: one weight array each, all of one type and shape.
static std::vector<Tensor> experts_of(const std::vector<U8Array>& ws, DType t, std::pair<int64_t, int64_t> shape) {
    if (ws.size() < 2) fail(ErrorKind::invalid_arg, "give at least two experts");
    std::vector<Tensor> out;
    for (const U8Array& w : ws) out.push_back(weight_of(w.data(), static_cast<size_t>(w.size()), t, shape));
    return out;
}

// Picks [n, 2] (expert ids, weights) as the ops take them, ids checked.
static std::vector<ExpertPick> picks_of(const I32Array& ids, const std::optional<F32Array>& weights, int n,
                                        int n_expert) {
    if (ids.ndim() != 2 || ids.shape(0) != n || ids.shape(1) != 2)
        fail(ErrorKind::invalid_arg, "ids must be [", n, ", 2]");
    if (weights && (weights->ndim() != 2 || weights->shape(0) != n || weights->shape(1) != 2))
        fail(ErrorKind::invalid_arg, "weights must be [", n, ", 2]");
    std::vector<ExpertPick> picks(2 * static_cast<size_t>(n));
    for (size_t i = 0; i < picks.size(); ++i) {
        picks[i].expert = ids.data()[i];
        if (picks[i].expert < 0 || picks[i].expert >= n_expert)
            fail(ErrorKind::invalid_arg, "expert id ", picks[i].expert, " is out of range [0, ", n_expert, ")");
        picks[i].weight = weights ? weights->data()[i] : 0.0f;
    }
    return picks;
}

// K and V caches given as numpy arrays: C-contiguous [>= rows, width] of one
// dtype, float32 or float16. Returns the cache type.
// The caches' type: float32 or float16 arrays [rows, width], or with
// quantized = "q8_0" / "q4_0" uint8 arrays [rows, the row's bytes].
static DType check_caches(const py::array& k, const py::array& v, int64_t rows, int64_t width,
                          const std::string& quantized) {
    DType type = DType::F32;
    int64_t cols = width;
    if (!quantized.empty()) {
        if (quantized != "q8_0" && quantized != "q4_0")
            fail(ErrorKind::invalid_arg, "cache_type must be q8_0 or q4_0, not '", quantized, "'");
        type = parse_type(quantized);
        if (width % 32 != 0) fail(ErrorKind::invalid_arg, "a quantized cache row must be whole blocks of 32");
        cols = static_cast<int64_t>(row_bytes(type, width));
        if (!k.dtype().is(py::dtype::of<uint8_t>()))
            fail(ErrorKind::invalid_arg, "a ", quantized, " cache is a uint8 array");
    } else if (k.dtype().is(py::dtype("float16"))) {
        type = DType::F16;
    } else if (!k.dtype().is(py::dtype::of<float>())) {
        fail(ErrorKind::invalid_arg, "caches must be float32 or float16 (or uint8 with cache_type)");
    }
    if (!k.dtype().is(v.dtype()) || k.ndim() != 2 || v.ndim() != 2 || k.shape(1) != cols || v.shape(1) != cols ||
        k.shape(0) < rows || v.shape(0) != k.shape(0) || !(k.flags() & py::array::c_style) ||
        !(v.flags() & py::array::c_style))
        fail(ErrorKind::invalid_arg, "caches must be C-contiguous [>= ", rows, ", ", cols, "] of one dtype");
    return type;
}

static void bind_backend(py::module_& m) {
    py::class_<PyBackend>(m, "Backend")
        .def(py::init([](const std::string& device, const std::string& isa, int n_threads) {
                 if (device == "auto") fail(ErrorKind::invalid_arg, "name the device: cpu or cuda");
                 return std::make_unique<PyBackend>(make_backend(BackendOptions{device, n_threads, isa}));
             }),
             py::arg("device") = "cpu", py::arg("isa") = "auto", py::arg("n_threads") = 1)
        .def_property_readonly("name", [](const PyBackend& b) { return b.be->name(); })
        .def_property_readonly("variant", [](const PyBackend& b) { return b.be->variant(); })
        .def("__repr__", [](const PyBackend& b) { return "Backend(" + b.be->name() + ": " + b.be->variant() + ")"; })
        .def("set_row_invariant", [](PyBackend& b, bool on) { b.be->set_row_invariant(on); }, py::arg("on"),
             "Matmuls give every row of x the arithmetic it gets alone (as a batch of sequences needs).")
        .def("set_exact_activations", [](PyBackend& b, bool on) { b.be->set_exact_activations(on); }, py::arg("on"),
             "Float weights' matmuls give f32-accurate products on every path (as a MoE model asks).")
        .def("matmul", [](PyBackend& b, U8Array w, const std::string& type, std::pair<int64_t, int64_t> shape,
                          F32Array x, std::optional<F32Array> bias, const std::string& norm,
                          std::optional<F32Array> norm_w, std::optional<F32Array> norm_b, float eps,
                          const std::string& epilogue, std::optional<F32Array> y0, const std::string& layout,
                          bool rearrange) {
            Tensor host = weight_of(w.data(), static_cast<size_t>(w.size()), parse_type(type), shape);
            host.layout = parse_layout(layout);
            if (!cpu::layout_fits(host, host.layout))
                fail(ErrorKind::invalid_arg, "layout ", layout, " cannot hold a ", type, " weight of ", host.ne1,
                     " x ", host.ne0);
            const int64_t M = host.ne1, K = host.ne0;
            if (x.ndim() != 2 || x.shape(1) != K) fail(ErrorKind::invalid_arg, "x must be [n, ", K, "] float32");
            if (bias && bias->size() != M) fail(ErrorKind::invalid_arg, "bias must have ", M, " elements");
            const int n = static_cast<int>(x.shape(0));
            const Epilogue ep = parse_epilogue(epilogue, M);
            const int64_t cols = ep == Epilogue::swiglu ? M / 2 : M;
            const RowNorm rn = parse_row_norm(norm, norm_w, norm_b, eps, K);
            if (y0 && (y0->ndim() != 2 || y0->shape(0) != n || y0->shape(1) != cols))
                fail(ErrorKind::invalid_arg, "y0 must be [", n, ", ", cols, "]");
            F32Array y({static_cast<int64_t>(n), cols});
            float* yp = y.mutable_data();
            const float* xp = x.data();
            const float* bp = bias ? bias->data() : nullptr;
            const float* nwp = norm_w ? norm_w->data() : nullptr;
            const float* nbp = norm_b ? norm_b->data() : nullptr;
            const float* y0p = y0 ? y0->data() : nullptr;
            b.step(0, n, [&] {
                const Tensor W = b.weight(host, rearrange ? WeightUse::matmul : WeightUse::rows);
                const RowNorm dn = b.upload_norm(rn, nwp, nbp, K);
                float* yd = y0p ? b.upload(y0p, n * cols) : b.zeros<float>(n * cols);
                b.be->matmul(W, b.upload(xp, n * K), n, yd, bp ? b.upload(bp, M) : nullptr, dn, ep);
                b.be->copy_to_host(yp, yd, sizeof(float) * n * cols);
            });
            return y;
        }, py::arg("w"), py::arg("type"), py::arg("shape"), py::arg("x"), py::arg("bias") = py::none(),
           py::arg("norm") = "none", py::arg("norm_w") = py::none(), py::arg("norm_b") = py::none(),
           py::arg("eps") = 1e-5f, py::arg("epilogue") = "store", py::arg("y0") = py::none(),
           py::arg("layout") = "rows", py::arg("rearrange") = true,
           "y = epilogue(norm(x) . W^T + bias) for W of `shape` (rows, K) in `layout`; x [n, K]. epilogue:\n"
           "store, add (y = y0 + P), gelu, swiglu (W rows gate | up; y has rows/2 columns).\n"
           "rearrange=False: the weight as a table also read by rows (the CPU keeps the file layout).")
        .def("matmul_chain", [](PyBackend& b, F32Array x, py::list links) {
            // each link (w, type, shape, norm, norm_w, epilogue, y0 or None) reads the one before's output
            struct Link {
                Tensor host;
                RowNorm rn;
                std::vector<float> nw, y0;
                Epilogue ep;
                int64_t cols;
            };
            if (x.ndim() != 2) fail(ErrorKind::invalid_arg, "x must be [n, K] float32");
            const int n = static_cast<int>(x.shape(0));
            std::vector<Link> ls;
            int64_t K = x.shape(1);
            for (py::handle h : links) {
                const py::tuple t = h.cast<py::tuple>();
                if (t.size() != 7) fail(ErrorKind::invalid_arg, "a link is (w, type, shape, norm, norm_w, epilogue, y0)");
                const U8Array w = t[0].cast<U8Array>();
                Link l;
                l.host = weight_of(w.data(), static_cast<size_t>(w.size()), parse_type(t[1].cast<std::string>()),
                                   t[2].cast<std::pair<int64_t, int64_t>>());
                if (l.host.ne0 != K) fail(ErrorKind::invalid_arg, "link ", ls.size(), " must take ", K, " inputs");
                l.ep = parse_epilogue(t[5].cast<std::string>(), l.host.ne1);
                l.cols = l.ep == Epilogue::swiglu ? l.host.ne1 / 2 : l.host.ne1;
                const auto nw = t[4].cast<std::optional<F32Array>>();
                l.rn = parse_row_norm(t[3].cast<std::string>(), nw, std::nullopt, 1e-5f, K);
                if (nw) l.nw.assign(nw->data(), nw->data() + nw->size());
                if (!t[6].is_none()) {
                    const F32Array y0 = t[6].cast<F32Array>();
                    if (y0.size() != n * l.cols) fail(ErrorKind::invalid_arg, "y0 of link ", ls.size(), " must be [n, ", l.cols, "]");
                    l.y0.assign(y0.data(), y0.data() + y0.size());
                }
                K = l.cols;
                ls.push_back(std::move(l));
            }
            std::vector<F32Array> ys;
            for (const Link& l : ls) ys.emplace_back(std::vector<int64_t>{n, l.cols});
            b.step(0, n, [&] {
                const float* in = b.upload(x.data(), n * x.shape(1));
                std::vector<Tensor> Ws;
                std::vector<RowNorm> norms;
                std::vector<float*> outs;
                for (const Link& l : ls) {  // (everything uploaded first: the matmuls follow one another)
                    Ws.push_back(b.weight(l.host, WeightUse::matmul));
                    norms.push_back(b.upload_norm(l.rn, l.nw.data(), nullptr, l.host.ne0));
                    outs.push_back(l.y0.empty() ? b.zeros<float>(n * l.cols) : b.upload(l.y0.data(), l.y0.size()));
                }
                for (size_t i = 0; i < ls.size(); ++i) {
                    b.be->matmul(Ws[i], in, n, outs[i], nullptr, norms[i], ls[i].ep);
                    in = outs[i];
                }
                for (size_t i = 0; i < ls.size(); ++i)
                    b.be->copy_to_host(ys[i].mutable_data(), outs[i], sizeof(float) * n * ls[i].cols);
            });
            py::list out;
            for (F32Array& y : ys) out.append(y);
            return out;
        }, py::arg("x"), py::arg("links"),
           "Matmuls in one step, each reading the one before's output (the first x): links of\n"
           "(w, type, shape, norm, norm_w, epilogue, y0 or None). Their outputs, in order.")
        .def("get_rows", [](PyBackend& b, U8Array w, const std::string& type, std::pair<int64_t, int64_t> shape,
                            std::vector<int32_t> ids) {
            const Tensor host = weight_of(w.data(), static_cast<size_t>(w.size()), parse_type(type), shape);
            const int n = static_cast<int>(ids.size());
            for (int32_t id : ids)
                if (id < 0 || id >= host.ne1)
                    fail(ErrorKind::invalid_arg, "row id ", id, " is out of range [0, ", host.ne1, ")");
            F32Array out({static_cast<int64_t>(n), host.ne0});
            float* op = out.mutable_data();
            b.step(0, std::max(1, n), [&] {
                const Tensor W = b.weight(host, WeightUse::rows);
                float* od = b.zeros<float>(n * host.ne0);
                b.be->get_rows(W, b.upload(ids.data(), ids.size()), n, od);
                b.be->copy_to_host(op, od, sizeof(float) * n * host.ne0);
            });
            return out;
        }, py::arg("table"), py::arg("type"), py::arg("shape"), py::arg("ids"),
           "Rows ids of the table (rows, K) as float32 [len(ids), K].")
        .def("attention_input", [](PyBackend& b, F32Array q, F32Array k, F32Array v, py::array k_cache,
                                   py::array v_cache, int pos0, int n_head, int n_head_kv, int n_rot,
                                   F32Array inv_freq, float mscale, std::optional<py::tuple> qk_norm,
                                   std::optional<py::tuple> attend, const std::string& cache_type) -> py::tuple {
            // q [n, n_head*hd], k/v [n, n_head_kv*hd]; caches [rows, n_head_kv*hd] float32 or float16
            if (q.ndim() != 2 || k.ndim() != 2 || v.ndim() != 2 || n_head <= 0 || n_head_kv <= 0 ||
                q.shape(1) % n_head != 0)
                fail(ErrorKind::invalid_arg, "q must be [n, n_head * head_dim], k and v [n, n_head_kv * head_dim]");
            const int n = static_cast<int>(q.shape(0));
            const int hd = static_cast<int>(q.shape(1) / n_head), kvw = n_head_kv * hd;
            if (k.shape(0) != n || v.shape(0) != n || k.shape(1) != kvw || v.shape(1) != kvw)
                fail(ErrorKind::invalid_arg, "k and v must be [", n, ", ", kvw, "]");
            if (n_rot < 0 || n_rot > hd || n_rot % 2 || inv_freq.size() != n_rot / 2)
                fail(ErrorKind::invalid_arg, "n_rot must be even and <= head_dim, with n_rot/2 frequencies");
            if (attend && (attend->size() != 2 || n_head % n_head_kv != 0))
                fail(ErrorKind::invalid_arg, "attend is (scale, window), with n_head a multiple of n_head_kv");
            const DType ctype = check_caches(k_cache, v_cache, pos0 + n, kvw, cache_type);
            std::vector<float> norms;  // q_w, q_b, k_w, k_b (hd each), then eps
            if (qk_norm) {
                if (qk_norm->size() != 5) fail(ErrorKind::invalid_arg, "qk_norm is (q_w, q_b, k_w, k_b, eps)");
                for (int i = 0; i < 4; ++i) {
                    F32Array a = (*qk_norm)[i].cast<F32Array>();
                    if (a.size() != hd) fail(ErrorKind::invalid_arg, "qk_norm vectors must have ", hd, " elements");
                    norms.insert(norms.end(), a.data(), a.data() + hd);
                }
                norms.push_back((*qk_norm)[4].cast<float>());
            }
            F32Array q_out({n, n_head * hd}), k_out({n, kvw});
            py::array kc_out(k_cache.dtype(), {k_cache.shape(0), k_cache.shape(1)});
            py::array vc_out(v_cache.dtype(), {v_cache.shape(0), v_cache.shape(1)});
            const size_t cache_bytes = static_cast<size_t>(k_cache.nbytes());
            const uint8_t* kcp = static_cast<const uint8_t*>(k_cache.data());
            const uint8_t* vcp = static_cast<const uint8_t*>(v_cache.data());
            uint8_t* kco = static_cast<uint8_t*>(kc_out.mutable_data());
            uint8_t* vco = static_cast<uint8_t*>(vc_out.mutable_data());
            const float *qp = q.data(), *kp = k.data(), *vp = v.data(), *fp = inv_freq.data();
            float *qo = q_out.mutable_data(), *ko = k_out.mutable_data();
            AttentionParams p;
            p.n_head = n_head;
            p.n_head_kv = n_head_kv;
            p.head_dim = hd;
            if (attend) {
                p.scale = (*attend)[0].cast<float>();
                p.window = (*attend)[1].cast<int>();
            }
            b.step(pos0, n, [&] {
                QKVRows t{b.upload(qp, q.size()), b.upload(kp, k.size()), b.upload(vp, v.size()), n_head * hd, kvw};
                QKNorm qk;
                if (!norms.empty()) {
                    const float* nd = b.upload(norms.data(), norms.size());
                    qk = QKNorm{nd, nd + hd, nd + 2 * hd, nd + 3 * hd, norms.back()};
                }
                const RopeParams rope{n_rot, b.upload(fp, inv_freq.size()), mscale};
                const KVCache cache{b.upload(kcp, cache_bytes), b.upload(vcp, cache_bytes), ctype};
                b.be->attention_input(t, p, qk, rope, cache);
                if (attend) {  // as a layer does it (a backend may do both in one launch): the output replaces q
                    float* od = b.zeros<float>(q.size());
                    b.be->attention(t.q, t.q_stride, 0, n, cache, p, od);
                    b.be->copy_to_host(qo, od, sizeof(float) * q.size());
                } else {
                    b.be->copy_to_host(qo, t.q, sizeof(float) * q.size());
                    b.be->copy_to_host(ko, t.k, sizeof(float) * k.size());
                }
                b.be->copy_to_host(kco, cache.k, cache_bytes);
                b.be->copy_to_host(vco, cache.v, cache_bytes);
            });
            if (attend) return py::make_tuple(q_out, kc_out, vc_out);
            return py::make_tuple(q_out, k_out, kc_out, vc_out);
        }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("k_cache"), py::arg("v_cache"), py::arg("pos0"),
           py::arg("n_head"), py::arg("n_head_kv"), py::arg("n_rot"), py::arg("inv_freq"), py::arg("mscale") = 1.0f,
           py::arg("qk_norm") = py::none(), py::arg("attend") = py::none(), py::arg("cache_type") = "",
           "QK-LayerNorm (qk_norm = (q_w, q_b, k_w, k_b, eps)), rotary and cache write for n tokens at pos0..;\n"
           "caches float32 or float16 [rows, n_head_kv * head_dim], or uint8 rows of cache_type (q8_0, q4_0);\n"
           "returns (q, k, k_cache, v_cache) after the op. With attend = (scale, window) the step's attention\n"
           "follows in the same step and the result is (attention output, k_cache, v_cache).")
        .def("attention", [](PyBackend& b, F32Array q, py::array k_cache, py::array v_cache, int pos0, int n_tok,
                             int t0, int n_head, int n_head_kv, float scale, int window,
                             const std::string& cache_type) {
            // q [n_q, n_head * hd] for step tokens t0..t0+n_q-1 of a step of n_tok at pos0
            if (q.ndim() != 2 || n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv != 0 || q.shape(1) % n_head != 0)
                fail(ErrorKind::invalid_arg, "q must be [n_q, n_head * head_dim] with n_head a multiple of n_head_kv");
            const int n_q = static_cast<int>(q.shape(0));
            if (t0 < 0 || n_tok < t0 + n_q || pos0 < 0)
                fail(ErrorKind::invalid_arg, "the queries (t0 ", t0, ", ", n_q, " rows) must lie in the step's ", n_tok,
                     " tokens");
            const int hd = static_cast<int>(q.shape(1) / n_head);
            const DType ctype =
                check_caches(k_cache, v_cache, pos0 + n_tok, static_cast<int64_t>(n_head_kv) * hd, cache_type);
            F32Array out({n_q, n_head * hd});
            AttentionParams p;
            p.n_head = n_head;
            p.n_head_kv = n_head_kv;
            p.head_dim = hd;
            p.scale = scale;
            p.window = window;
            const size_t cache_bytes = static_cast<size_t>(k_cache.nbytes());
            const uint8_t* kcp = static_cast<const uint8_t*>(k_cache.data());
            const uint8_t* vcp = static_cast<const uint8_t*>(v_cache.data());
            const float* qp = q.data();
            float* op = out.mutable_data();
            b.step(pos0, n_tok, [&] {
                const KVCache cache{b.upload(kcp, cache_bytes), b.upload(vcp, cache_bytes), ctype};
                float* od = b.zeros<float>(out.size());
                b.be->attention(b.upload(qp, q.size()), q.shape(1), t0, n_q, cache, p, od);
                b.be->copy_to_host(op, od, sizeof(float) * out.size());
            });
            return out;
        }, py::arg("q"), py::arg("k_cache"), py::arg("v_cache"), py::arg("pos0"), py::arg("n_tok"), py::arg("t0"),
           py::arg("n_head"), py::arg("n_head_kv"), py::arg("scale"), py::arg("window") = 0,
           py::arg("cache_type") = "",
           "Causal attention of the queries of step tokens t0.. (a step of n_tok tokens at pos0) over the caches.")
        .def("route_top2", [](PyBackend& b, F32Array scores, float jitter) {
            if (scores.ndim() != 2 || scores.shape(1) < 2)
                fail(ErrorKind::invalid_arg, "scores must be [n, n_expert] with n_expert >= 2");
            const int n = static_cast<int>(scores.shape(0)), X = static_cast<int>(scores.shape(1));
            std::vector<ExpertPick> picks(2 * static_cast<size_t>(n));
            const float* sp = scores.data();
            b.step(0, std::max(1, n), [&] {
                ExpertPick* d = b.zeros<ExpertPick>(picks.size());
                b.be->route_top2(b.upload(sp, scores.size()), n, X, jitter, d);
                b.be->copy_to_host(picks.data(), d, sizeof(ExpertPick) * picks.size());
            });
            py::array_t<int32_t> ids({n, 2});
            F32Array w({n, 2});
            for (size_t i = 0; i < picks.size(); ++i) {
                ids.mutable_data()[i] = picks[i].expert;
                w.mutable_data()[i] = picks[i].weight;
            }
            return py::make_tuple(ids, w);
        }, py::arg("scores"), py::arg("jitter"),
           "SparseMixer's two picks of each row of scores [n, n_expert]: (ids [n, 2], weights [n, 2]), lower id first.")
        .def("experts_swiglu", [](PyBackend& b, std::vector<U8Array> gate, std::vector<U8Array> up,
                                  const std::string& type, std::pair<int64_t, int64_t> shape, F32Array x,
                                  I32Array ids, const std::string& norm, std::optional<F32Array> norm_w,
                                  std::optional<F32Array> norm_b, float eps) {
            const DType t = parse_type(type);
            const std::vector<Tensor> g = experts_of(gate, t, shape), u = experts_of(up, t, shape);
            if (g.size() != u.size()) fail(ErrorKind::invalid_arg, "as many up experts as gate experts");
            const int64_t F = shape.first, K = shape.second;
            if (x.ndim() != 2 || x.shape(1) != K) fail(ErrorKind::invalid_arg, "x must be [n, ", K, "] float32");
            const int n = static_cast<int>(x.shape(0));
            const std::vector<ExpertPick> picks = picks_of(ids, std::nullopt, n, static_cast<int>(g.size()));
            const RowNorm rn = parse_row_norm(norm, norm_w, norm_b, eps, K);
            F32Array h({2 * static_cast<int64_t>(n), F});
            const float* xp = x.data();
            const float* nwp = norm_w ? norm_w->data() : nullptr;
            const float* nbp = norm_b ? norm_b->data() : nullptr;
            float* hp = h.mutable_data();
            b.step(0, std::max(1, n), [&] {
                const Experts G = b.weights(g, WeightUse::sparse), U = b.weights(u, WeightUse::sparse);
                float* hd = b.zeros<float>(h.size());
                b.be->experts_swiglu(G, U, b.upload(xp, x.size()), n, b.upload(picks.data(), picks.size()),
                                     b.upload_norm(rn, nwp, nbp, K), hd);
                b.be->copy_to_host(hp, hd, sizeof(float) * h.size());
            });
            return h;
        }, py::arg("gate"), py::arg("up"), py::arg("type"), py::arg("shape"), py::arg("x"), py::arg("ids"),
           py::arg("norm") = "none", py::arg("norm_w") = py::none(), py::arg("norm_b") = py::none(),
           py::arg("eps") = 1e-5f,
           "h[2t + j] = silu(norm(x[t]) . G_e^T) * (norm(x[t]) . U_e^T), e = ids[t, j]; experts of `shape` (ff, K).")
        .def("experts_down_add", [](PyBackend& b, std::vector<U8Array> down, const std::string& type,
                                    std::pair<int64_t, int64_t> shape, F32Array h, I32Array ids,
                                    F32Array weights, F32Array x0) {
            const std::vector<Tensor> d = experts_of(down, parse_type(type), shape);
            const int64_t E = shape.first, F = shape.second;
            if (x0.ndim() != 2 || x0.shape(1) != E) fail(ErrorKind::invalid_arg, "x0 must be [n, ", E, "] float32");
            const int n = static_cast<int>(x0.shape(0));
            if (h.ndim() != 2 || h.shape(0) != 2 * n || h.shape(1) != F)
                fail(ErrorKind::invalid_arg, "h must be [", 2 * n, ", ", F, "] float32");
            const std::vector<ExpertPick> picks = picks_of(ids, weights, n, static_cast<int>(d.size()));
            F32Array x({static_cast<int64_t>(n), E});
            const float* hp = h.data();
            const float* x0p = x0.data();
            float* xp = x.mutable_data();
            b.step(0, std::max(1, n), [&] {
                const Experts D = b.weights(d, WeightUse::sparse);
                float* xd = b.upload(x0p, x0.size());
                b.be->experts_down_add(D, b.upload(hp, h.size()), n, b.upload(picks.data(), picks.size()), xd);
                b.be->copy_to_host(xp, xd, sizeof(float) * x.size());
            });
            return x;
        }, py::arg("down"), py::arg("type"), py::arg("shape"), py::arg("h"), py::arg("ids"), py::arg("weights"),
           py::arg("x0"),
           "x = x0 + w[t, 0] (h[2t] . D_e0^T) + w[t, 1] (h[2t + 1] . D_e1^T), e_j = ids[t, j]; experts of `shape` (E, ff).");
}

// ---------------------------------------------------------------- tokenizer
static void bind_tokenizer(py::module_& m) {
    // Tokenizers from GGUF metadata (owned by the tokenizer helper).
    // python/phicpp/tokenizer.py wraps these; text crosses as bytes (UTF-8).
    py::class_<Tokenizer, std::shared_ptr<Tokenizer>>(m, "Tokenizer")
        .def_static("from_gguf", [](const std::string& path) {
            std::unique_ptr<gguf::File> f;
            {
                py::gil_scoped_release nogil;
                f = gguf::File::open(path);
            }
            return std::shared_ptr<Tokenizer>(Tokenizer::from_gguf(*f));
        }, py::arg("path"))
        .def("tokenize", [](const Tokenizer& t, py::bytes text, bool add_special, bool parse_special) {
            std::string_view sv = text;
            std::vector<int32_t> ids;
            {
                py::gil_scoped_release nogil;
                ids = t.tokenize(sv, add_special, parse_special);
            }
            return ids;
        }, py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = false)
        .def("detokenize", [](const Tokenizer& t, const std::vector<int32_t>& ids, bool remove_special,
                              bool unparse_special) {
            return py::bytes(t.detokenize(ids.data(), ids.size(), remove_special, unparse_special));
        }, py::arg("ids"), py::arg("remove_special") = false, py::arg("unparse_special") = false)
        .def("token_to_piece", [](const Tokenizer& t, int32_t id, bool special, int lstrip) {
            return py::bytes(t.token_to_piece(id, special, lstrip));
        }, py::arg("id"), py::arg("special") = true, py::arg("lstrip") = 0)
        .def("token_text", [](const Tokenizer& t, int32_t id) {
            if (id < 0 || id >= t.n_vocab()) throw py::index_error("token id out of range");
            return py::bytes(std::string(t.token_text(id)));
        }, py::arg("id"))
        .def("token_attr", [](const Tokenizer& t, int32_t id) {
            if (id < 0 || id >= t.n_vocab()) throw py::index_error("token id out of range");
            return t.token_attr(id);
        }, py::arg("id"))
        .def("text_to_token", [](const Tokenizer& t, py::bytes text) { return t.text_to_token(std::string_view(text)); })
        .def("is_eog", &Tokenizer::is_eog, py::arg("id"))
        .def_property_readonly("model", &Tokenizer::model_name)
        .def_property_readonly("pre", &Tokenizer::pre_name)
        .def_property_readonly("n_vocab", &Tokenizer::n_vocab)
        .def_property_readonly("bos_id", &Tokenizer::bos_id)
        .def_property_readonly("eos_id", &Tokenizer::eos_id)
        .def_property_readonly("eot_id", &Tokenizer::eot_id)
        .def_property_readonly("eom_id", &Tokenizer::eom_id)
        .def_property_readonly("unk_id", &Tokenizer::unk_id)
        .def_property_readonly("pad_id", &Tokenizer::pad_id)
        .def_property_readonly("nl_id", &Tokenizer::nl_id)
        .def_property_readonly("add_bos", &Tokenizer::add_bos)
        .def_property_readonly("add_eos", &Tokenizer::add_eos)
        .def_property_readonly("add_space_prefix", &Tokenizer::add_space_prefix)
        .def_property_readonly("eog_ids", &Tokenizer::eog_ids);

    // Test hook: the words a BPE pre-tokenizer cuts text into (kind 0 gpt-2,
    // 1 cl100k/llama3, 2 o200k/gpt-4o, 3 llama.cpp's default); text as UTF-8.
    m.def("_pretokenize", [](int kind, py::bytes text) {
        if (kind < 0 || kind > 3) throw py::value_error("kind must be 0..3");
        const std::string_view s = text;
        tok::CodepointText ct;
        for (size_t pos = 0; pos < s.size();) ct.cp.push_back(tok::decode_utf8_lenient(s, &pos));
        for (uint32_t cp : ct.cp) ct.cls.push_back(tok::ucat(cp));
        std::vector<uint32_t> ends;
        tok::pretokenize(static_cast<tok::PreType>(kind), ct, 0, ct.cp.size(), ends);
        py::list out;
        size_t b = 0;
        for (uint32_t e : ends) {
            std::string w;
            for (size_t i = b; i < e; ++i) tok::append_utf8(w, ct.cp[i]);
            out.append(py::bytes(w));
            b = e;
        }
        return out;
    }, py::arg("kind"), py::arg("text"));

    // Holds a shared_ptr to its Tokenizer so Python cannot free it underneath.
    struct PyStreamDecoder {
        std::shared_ptr<Tokenizer> tok;
        StreamDecoder dec;
        PyStreamDecoder(std::shared_ptr<Tokenizer> t, bool special) : tok(std::move(t)), dec(*tok, special) {}
    };
    py::class_<PyStreamDecoder>(m, "StreamDecoder")
        .def(py::init<std::shared_ptr<Tokenizer>, bool>(), py::arg("tokenizer"), py::arg("special") = false)
        .def("push", [](PyStreamDecoder& d, int32_t id) { return py::str(d.dec.push(id)); }, py::arg("id"))
        .def("flush", [](PyStreamDecoder& d) { return py::str(d.dec.flush()); })
        .def("reset", [](PyStreamDecoder& d) { d.dec.reset(); })
        .def_property_readonly("pending_bytes", [](const PyStreamDecoder& d) { return d.dec.pending_bytes(); });
}

// ---------------------------------------------------------------- sampling
static void bind_sampling(py::module_& m) {
    // Sampler chain (owned by the sampling/CLI helper); python/phicpp/sampling.py wraps it.
    // Logits cross as float32 arrays without a copy when already contiguous float32.
    using namespace phi::sampling;
    using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
    using I32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

    py::class_<Sampler>(m, "Sampler")
        .def(py::init([](float temperature, int top_k, float top_p, float min_p, float repeat_penalty,
                         int repeat_last_n, float presence_penalty, float frequency_penalty, size_t min_keep,
                         uint64_t seed) {
                 SamplerParams p;
                 p.temperature = temperature;
                 p.top_k = top_k;
                 p.top_p = top_p;
                 p.min_p = min_p;
                 p.repeat_penalty = repeat_penalty;
                 p.repeat_last_n = repeat_last_n;
                 p.presence_penalty = presence_penalty;
                 p.frequency_penalty = frequency_penalty;
                 p.min_keep = min_keep;
                 p.seed = seed;
                 return Sampler(p);
             }),
             py::arg("temperature") = 0.8f, py::arg("top_k") = 40, py::arg("top_p") = 0.95f,
             py::arg("min_p") = 0.05f, py::arg("repeat_penalty") = 1.0f, py::arg("repeat_last_n") = 64,
             py::arg("presence_penalty") = 0.0f, py::arg("frequency_penalty") = 0.0f, py::arg("min_keep") = 0,
             py::arg("seed") = 0)
        .def("sample", [](Sampler& s, F32 logits, I32 history) {
            if (logits.ndim() != 1) throw Error(ErrorKind::invalid_arg, "logits must be 1-D [n_vocab]");
            if (history.ndim() != 1) throw Error(ErrorKind::invalid_arg, "history must be 1-D");
            const float* lp = logits.data();
            const int32_t* hp = history.data();
            const auto n = static_cast<int32_t>(logits.shape(0));
            const auto nh = static_cast<size_t>(history.shape(0));
            if (n == 0) throw Error(ErrorKind::invalid_arg, "logits are empty");
            py::gil_scoped_release nogil;
            return s.sample(lp, n, hp, nh);
        }, py::arg("logits"), py::arg("history") = I32(0))
        .def("reseed", &Sampler::reseed, py::arg("seed"))
        .def_property_readonly("is_greedy", &Sampler::is_greedy)
        .def("last_candidates", [](const Sampler& s) {
            const auto& c = s.last_candidates().data;
            I32 ids(static_cast<py::ssize_t>(c.size()));
            F32 probs(static_cast<py::ssize_t>(c.size()));
            for (size_t i = 0; i < c.size(); ++i) {
                ids.mutable_data()[i] = c[i].id;
                probs.mutable_data()[i] = c[i].p;
            }
            return py::make_tuple(ids, probs);
        }, "(ids, probs) the last sample() drew from (empty after the greedy fast path)");

    // Each filter on its own, for tests: candidates in (logits, optional ids) -> (ids, logits, probs).
    struct Io {
        static Candidates in(F32 logits, std::optional<I32> ids, bool sorted) {
            if (logits.ndim() != 1) throw Error(ErrorKind::invalid_arg, "logits must be 1-D");
            Candidates c;
            const auto n = static_cast<size_t>(logits.shape(0));
            if (ids && static_cast<size_t>(ids->size()) != n)
                throw Error(ErrorKind::invalid_arg, "ids and logits differ in length");
            c.data.resize(n);
            for (size_t i = 0; i < n; ++i)
                c.data[i] = {ids ? ids->data()[i] : static_cast<int32_t>(i), logits.data()[i], 0.0f};
            c.sorted = sorted;
            return c;
        }
        static py::tuple out(const Candidates& c) {
            const auto n = static_cast<py::ssize_t>(c.size());
            I32 ids(n);
            F32 lg(n), pr(n);
            for (py::ssize_t i = 0; i < n; ++i) {
                ids.mutable_data()[i] = c.data[i].id;
                lg.mutable_data()[i] = c.data[i].logit;
                pr.mutable_data()[i] = c.data[i].p;
            }
            return py::make_tuple(ids, lg, pr);
        }
    };
    auto ids_arg = py::arg("ids") = py::none();
    auto sorted_arg = py::arg("sorted") = false;
    m.def("sampling_penalties", [](F32 logits, I32 history, int last_n, float repeat, float freq, float presence,
                                   std::optional<I32> ids, bool sorted) {
        Candidates c = Io::in(logits, ids, sorted);
        apply_penalties(c, history.data(), static_cast<size_t>(history.size()), last_n, repeat, freq, presence);
        return Io::out(c);
    }, py::arg("logits"), py::arg("history"), py::arg("last_n"), py::arg("repeat"), py::arg("freq"),
       py::arg("presence"), ids_arg, sorted_arg);
    m.def("sampling_top_k", [](F32 logits, int k, std::optional<I32> ids, bool sorted) {
        Candidates c = Io::in(logits, ids, sorted);
        top_k(c, k);
        return Io::out(c);
    }, py::arg("logits"), py::arg("k"), ids_arg, sorted_arg);
    m.def("sampling_top_p", [](F32 logits, float p, size_t min_keep, std::optional<I32> ids, bool sorted) {
        Candidates c = Io::in(logits, ids, sorted);
        top_p(c, p, min_keep);
        return Io::out(c);
    }, py::arg("logits"), py::arg("p"), py::arg("min_keep") = 0, ids_arg, sorted_arg);
    m.def("sampling_min_p", [](F32 logits, float p, size_t min_keep, std::optional<I32> ids, bool sorted) {
        Candidates c = Io::in(logits, ids, sorted);
        min_p(c, p, min_keep);
        return Io::out(c);
    }, py::arg("logits"), py::arg("p"), py::arg("min_keep") = 0, ids_arg, sorted_arg);
    m.def("sampling_temperature", [](F32 logits, float t, std::optional<I32> ids, bool sorted) {
        Candidates c = Io::in(logits, ids, sorted);
        temperature(c, t);
        return Io::out(c);
    }, py::arg("logits"), py::arg("t"), ids_arg, sorted_arg);
    m.def("sampling_softmax", [](F32 logits, std::optional<I32> ids) {
        Candidates c = Io::in(logits, ids, false);
        softmax(c);
        return Io::out(c);
    }, py::arg("logits"), ids_arg);
    m.def("sampling_greedy", [](F32 logits, std::optional<I32> ids) {
        return greedy(Io::in(logits, ids, false));
    }, py::arg("logits"), ids_arg);
    m.def("sampling_dist", [](F32 logits, uint64_t seed, std::optional<I32> ids) {
        Candidates c = Io::in(logits, ids, false);
        Rng rng(seed);
        const int32_t id = dist(c, rng);
        return py::make_tuple(id, Io::out(c));
    }, py::arg("logits"), py::arg("seed"), ids_arg);
    m.def("rng_draws", [](uint64_t seed, size_t n, bool as_double) -> py::object {
        Rng rng(seed);
        if (as_double) {
            py::array_t<double> out(static_cast<py::ssize_t>(n));
            for (size_t i = 0; i < n; ++i) out.mutable_data()[i] = rng.next_double();
            return std::move(out);
        }
        py::array_t<uint32_t> out(static_cast<py::ssize_t>(n));
        for (size_t i = 0; i < n; ++i) out.mutable_data()[i] = rng.next_u32();
        return std::move(out);
    }, py::arg("seed"), py::arg("n"), py::arg("as_double") = false, "The sampler RNG's first n outputs (tests).");
}

// ---------------------------------------------------------------- model
static void bind_model(py::module_& m) {
    py::class_<Model>(m, "Model")
        .def(py::init([](const std::string& path, int n_ctx, int n_threads, int n_batch, const std::string& device,
                         const std::string& kv_type, const std::string& isa, py::object progress, int n_seq) {
                 ModelParams p;
                 p.n_seq = n_seq;
                 p.n_ctx = n_ctx;
                 p.n_threads = n_threads;
                 p.n_batch = n_batch;
                 p.device = device;
                 p.kv_type = kv_type;
                 p.isa = isa;
                 if (!progress.is_none()) {
                     // called while loading, without the GIL: take it for the call. The
                     // callable is held through a shared_ptr so that copies of the
                     // std::function never touch Python reference counts; the last owner,
                     // p, goes with the GIL held (after nogil below).
                     auto cb = std::make_shared<py::object>(progress);
                     p.progress = [cb](size_t done, size_t total) {
                         py::gil_scoped_acquire gil;
                         (*cb)(done, total);
                     };
                 }
                 py::gil_scoped_release nogil;
                 return Model::load(path, p);
             }),
             py::arg("path"), py::arg("n_ctx") = 0, py::arg("n_threads") = 0, py::arg("n_batch") = 512,
             py::arg("device") = "cpu", py::arg("kv_type") = "auto", py::arg("isa") = "auto",
             py::arg("progress") = py::none(), py::arg("n_seq") = 1)
        .def(
            "eval",
            [](Model& self, py::array_t<int32_t, py::array::c_style | py::array::forcecast> tokens, bool all_logits,
               int seq) {
                if (tokens.ndim() != 1) throw Error(ErrorKind::invalid_arg, "tokens must be a 1-D sequence of ids");
                const int n = static_cast<int>(tokens.shape(0));
                const int V = self.n_vocab();
                py::array_t<float> out = all_logits ? py::array_t<float>({n, V}) : py::array_t<float>(V);
                const int32_t* ids = tokens.data();
                float* dst = out.mutable_data();
                {
                    py::gil_scoped_release nogil;
                    self.eval(ids, n, dst, all_logits, seq);
                }
                return out;
            },
            py::arg("tokens"), py::arg("all_logits") = false, py::arg("seq") = 0,
            "Evaluate tokens after the cached ones (of sequence seq); returns the last token's logits [n_vocab], "
            "or every token's [n, n_vocab] with all_logits=True.")
        .def(
            "batch",
            [](Model& self, py::array_t<int32_t, py::array::c_style | py::array::forcecast> seqs, int first_count,
               py::array_t<int32_t, py::array::c_style | py::array::forcecast> tokens) {
                if (seqs.ndim() != 1 || tokens.ndim() != 1 || seqs.shape(0) < 1 ||
                    tokens.shape(0) != first_count + seqs.shape(0) - 1)
                    throw Error(ErrorKind::invalid_arg, "tokens must hold first_count tokens of seqs[0], then one per "
                                                        "other sequence");
                const int n = static_cast<int>(seqs.shape(0));
                py::array_t<float> out({n, self.n_vocab()});
                const int32_t *sp = seqs.data(), *tp = tokens.data();
                float* dst = out.mutable_data();
                {
                    py::gil_scoped_release nogil;
                    self.batch(sp, n, first_count, tp, dst);
                }
                return out;
            },
            py::arg("seqs"), py::arg("first_count"), py::arg("tokens"),
            "first_count tokens of sequence seqs[0] (a prompt chunk), then one token of each other sequence, in "
            "one forward pass; returns the logits of each sequence's last token [len(seqs), n_vocab], each row as "
            "that sequence alone would get it.")
        .def("reset", &Model::reset, py::arg("seq") = 0, "Forget the KV cache (of sequence seq).")
        .def("truncate", &Model::truncate, py::arg("n"), py::arg("seq") = 0,
             "Keep only the first n cached tokens (of sequence seq).")
        .def("n_past_of", &Model::n_past, py::arg("seq"), "Tokens cached for sequence seq.")
        .def_property_readonly("n_seq", &Model::n_seq)
        .def_property_readonly("n_past", [](const Model& s) { return s.n_past(0); })
        .def_property_readonly("n_ctx", &Model::n_ctx)
        .def_property_readonly("n_vocab", &Model::n_vocab)
        .def_property_readonly("n_ctx_train", [](const Model& s) { return s.config().n_ctx_train; })
        .def_property_readonly("n_embd", [](const Model& s) { return s.config().n_embd; })
        .def_property_readonly("n_layer", [](const Model& s) { return s.config().n_layer; })
        .def_property_readonly("arch", [](const Model& s) { return s.config().arch_name; })
        .def_property_readonly("n_expert", [](const Model& s) { return s.config().n_expert; })
        .def_property_readonly("router_jitter", [](const Model& s) { return s.config().router_jitter; })
        .def_property_readonly(
            "load_notes",
            [](const Model& s) {
                std::vector<std::string> notes = s.load_notes();
                if (s.config().router_jitter_default)
                    notes.push_back(s.file().path() + ": no router jitter in the file (llama.cpp's converter keeps none); "
                                    "routing with Phi-3.5-MoE's published 0.01");
                return notes;
            },
            "What the load assumed that the file did not say, and what it decided that the user should know.")
        .def_property_readonly("path", [](const Model& s) { return s.file().path(); })
        .def_property_readonly("device", [](const Model& s) { return s.backend().name(); })
        .def_property_readonly("device_variant", [](const Model& s) { return s.backend().variant(); })
        .def_property_readonly("kv_type", [](const Model& s) { return std::string(dtype_name(s.kv_type())); })
        .def_property_readonly("kv_cache_bytes", &Model::kv_cache_bytes);
}

PYBIND11_MODULE(_core, m) {
    m.doc() = "phicpp native core";
    register_errors(m);
    bind_gguf(m);
    bind_quant(m);
    bind_backend(m);
    bind_tokenizer(m);
    bind_sampling(m);
    bind_model(m);
}
