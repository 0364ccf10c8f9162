// What tools/consumer_bench.cu and tools/staging_bench.cu share: Q4_0 rows in
// shared memory dotted with 8-bit activations held in registers (the "reg-act"
// consumer of docs/CUDA.md, "The computing side alone"), and on the host the
// random rows those tools put in their rings and the images of them.
//
// Rows lie in groups of R: the R rows' nibbles (K/2 bytes each; byte i of a
// unit holds element i low and i + 16 high), then their f16 scales
// unit-major, [K/32][R], so that a lane reads a unit's R scales in one load.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>
#include <algorithm>
#include <vector>

#include "backend/cuda/formats.cuh"  // dp4a_us
#include "cuda_bench.cuh"

namespace q4_0_reg {

using phi::cuda::dp4a_us;

struct Act {  // the staged activations: a unit's 32 codes (0..15, then 16..31), scale, -8 * code sum
    const int8_t* q;
    const float* scale;
    const int* zsum;
};

__host__ __device__ constexpr int group_bytes(int K, int R) { return R * (K / 2) + R * (K / 32) * 2; }

// reg-act: U units a lane (K = 1024 U), activations in registers.
template <int U>
struct RegAct {
    int4 lo[U], hi[U];
    float sa[U];
    int z[U];
    __device__ void load(const Act& a, int lane) {
#pragma unroll
        for (int j = 0; j < U; ++j) {
            const int u = lane + 32 * j;
            lo[j] = *reinterpret_cast<const int4*>(a.q + u * 32);
            hi[j] = *reinterpret_cast<const int4*>(a.q + u * 32 + 16);
            sa[j] = a.scale[u];
            z[j] = a.zsum[u];
        }
    }
};

// R rows (1, 2, 4 or 8) over the lane's units j in [J0, J1) (unit lane + 32 j),
// added to acc: the rows' nibbles of those units lie row_bytes apart, unit
// lane + 32 j at (lane + 32 (j - J0)) * 16 in a row, and their scales
// unit-major from d ([unit - 32 J0][R]).
template <int U, int R, int J0 = 0, int J1 = U>
__device__ __forceinline__ void rows_acc(const uint8_t* nib, int row_bytes, const __half* d, const RegAct<U>& x, int lane,
                                         float (&acc)[R]) {
#pragma unroll
    for (int j = J0; j < J1; ++j) {
        const int u = lane + 32 * (j - J0);
        __half dr[R];  // the R rows' scales of unit u, in one load
        if constexpr (R == 8) {
            *reinterpret_cast<uint4*>(dr) = *reinterpret_cast<const uint4*>(d + u * R);
        } else if constexpr (R == 4) {
            *reinterpret_cast<uint2*>(dr) = *reinterpret_cast<const uint2*>(d + u * R);
        } else if constexpr (R == 2) {
            *reinterpret_cast<uint32_t*>(dr) = *reinterpret_cast<const uint32_t*>(d + u * R);
        } else {
            dr[0] = d[u];
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const uint4 w = *reinterpret_cast<const uint4*>(nib + r * row_bytes + u * 16);
            int tl = x.z[j];
            tl = __dp4a(static_cast<int>(w.x & 0x0F0F0F0Fu), x.lo[j].x, tl);
            tl = __dp4a(static_cast<int>(w.y & 0x0F0F0F0Fu), x.lo[j].y, tl);
            tl = __dp4a(static_cast<int>(w.z & 0x0F0F0F0Fu), x.lo[j].z, tl);
            tl = __dp4a(static_cast<int>(w.w & 0x0F0F0F0Fu), x.lo[j].w, tl);
            int th = dp4a_us(static_cast<int>(w.x & 0xF0F0F0F0u), x.hi[j].x, 0);
            th = dp4a_us(static_cast<int>(w.y & 0xF0F0F0F0u), x.hi[j].y, th);
            th = dp4a_us(static_cast<int>(w.z & 0xF0F0F0F0u), x.hi[j].z, th);
            th = dp4a_us(static_cast<int>(w.w & 0xF0F0F0F0u), x.hi[j].w, th);
            acc[r] += __half2float(dr[r]) * x.sa[j] * static_cast<float>(tl + (th >> 4));
        }
    }
}

// The warp's sums of R rows' partial sums: transposed, at each step over a
// lane bit (16, 8, 4 while a lane holds more than one row) a lane keeps half
// its rows (those the bit selects) plus its partner's partial sums of them;
// then plain steps. Returns, in every lane, the sum of row row_of_lane<R>(lane).
template <int R>
__device__ __forceinline__ float rows_reduce(float (&acc)[R], int lane) {
    int n = R;
#pragma unroll
    for (int bit = 16; bit >= 1; bit >>= 1) {
        if (n > 1) {
            const bool hi = lane & bit;
#pragma unroll
            for (int i = 0; i < R / 2; ++i) {
                if (i >= n / 2) break;
                const float keep = hi ? acc[i + n / 2] : acc[i], give = hi ? acc[i] : acc[i + n / 2];
                acc[i] = keep + __shfl_xor_sync(0xffffffffu, give, bit);
            }
            n /= 2;
        } else {
            acc[0] += __shfl_xor_sync(0xffffffffu, acc[0], bit);
        }
    }
    return acc[0];
}

// R rows (1, 2, 4 or 8) of K = 1024 U whose nibbles lie K/2 bytes apart and
// whose scales lie unit-major ([unit][R]); returns, in every lane, the sum of
// row row_of_lane<R>(lane).
template <int U, int R>
__device__ __forceinline__ float rows_reg(const uint8_t* nib, const __half* d, const RegAct<U>& x, int lane) {
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    rows_acc<U, R>(nib, 1024 * U / 2, d, x, lane, acc);
    return rows_reduce<R>(acc, lane);
}
// The row a lane's rows_reg<R> sum belongs to: the lane bits 16, 8, 4 read high to low.
template <int R>
__device__ __forceinline__ int row_of_lane(int lane) {
    int row = 0, n = R;
    for (int bit = 16; n > 1; bit >>= 1, n /= 2) row = row * 2 + ((lane & bit) ? 1 : 0);
    return row;
}

// ---- host: random rows and their ring images

struct RingRows {
    int K, n;
    std::vector<uint8_t> nib;  // [n][K/2]
    std::vector<float> d;      // [n][K/32], f16-representable
};
inline RingRows random_rows(int K, int n, uint32_t seed) {
    RingRows rr{K, n, std::vector<uint8_t>(static_cast<size_t>(n) * K / 2), std::vector<float>(static_cast<size_t>(n) * K / 32)};
    for (size_t i = 0; i < rr.nib.size(); ++i) rr.nib[i] = static_cast<uint8_t>(bench_hash(static_cast<uint32_t>(i), seed));
    for (size_t i = 0; i < rr.d.size(); ++i)
        rr.d[i] = __half2float(__float2half(0.001f + (bench_hash(static_cast<uint32_t>(i), seed + 1) % 1000) * 1e-5f));
    return rr;
}
// Row j dotted with staged activations (codes q[K], unit scales s, unit sums z = -8 * sum of codes), in double.
inline double row_dot(const RingRows& rr, int j, const int8_t* q, const float* s, const int* z) {
    const int K = rr.K, units = K / 32;
    double acc = 0;
    for (int u = 0; u < units; ++u) {
        long t = z[u];
        for (int i = 0; i < 16; ++i) {
            const uint8_t b = rr.nib[static_cast<size_t>(j) * (K / 2) + u * 16 + i];
            t += static_cast<long>(b & 15) * q[u * 32 + i] + static_cast<long>(b >> 4) * q[u * 32 + 16 + i];
        }
        acc += static_cast<double>(rr.d[static_cast<size_t>(j) * units + u]) * s[u] * t;
    }
    return acc;
}
// The rows in groups of R (the layout above; unit_major = false: scales [R][K/32]).
inline std::vector<uint8_t> ring_image(const RingRows& rr, int R, bool unit_major = true) {
    const int K = rr.K, units = K / 32, gb = group_bytes(K, R);
    std::vector<uint8_t> img(static_cast<size_t>(rr.n / R) * gb);
    for (int j = 0; j < rr.n; ++j) {
        uint8_t* g = img.data() + static_cast<size_t>(j / R) * gb;
        std::copy(rr.nib.begin() + static_cast<size_t>(j) * (K / 2), rr.nib.begin() + static_cast<size_t>(j + 1) * (K / 2),
                  g + (j % R) * (K / 2));
        __half* d = reinterpret_cast<__half*>(g + R * (K / 2));
        for (int u = 0; u < units; ++u)
            d[unit_major ? u * R + j % R : (j % R) * units + u] = __float2half(rr.d[static_cast<size_t>(j) * units + u]);
    }
    return img;
}

}  // namespace q4_0_reg
