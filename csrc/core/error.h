// Errors crossing the C++/Python boundary. Every failure a user can cause
// (bad file, unsupported model, prompt too long) is a phi::Error with a
// kind, so the bindings can map it to a precise Python exception.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

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

// fail(ErrorKind::format, "file ", path, ": tensor '", name, "' ...") builds the
// message from its parts and throws.
template <class... Parts>
[[noreturn]] void fail(ErrorKind kind, const Parts&... parts) {
    std::ostringstream os;
    (os << ... << parts);
    throw Error(kind, os.str());
}

} // namespace phi
