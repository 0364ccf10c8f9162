// The readers take a path; an in-memory file (memfd) keeps the fuzz targets
// off the disk. write_memfile replaces its contents with each input.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace fuzz {

inline int memfile_fd() {
    static const int fd = [] {
        const int f = memfd_create("phicpp_fuzz", MFD_CLOEXEC);
        if (f < 0) {
            std::perror("memfd_create");
            std::abort();
        }
        return f;
    }();
    return fd;
}

inline const std::string& memfile_path() {
    static const std::string path = "/proc/self/fd/" + std::to_string(memfile_fd());
    return path;
}

inline void write_memfile(const uint8_t* data, size_t size) {
    const int fd = memfile_fd();
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != static_cast<ssize_t>(size))) {
        std::perror("memfd write");
        std::abort();
    }
}

} // namespace fuzz
