// GGUF v2/v3 reader. The file is mapped read-only and parsed with a bounds-
// checked cursor: every length, count and offset read from the file is checked
// against the bytes that are actually there *before* anything is allocated or
// dereferenced, so a corrupt or hostile file ends in a phi::Error, never in a
// crash or a huge allocation.
//
// Layout (all little-endian):
//   "GGUF" u32 version, u64 n_tensors, u64 n_kv
//   n_kv x   { string key, u32 value_type, value }
//   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   padding to general.alignment (default 32), then the data section;
//   tensor offsets are relative to the data section and aligned.
// A string is u64 length + bytes (no terminator); an array is u32 elem_type,
// u64 count, then count values.
#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "core/error.h"

namespace phi::gguf {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr size_t kDefaultAlignment = 32;
// Nested arrays recurse; bound the depth so a file of nested array headers
// cannot exhaust the stack. Real files use depth 1.
constexpr int kMaxArrayDepth = 16;
// Largest up-front reservation for a count read from the file; beyond it
// containers grow only as entries really parse.
constexpr uint64_t kMaxReserve = 1 << 16;

// Bytes of one element of a fixed-size value type; 0 for STRING/ARRAY/unknown.
size_t scalar_size(ValueType t) {
    switch (t) {
        case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: return 1;
        case ValueType::UINT16: case ValueType::INT16: return 2;
        case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: return 4;
        case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: return 8;
        default: return 0;
    }
}

bool valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::FLOAT64); }

// The fewest bytes a value of type t can occupy in the file: used to reject
// counts that could not fit in what is left before allocating for them.
size_t min_encoded_size(ValueType t) {
    if (t == ValueType::STRING) return 8;      // u64 length
    if (t == ValueType::ARRAY) return 4 + 8;   // elem type + count
    return scalar_size(t);
}

template <class T>
T load(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));  // the mapping gives no alignment guarantee
    return v;
}

// Decodes one fixed-size element into the right field of a Value.
void decode_scalar(ValueType t, const uint8_t* p, Value& v) {
    switch (t) {
        case ValueType::UINT8: v.u = load<uint8_t>(p); break;
        case ValueType::INT8: v.i = load<int8_t>(p); break;
        case ValueType::UINT16: v.u = load<uint16_t>(p); break;
        case ValueType::INT16: v.i = load<int16_t>(p); break;
        case ValueType::UINT32: v.u = load<uint32_t>(p); break;
        case ValueType::INT32: v.i = load<int32_t>(p); break;
        case ValueType::UINT64: v.u = load<uint64_t>(p); break;
        case ValueType::INT64: v.i = load<int64_t>(p); break;
        case ValueType::FLOAT32: v.f = load<float>(p); break;
        case ValueType::FLOAT64: v.f = load<double>(p); break;
        case ValueType::BOOL: v.u = load<uint8_t>(p) != 0; break;
        default: break;
    }
}

bool is_unsigned(ValueType t) {
    return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 ||
           t == ValueType::UINT64;
}
bool is_signed(ValueType t) {
    return t == ValueType::INT8 || t == ValueType::INT16 || t == ValueType::INT32 ||
           t == ValueType::INT64;
}
bool is_float(ValueType t) { return t == ValueType::FLOAT32 || t == ValueType::FLOAT64; }

// A borrowed callable that describes a field ("metadata key #3 'x'") for an
// error message. Type-erased so the recursive array reader is one function,
// not a new template instantiation per nesting level.
class FieldRef {
public:
    template <class F>
    FieldRef(const F& f)  // NOLINT: implicit from any lambda
        : obj_(&f), call_([](const void* o) { return std::string((*static_cast<const F*>(o))()); }) {}
    std::string operator()() const { return call_(obj_); }

private:
    const void* obj_;
    std::string (*call_)(const void*);
};

// Bounds-checked reader over the mapping. `field` arguments are callables that
// build the field's description; they run only when something is wrong, so
// the hot path (200K vocabulary strings) builds no strings.
class Cursor {
public:
    Cursor(const std::string& path, const uint8_t* base, size_t size)
        : path_(path), base_(base), size_(size) {}

    size_t pos() const { return pos_; }
    size_t left() const { return size_ - pos_; }

    template <class... Parts>
    [[noreturn]] void bad(const Parts&... parts) const {
        fail(ErrorKind::format, "GGUF file '", path_, "': ", parts...);
    }

    void need(size_t n, FieldRef field) const {
        if (n > left())
            bad(field(), ": truncated: need ", n, " bytes at offset ", pos_, ", only ", left(),
                " left in the file");
    }

    template <class T>
    T read(FieldRef field) {
        need(sizeof(T), field);
        T v = load<T>(base_ + pos_);
        pos_ += sizeof(T);
        return v;
    }

    const uint8_t* take(size_t n, FieldRef field) {
        need(n, field);
        const uint8_t* p = base_ + pos_;
        pos_ += n;
        return p;
    }

    std::string_view read_string(FieldRef field) {
        const uint64_t len = read<uint64_t>([&] { return field() + " string length"; });
        if (len > left())
            bad(field(), " string length: expected at most ", left(),
                " (the bytes left in the file), found ", len);
        const uint8_t* p = take(static_cast<size_t>(len), field);
        return {reinterpret_cast<const char*>(p), static_cast<size_t>(len)};
    }

    ValueType read_type(FieldRef field) {
        const uint32_t t = read<uint32_t>([&] { return field() + " type"; });
        if (!valid_value_type(t))
            bad(field(), " type: expected a GGUF value type 0..12, found ", t);
        return static_cast<ValueType>(t);
    }

    // Reads a value of type t (the type tag already consumed).
    void read_value(ValueType t, Value& v, FieldRef field, int depth) {
        v.type = t;
        if (t == ValueType::STRING) {
            v.str = read_string(field);
        } else if (t == ValueType::ARRAY) {
            read_array(v, field, depth + 1);
        } else {
            decode_scalar(t, take(scalar_size(t), field), v);
        }
    }

private:
    void read_array(Value& v, FieldRef field, int depth) {
        if (depth > kMaxArrayDepth)
            bad(field(), ": arrays nested deeper than ", kMaxArrayDepth, " levels");
        v.elem_type = read_type([&] { return field() + " array element"; });
        v.count = read<uint64_t>([&] { return field() + " array count"; });
        const size_t min_size = min_encoded_size(v.elem_type);
        if (v.count > left() / min_size)
            bad(field(), " array count: ", v.count, " elements of ", value_type_name(v.elem_type),
                " need at least ", min_size, " bytes each, but only ", left(),
                " bytes are left in the file");
        if (scalar_size(v.elem_type) != 0) {
            v.raw = take(static_cast<size_t>(v.count) * min_size, field);
            return;
        }
        // Grow as elements actually parse: a corrupt count that passed the
        // size check above must not reserve gigabytes up front.
        v.items.reserve(static_cast<size_t>(std::min<uint64_t>(v.count, kMaxReserve)));
        for (uint64_t k = 0; k < v.count; ++k) {
            auto elem = [&] { return field() + "[" + std::to_string(k) + "]"; };
            Value& item = v.items.emplace_back();
            item.type = v.elem_type;
            if (v.elem_type == ValueType::STRING) {
                item.str = read_string(elem);
            } else {  // nested array: its own element type and count follow
                read_array(item, elem, depth + 1);
            }
        }
    }

    const std::string& path_;
    const uint8_t* base_;
    size_t size_;
    size_t pos_ = 0;
};

// A name from the file, quoted for an error message: cut to a readable
// length, with bytes outside printable ASCII escaped. Python decodes error
// messages as strict UTF-8, so raw bytes from a corrupt file would turn a
// clean GGUFError into a UnicodeDecodeError.
std::string quoted(std::string_view s) {
    constexpr size_t kMax = 120;
    const bool cut = s.size() > kMax;
    if (cut) s = s.substr(0, kMax);
    static const char* hex = "0123456789abcdef";
    std::string out = "'";
    for (unsigned char ch : s) {
        if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
            out += static_cast<char>(ch);
        } else {
            out += "\\x";
            out += hex[ch >> 4];
            out += hex[ch & 15];
        }
    }
    out += cut ? "'..." : "'";
    return out;
}

// x rounded up to a multiple of a (a power of two); false on overflow.
bool align_up(uint64_t x, uint64_t a, uint64_t& out) {
    const uint64_t mask = a - 1;
    if (x > std::numeric_limits<uint64_t>::max() - mask) return false;
    out = (x + mask) & ~mask;
    return true;
}

} // namespace

const char* value_type_name(ValueType t) {
    switch (t) {
        case ValueType::UINT8: return "uint8";
        case ValueType::INT8: return "int8";
        case ValueType::UINT16: return "uint16";
        case ValueType::INT16: return "int16";
        case ValueType::UINT32: return "uint32";
        case ValueType::INT32: return "int32";
        case ValueType::FLOAT32: return "float32";
        case ValueType::BOOL: return "bool";
        case ValueType::STRING: return "string";
        case ValueType::ARRAY: return "array";
        case ValueType::UINT64: return "uint64";
        case ValueType::INT64: return "int64";
        case ValueType::FLOAT64: return "float64";
    }
    return "unknown";
}

// ---------------------------------------------------------------- Value

bool Value::is_integer() const { return is_unsigned(type) || is_signed(type); }
bool Value::is_number() const { return is_integer() || is_float(type); }

double Value::number_at(uint64_t k) const {
    const size_t sz = scalar_size(elem_type);
    if (type != ValueType::ARRAY || raw == nullptr || sz == 0 || elem_type == ValueType::BOOL)
        fail(ErrorKind::invalid_arg, "number_at: not a numeric array");
    if (k >= count) fail(ErrorKind::invalid_arg, "number_at: index ", k, " out of range ", count);
    Value e;
    decode_scalar(elem_type, raw + k * sz, e);
    if (is_unsigned(elem_type)) return static_cast<double>(e.u);
    if (is_signed(elem_type)) return static_cast<double>(e.i);
    return e.f;
}

int64_t Value::int_at(uint64_t k) const {
    const size_t sz = scalar_size(elem_type);
    if (type != ValueType::ARRAY || raw == nullptr || sz == 0 ||
        !(is_unsigned(elem_type) || is_signed(elem_type)))
        fail(ErrorKind::invalid_arg, "int_at: not an integer array");
    if (k >= count) fail(ErrorKind::invalid_arg, "int_at: index ", k, " out of range ", count);
    Value e;
    decode_scalar(elem_type, raw + k * sz, e);
    return is_unsigned(elem_type) ? static_cast<int64_t>(e.u) : e.i;
}

// ---------------------------------------------------------------- File: open/close

std::unique_ptr<File> File::open(const std::string& path) {
    std::unique_ptr<File> f(new File());
    f->path_ = path;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        if (err == ENOENT || err == ENOTDIR)
            fail(ErrorKind::file_not_found, "GGUF file '", path, "' not found");
        fail(ErrorKind::generic, "GGUF file '", path, "': cannot open: ", std::strerror(err));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        fail(ErrorKind::generic, "GGUF file '", path, "': cannot stat: ", std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        fail(ErrorKind::format, "GGUF file '", path, "': not a regular file",
             S_ISDIR(st.st_mode) ? " (it is a directory)" : "");
    }
    f->size_ = static_cast<size_t>(st.st_size);
    if (f->size_ > 0) {
        void* p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            const int err = errno;
            ::close(fd);
            fail(ErrorKind::generic, "GGUF file '", path, "': mmap of ", f->size_,
                 " bytes failed: ", std::strerror(err));
        }
        f->base_ = static_cast<const uint8_t*>(p);
    }
    ::close(fd);  // the mapping stays valid without the descriptor
    f->parse();   // on a throw, ~File unmaps
    if (f->base_ && !f->tensors_.empty()) {
        // Weights are read front to back on first use; ask for readahead now.
        madvise(const_cast<uint8_t*>(f->base_), f->size_, MADV_WILLNEED);
    }
    return f;
}

void File::release(const void* p, size_t n) const {
    const auto* b = static_cast<const uint8_t*>(p);
    if (!base_ || b < base_ || n > size_ || b - base_ > static_cast<ptrdiff_t>(size_ - n)) return;
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t lo = (reinterpret_cast<uintptr_t>(b) + page - 1) / page * page;
    const uintptr_t hi = (reinterpret_cast<uintptr_t>(b) + n) / page * page;
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

File::~File() {
    if (base_) munmap(const_cast<uint8_t*>(base_), size_);
    if (fd_ >= 0) ::close(fd_);
}

// ---------------------------------------------------------------- File: parse

void File::parse() {
    Cursor c(path_, base_, size_);
    using S = std::string;

    const uint32_t magic = c.read<uint32_t>([] { return S("magic"); });
    if (magic != kMagic) {
        char got[5] = {};
        std::memcpy(got, &magic, 4);
        for (char& ch : got)
            if (ch && (ch < 0x20 || ch > 0x7e)) ch = '?';
        c.bad("magic: expected \"GGUF\", found \"", got, "\" (not a GGUF file)");
    }
    version_ = c.read<uint32_t>([] { return S("version"); });
    if (version_ != 2 && version_ != 3) {
        const uint32_t swapped = __builtin_bswap32(version_);
        if (swapped == 1 || swapped == 2 || swapped == 3)
            c.bad("version: found ", version_, ", which is version ", swapped,
                  " byte-swapped: big-endian GGUF files are not supported");
        if (version_ == 1)
            c.bad("version: GGUF v1 (32-bit counts, before Nov 2023) is not supported; "
                  "expected 2 or 3");
        c.bad("version: expected 2 or 3, found ", version_);
    }
    const uint64_t n_tensors = c.read<uint64_t>([] { return S("tensor count"); });
    const uint64_t n_kv = c.read<uint64_t>([] { return S("metadata key/value count"); });

    // A key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes;
    // a tensor info at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
    if (n_kv > c.left() / 13)
        c.bad("metadata key/value count: ", n_kv, " pairs cannot fit in the ", c.left(),
              " bytes left in the file");
    if (n_tensors > c.left() / 24)
        c.bad("tensor count: ", n_tensors, " tensor infos cannot fit in the ", c.left(),
              " bytes left in the file");

    // ---- metadata
    kv_.reserve(static_cast<size_t>(std::min(n_kv, kMaxReserve)));
    kv_index_.reserve(static_cast<size_t>(std::min(n_kv, kMaxReserve)));
    for (uint64_t k = 0; k < n_kv; ++k) {
        const std::string_view key =
            c.read_string([&] { return "metadata key #" + std::to_string(k); });
        auto field = [&] { return "metadata key #" + std::to_string(k) + " " + quoted(key); };
        const ValueType t = c.read_type(field);
        Value v;
        c.read_value(t, v, field, 0);
        std::string skey(key);
        if (!kv_index_.emplace(skey, kv_.size()).second)
            c.bad(field(), ": duplicate key (first seen as key #", kv_index_[skey], ")");
        kv_.emplace_back(std::move(skey), std::move(v));
    }

    // ---- alignment
    alignment_ = kDefaultAlignment;
    if (const Value* a = find("general.alignment")) {
        uint64_t al = 0;
        if (is_unsigned(a->type)) al = a->u;
        else if (is_signed(a->type) && a->i > 0) al = static_cast<uint64_t>(a->i);
        else if (!is_signed(a->type))
            c.bad("metadata 'general.alignment': expected an unsigned integer, found ",
                  value_type_name(a->type));
        if (al == 0 || (al & (al - 1)) != 0 || al > (uint64_t(1) << 32))
            c.bad("metadata 'general.alignment': expected a non-zero power of two up to 2^32, found ",
                  is_signed(a->type) ? std::to_string(a->i) : std::to_string(al));
        alignment_ = static_cast<size_t>(al);
    }

    // ---- tensor infos
    tensors_.reserve(static_cast<size_t>(std::min(n_tensors, kMaxReserve)));
    tensor_index_.reserve(static_cast<size_t>(std::min(n_tensors, kMaxReserve)));
    for (uint64_t k = 0; k < n_tensors; ++k) {
        TensorInfo& ti = tensors_.emplace_back();
        const std::string_view name =
            c.read_string([&] { return "tensor #" + std::to_string(k) + " name"; });
        ti.name.assign(name.data(), name.size());
        auto field = [&](const char* what) {
            return "tensor #" + std::to_string(k) + " " + quoted(ti.name) + " " + what;
        };
        const uint32_t n_dims = c.read<uint32_t>([&] { return field("n_dims"); });
        if (n_dims > 4) c.bad(field("n_dims"), ": expected at most 4, found ", n_dims);
        ti.n_dims = static_cast<int>(n_dims);
        for (uint32_t d = 0; d < n_dims; ++d) {
            const uint64_t ne = c.read<uint64_t>([&] { return field("dims"); });
            if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
                c.bad(field("dims"), ": ne[", d, "] must be a positive int64, found ",
                      static_cast<int64_t>(ne));
            ti.ne[d] = static_cast<int64_t>(ne);
        }
        const uint32_t type = c.read<uint32_t>([&] { return field("type"); });
        const DTypeTraits& tr = dtype_traits(type);
        if (tr.name == nullptr) c.bad(field("type"), ": unknown GGML type id ", type);
        ti.type = static_cast<DType>(type);
        ti.offset = c.read<uint64_t>([&] { return field("offset"); });

        int64_t n = 1;
        for (int d = 0; d < 4; ++d)
            if (__builtin_mul_overflow(n, ti.ne[d], &n))
                c.bad(field("dims"), ": element count overflows int64");
        if (ti.ne[0] % tr.block_size != 0)
            c.bad(field("dims"), ": row is not a whole number of blocks: ne[0] = ", ti.ne[0],
                  " is not a multiple of the ", tr.name, " block size ", tr.block_size);
        uint64_t nbytes = 0;
        if (__builtin_mul_overflow(static_cast<uint64_t>(n / tr.block_size),
                                   static_cast<uint64_t>(tr.type_size), &nbytes) ||
            nbytes > std::numeric_limits<size_t>::max())
            c.bad(field("size"), ": byte size overflows (", n, " elements of ", tr.name, ")");
        ti.nbytes = static_cast<size_t>(nbytes);
        if (!tensor_index_.emplace(ti.name, k).second)
            c.bad(field("name"), ": duplicate tensor name (first seen as tensor #",
                  tensor_index_[ti.name], ")");
    }

    // ---- data section
    uint64_t data_off = 0;
    if (!align_up(c.pos(), alignment_, data_off))
        c.bad("data section offset overflows with alignment ", alignment_);
    data_offset_ = static_cast<size_t>(data_off);
    if (!tensors_.empty() && data_offset_ > size_)
        c.bad("data section: starts at offset ", data_offset_, " (header end ", c.pos(),
              " aligned to ", alignment_, ") but the file is only ", size_, " bytes (truncated?)");
    const uint64_t data_size = data_offset_ <= size_ ? size_ - data_offset_ : 0;
    for (TensorInfo& ti : tensors_) {
        auto field = [&](const char* what) { return "tensor " + quoted(ti.name) + " " + what; };
        if (ti.offset % alignment_ != 0)
            c.bad(field("offset"), ": expected a multiple of the alignment ", alignment_,
                  ", found ", ti.offset);
        if (ti.offset > data_size || ti.nbytes > data_size - ti.offset)
            c.bad(field("data"), ": bytes [", ti.offset, ", ", ti.offset, " + ", ti.nbytes,
                  ") of the data section run past its end (", data_size, " bytes; file truncated?)");
        ti.data = base_ + data_offset_ + ti.offset;
    }
}

// ---------------------------------------------------------------- lookups and getters

const Value* File::find(std::string_view key) const {
    auto it = kv_index_.find(std::string(key));
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

size_t File::tensor_bytes() const {
    size_t n = 0;
    for (const TensorInfo& t : tensors_) n += t.nbytes;
    return n;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
    auto it = tensor_index_.find(std::string(name));
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

[[noreturn]] void wrong_type(const std::string& path, std::string_view key, const char* expected,
                             const Value& v) {
    std::string found = value_type_name(v.type);
    if (v.type == ValueType::ARRAY) found += std::string(" of ") + value_type_name(v.elem_type);
    fail(ErrorKind::format, "GGUF file '", path, "': metadata ", quoted(key), ": expected ",
         expected, ", found ", found);
}

[[noreturn]] void missing(const std::string& path, std::string_view key) {
    fail(ErrorKind::format, "GGUF file '", path, "': required metadata key ", quoted(key),
         " is missing");
}

int64_t to_int(const std::string& path, std::string_view key, const Value& v) {
    if (is_signed(v.type)) return v.i;
    if (is_unsigned(v.type)) {
        if (v.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
            fail(ErrorKind::format, "GGUF file '", path, "': metadata ", quoted(key), ": value ",
                 v.u, " does not fit in int64");
        return static_cast<int64_t>(v.u);
    }
    wrong_type(path, key, "an integer", v);
}

double to_f64(const std::string& path, std::string_view key, const Value& v) {
    if (is_float(v.type)) return v.f;
    if (is_signed(v.type)) return static_cast<double>(v.i);
    if (is_unsigned(v.type)) return static_cast<double>(v.u);
    wrong_type(path, key, "a number", v);
}

} // namespace

std::optional<std::string> File::opt_string(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return std::nullopt;
    if (v->type != ValueType::STRING) wrong_type(path_, key, "a string", *v);
    return std::string(v->str);
}

std::optional<int64_t> File::opt_int(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return std::nullopt;
    return to_int(path_, key, *v);
}

std::optional<double> File::opt_f64(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return std::nullopt;
    return to_f64(path_, key, *v);
}

std::optional<bool> File::opt_bool(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return std::nullopt;
    if (v->type != ValueType::BOOL) wrong_type(path_, key, "a bool", *v);
    return v->u != 0;
}

std::string File::get_string(std::string_view key) const {
    if (auto v = opt_string(key)) return *v;
    missing(path_, key);
}

int64_t File::get_int(std::string_view key) const {
    if (auto v = opt_int(key)) return *v;
    missing(path_, key);
}

double File::get_f64(std::string_view key) const {
    if (auto v = opt_f64(key)) return *v;
    missing(path_, key);
}

bool File::get_bool(std::string_view key) const {
    if (auto v = opt_bool(key)) return *v;
    missing(path_, key);
}

std::vector<std::string_view> File::get_str_array(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return {};
    if (v->type != ValueType::ARRAY || v->elem_type != ValueType::STRING)
        wrong_type(path_, key, "an array of string", *v);
    std::vector<std::string_view> out;
    out.reserve(v->items.size());
    for (const Value& s : v->items) out.push_back(s.str);
    return out;
}

std::vector<float> File::get_f32_array(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return {};
    if (v->type != ValueType::ARRAY || v->raw == nullptr || v->elem_type == ValueType::BOOL)
        wrong_type(path_, key, "an array of numbers", *v);
    std::vector<float> out(static_cast<size_t>(v->count));
    if (v->elem_type == ValueType::FLOAT32) {
        if (v->count) std::memcpy(out.data(), v->raw, out.size() * sizeof(float));
    } else {
        for (uint64_t k = 0; k < v->count; ++k) out[k] = static_cast<float>(v->number_at(k));
    }
    return out;
}

std::vector<int64_t> File::get_int_array(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return {};
    if (v->type != ValueType::ARRAY || v->raw == nullptr ||
        !(is_unsigned(v->elem_type) || is_signed(v->elem_type)))
        wrong_type(path_, key, "an array of integers", *v);
    std::vector<int64_t> out(static_cast<size_t>(v->count));
    for (uint64_t k = 0; k < v->count; ++k) {
        out[k] = v->int_at(k);
        if (v->elem_type == ValueType::UINT64 && out[k] < 0)
            fail(ErrorKind::format, "GGUF file '", path_, "': metadata ", quoted(key),
                 "[", k, "]: value does not fit in int64");
    }
    return out;
}

} // namespace phi::gguf
