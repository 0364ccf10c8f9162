#include "core/host_memory.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace phi {

namespace {

// The kB value of `key` in /proc/meminfo, or -1.
long long meminfo_kb(const char* key) {
    std::FILE* f = std::fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    long long v = -1;
    const size_t n = std::strlen(key);
    while (std::fgets(line, sizeof line, f)) {
        if (std::strncmp(line, key, n) == 0 && line[n] == ':') {
            if (std::sscanf(line + n + 1, "%lld", &v) != 1) v = -1;
            break;
        }
    }
    std::fclose(f);
    return v;
}

// The value of `key` in a cgroup v2 memory.stat, or -1.
long long cgroup_stat(const char* key) {
    std::FILE* f = std::fopen("/sys/fs/cgroup/memory.stat", "r");
    if (!f) return -1;
    char name[128];
    long long v = -1, x = 0;
    while (std::fscanf(f, "%127s %lld", name, &x) == 2) {
        if (std::strcmp(name, key) == 0) {
            v = x;
            break;
        }
    }
    std::fclose(f);
    return v;
}

// A cgroup v2 file holding one number ("max": no limit), or -1.
long long cgroup_value(const char* path) {
    std::FILE* f = std::fopen(path, "r");
    if (!f) return -1;
    long long v = -1;
    if (std::fscanf(f, "%lld", &v) != 1) v = -1;
    std::fclose(f);
    return v;
}

} // namespace

size_t host_memory_available() {
    long long avail = -1;
    const long long mem = meminfo_kb("MemAvailable"), swap = meminfo_kb("SwapFree");
    if (mem >= 0) {
        avail = (mem + std::max(0LL, swap)) * 1024;
    } else {
        const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        if (pages > 0 && page > 0) avail = static_cast<long long>(pages) * page;
    }
    const long long limit = cgroup_value("/sys/fs/cgroup/memory.max");
    const long long used = cgroup_value("/sys/fs/cgroup/memory.current");
    if (limit > 0 && used >= 0) {
        // the cgroup's page cache (the mapped model file among it) is reclaimed before anything is killed
        const long long cache = std::max(0LL, cgroup_stat("file"));
        const long long left = std::max(0LL, limit - std::max(0LL, used - cache));
        avail = avail < 0 ? left : std::min(avail, left);
    }
    return avail > 0 ? static_cast<size_t>(avail) : 0;
}

} // namespace phi
