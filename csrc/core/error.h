// Errors crossing the C++/Python boundary. Every failure a user can cause
// (bad file, unsupported model, prompt too long) is a phi::Error with a
// kind, so the bindings can map it to a precise Python exception.
#pragma once
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace phi {

enum class ErrorKind {
    generic,        // -> phicpp.PhicppError
    file_not_found, // -> FileNotFoundError
    format,         // malformed or truncated file -> phicpp.GGUFError
    unsupported,    // valid file we cannot run (arch, tensor type) -> phicpp.UnsupportedError
    context,        // more tokens than the context holds -> phicpp.ContextOverflowError
    invalid_arg,    // a bad argument from the caller -> ValueError
};

class Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::string& msg) : std::runtime_error(msg), kind_(kind) {}
    ErrorKind kind() const { return kind_; }

private:
    ErrorKind kind_;
};

namespace detail {
// Message parts are formatted without iostreams: a libstdc++ linked
// statically into the extension (what some toolchains do, e.g. GCC 13 with
// only libstdc++.a) can crash formatting an integer through its own
// std::locale, which would turn a user's mistake into a segfault.
template <class T>
void append_part(std::string& s, const T& v) {
    if constexpr (std::is_array_v<T> || std::is_convertible_v<const T&, std::string_view>) {
        s += std::string_view(v);
    } else if constexpr (std::is_same_v<T, bool>) {
        s += v ? "true" : "false";
    } else if constexpr (std::is_same_v<T, char>) {
        s += v;
    } else if constexpr (std::is_integral_v<T>) {
        s += std::to_string(v);
    } else if constexpr (std::is_floating_point_v<T>) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
        s += buf;
    } else {
        static_assert(std::is_integral_v<T>, "fail(): message parts are strings, numbers or bools");
    }
}
} // namespace detail

// fail(ErrorKind::format, "file ", path, ": tensor '", name, "' ...") builds the
// message from its parts and throws.
template <class... Parts>
[[noreturn]] void fail(ErrorKind kind, const Parts&... parts) {
    std::string msg;
    (detail::append_part(msg, parts), ...);
    throw Error(kind, msg);
}

} // namespace phi
