// GGUF v2/v3 reader over a read-only mmap. Tensor data is used in place.
// Every count, length, offset and size is validated against the file on
// open(); any violation is a phi::Error (kind format) naming the file, the
// field and what was expected. Nothing here reads outside the mapping.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"

namespace phi::gguf {

enum class ValueType : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5,
    FLOAT32 = 6, BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* value_type_name(ValueType t);

// One metadata value. Scalars are decoded; strings point into the mapping;
// arrays of numbers keep a pointer to their raw little-endian elements
// (possibly unaligned: use the accessors); arrays of strings and nested arrays
// are decoded into `items`.
struct Value {
    ValueType type = ValueType::UINT8;
    uint64_t u = 0;           // unsigned integer types and BOOL
    int64_t i = 0;            // signed integer types
    double f = 0.0;           // FLOAT32 / FLOAT64
    std::string_view str;     // STRING
    // ARRAY
    ValueType elem_type = ValueType::UINT8;
    uint64_t count = 0;
    const uint8_t* raw = nullptr;  // numeric arrays: count elements of elem_type
    std::vector<Value> items;      // arrays of STRING or ARRAY

    bool is_integer() const;
    bool is_number() const;  // integer or float
    // Element k of a numeric array, converted.
    double number_at(uint64_t k) const;
    int64_t int_at(uint64_t k) const;
};

struct TensorInfo {
    std::string name;
    DType type = DType::F32;
    int n_dims = 0;
    int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the contiguous (innermost) dimension
    uint64_t offset = 0;            // from the start of the data section
    size_t nbytes = 0;
    const void* data = nullptr;     // into the mapping
    int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
};

class File {
public:
    // Maps and validates the whole file. Throws phi::Error: file_not_found for
    // a missing path, format for anything malformed.
    static std::unique_ptr<File> open(const std::string& path);
    ~File();
    File(const File&) = delete;
    File& operator=(const File&) = delete;

    const std::string& path() const { return path_; }
    uint32_t version() const { return version_; }
    size_t alignment() const { return alignment_; }
    size_t file_size() const { return size_; }
    size_t data_offset() const { return data_offset_; }

    // Metadata in file order.
    const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
    const Value* find(std::string_view key) const;
    bool has(std::string_view key) const { return find(key) != nullptr; }

    // Typed getters. The required forms throw phi::Error (format) naming the
    // file and key when it is missing or of an incompatible type; integer
    // getters accept any integer type whose value fits; get_f64 accepts any number.
    std::string get_string(std::string_view key) const;
    int64_t get_int(std::string_view key) const;
    double get_f64(std::string_view key) const;
    bool get_bool(std::string_view key) const;
    std::optional<std::string> opt_string(std::string_view key) const;
    std::optional<int64_t> opt_int(std::string_view key) const;
    std::optional<double> opt_f64(std::string_view key) const;
    std::optional<bool> opt_bool(std::string_view key) const;
    // Arrays (throw if the key is present with another type; empty if absent).
    std::vector<std::string_view> get_str_array(std::string_view key) const;
    std::vector<float> get_f32_array(std::string_view key) const;
    std::vector<int64_t> get_int_array(std::string_view key) const;

    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    size_t tensor_bytes() const;  // of every tensor's data together
    const TensorInfo* find_tensor(std::string_view name) const;

    // Drops the mapped pages wholly inside [p, p + n) from this process's
    // resident memory, for tensor data a backend has copied. The mapping stays
    // valid: a later read faults the bytes back in from the file.
    void release(const void* p, size_t n) const;

private:
    File() = default;
    void parse();

    std::string path_;
    int fd_ = -1;
    const uint8_t* base_ = nullptr;
    size_t size_ = 0;
    uint32_t version_ = 0;
    size_t alignment_ = 32;
    size_t data_offset_ = 0;
    std::vector<std::pair<std::string, Value>> kv_;
    std::unordered_map<std::string, size_t> kv_index_;
    std::vector<TensorInfo> tensors_;
    std::unordered_map<std::string, size_t> tensor_index_;
};

} // namespace phi::gguf
