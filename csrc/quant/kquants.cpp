// K-quants: 256-element super-blocks Q2_K..Q6_K, and Q8_K (the activation
// format they are multiplied with). Quantizers transcribe ggml's
// quantize_row_*_ref (the path llama-quantize takes without an importance
// matrix), including its scale searches, so our files match llama.cpp's.
//
// Dequantize and dot share one step, unpack(): a block becomes integer quants
// q[256] plus integer scales (and mins) per sub-block, so that
//   x = (d * scale[s]) * q - (dmin * min[s])
// which is exactly how ggml and gguf-py dequantize (same f32 operations).
#include <cmath>
#include <cstring>

#include "quant/blocks.h"
#include "quant/formats.h"

namespace phi::quant {

namespace {

constexpr float kGroupMaxEps = 1e-15f;

inline float h2f(uint16_t h) { return fp16_to_fp32(h); }
inline uint16_t f2h(float f) { return fp32_to_fp16(f); }
inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// ------------------------------------------------------------ scale search
// (ggml's make_qx_quants, make_q3_quants, make_qkx2_quants.)

// Symmetric quantization to [-nmax, nmax-1] minimizing weighted error
// (rmse_type 1: weights x^2) over 19 candidate scales.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, int rmse_type) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    if (rmse_type == 0) {
        for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
        return 1 / iscale;
    }
    auto weight = [&](int i) { return rmse_type == 1 ? x[i] * x[i] : rmse_type == 2 ? 1.0f
                                       : rmse_type == 3 ? std::fabs(x[i]) : std::sqrt(std::fabs(x[i])); };
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = static_cast<int8_t>(l + nmax);
        const float w = weight(i);
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            const float w = weight(i);
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i)
                L[i] = static_cast<int8_t>(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// Q3_K's search: start from the max-based scale, then move single quants
// while that lowers the x^2-weighted error (up to 5 passes).
float make_q3_quants(int n, int nmax, const float* x, int8_t* L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    const float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = static_cast<int8_t>(l);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                const int new_l = clampi(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = static_cast<int8_t>(new_l);
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Asymmetric quantization to [0, nmax] with a min <= 0: least-squares scale
// and min refit for nstep+1 candidate grids, keeping the best weighted error.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        L[i] = static_cast<uint8_t>(clampi(nearest_int(iscale * (x[i] - min)), 0, nmax));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            const int l = clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = static_cast<uint8_t>(l);
            const float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? std::fabs(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

// Pack 256 2-bit values: byte l of each 32-byte group holds 4 values 32 apart.
void pack_2bit(const uint8_t* L, uint8_t* qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}
inline int unpack_2bit(const uint8_t* qs, int e) {  // element e of 256
    const int half = e / 128, r = e % 128;
    return (qs[half * 32 + r % 32] >> (2 * (r / 32))) & 3;
}

// 6-bit scale and min pairs of Q4_K/Q5_K, packed into 12 bytes.
void pack_scale_min_k4(const uint8_t* ls, const uint8_t* lm, uint8_t* scales) {
    for (int j = 0; j < QK_K / 32; ++j) {
        if (j < 4) {
            scales[j] = ls[j];
            scales[j + 4] = lm[j];
        } else {
            scales[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            scales[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
            scales[j - 0] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
        }
    }
}

// Q3_K's 16 6-bit scales (stored +32) in 12 bytes: low nibbles in bytes
// 0..7, high 2 bits in bytes 8..11.
int q3k_scale(const uint8_t* s, int j) {
    const int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
    const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

// ------------------------------------------------------------ unpacked view
struct Unpacked {
    int q[QK_K];      // integer quants
    int scale[16];    // per sub-block
    int min[16];      // per sub-block (0 for symmetric formats)
    int sub;          // elements per sub-block: 16 or 32
    float d, dmin;
};

void unpack_q2_K(const BlockQ2_K& b, Unpacked* u) {
    u->sub = 16;
    u->d = h2f(b.d);
    u->dmin = h2f(b.dmin);
    for (int j = 0; j < 16; ++j) {
        u->scale[j] = b.scales[j] & 0xF;
        u->min[j] = b.scales[j] >> 4;
    }
    for (int e = 0; e < QK_K; ++e) u->q[e] = unpack_2bit(b.qs, e);
}

void unpack_q3_K(const BlockQ3_K& b, Unpacked* u) {
    u->sub = 16;
    u->d = h2f(b.d);
    u->dmin = 0;
    for (int j = 0; j < 16; ++j) {
        u->scale[j] = q3k_scale(b.scales, j);
        u->min[j] = 0;
    }
    // high bit of element e: bit (e / 32) of hmask[e % 32]; clear means -4
    for (int e = 0; e < QK_K; ++e) u->q[e] = unpack_2bit(b.qs, e) - ((b.hmask[e % 32] >> (e / 32)) & 1 ? 0 : 4);
}

// Q4_K/Q5_K nibbles: 64-element chunk c has its first 32 in the low nibbles of
// qs[32c..32c+31] and the next 32 in the high nibbles.
inline int nibble_k(const uint8_t* qs, int e) {
    const int c = e / 64, r = e % 64;
    return r < 32 ? qs[32 * c + r] & 0xF : qs[32 * c + r - 32] >> 4;
}

void unpack_q4_K(const BlockQ4_K& b, Unpacked* u) {
    u->sub = 32;
    u->d = h2f(b.d);
    u->dmin = h2f(b.dmin);
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, b.scales, &sc, &m);
        u->scale[j] = sc;
        u->min[j] = m;
    }
    for (int e = 0; e < QK_K; ++e) u->q[e] = nibble_k(b.qs, e);
}

void unpack_q5_K(const BlockQ5_K& b, Unpacked* u) {
    u->sub = 32;
    u->d = h2f(b.d);
    u->dmin = h2f(b.dmin);
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, b.scales, &sc, &m);
        u->scale[j] = sc;
        u->min[j] = m;
    }
    // bit 4 of element e: bit (e / 32) of qh[e % 32]
    for (int e = 0; e < QK_K; ++e) u->q[e] = nibble_k(b.qs, e) | (((b.qh[e % 32] >> (e / 32)) & 1) << 4);
}

void unpack_q6_K(const BlockQ6_K& b, Unpacked* u) {
    u->sub = 16;
    u->d = h2f(b.d);
    u->dmin = 0;
    for (int j = 0; j < 16; ++j) {
        u->scale[j] = b.scales[j];
        u->min[j] = 0;
    }
    // 128-element halves h: element r of a half takes the low/high nibble of
    // ql[64h + r % 64] (r < 64: low) and 2 bits (r / 32) of qh[32h + r % 32].
    for (int e = 0; e < QK_K; ++e) {
        const int h = e / 128, r = e % 128;
        const int lo = r < 64 ? b.ql[64 * h + r] & 0xF : b.ql[64 * h + r - 64] >> 4;
        const int hi = (b.qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        u->q[e] = (lo | (hi << 4)) - 32;
    }
}

template <class Block, void (*unpack)(const Block&, Unpacked*)>
void dequantize_k(const void* src, float* y, int64_t n) {
    const auto* b = static_cast<const Block*>(src);
    Unpacked u;
    for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
        unpack(b[i], &u);
        for (int e = 0; e < QK_K; ++e) {
            const int s = e / u.sub;
            y[e] = (u.d * u.scale[s]) * u.q[e] - (u.dmin * u.min[s]);
        }
    }
}

// ggml's K-quant dot: per super-block
//   sum += dx * (d * sum_s scale[s] * sum(q * qx) - dmin * sum_s min[s] * sum(qx over s))
template <class Block, void (*unpack)(const Block&, Unpacked*)>
float dot_k(const void* w, const void* xq, int64_t n) {
    const auto* a = static_cast<const Block*>(w);
    const auto* b = static_cast<const BlockQ8_K*>(xq);
    Unpacked u;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        unpack(a[i], &u);
        int sumi = 0, summ = 0;
        for (int s = 0; s < QK_K / u.sub; ++s) {
            int dot = 0, sx = 0;
            for (int e = s * u.sub; e < (s + 1) * u.sub; ++e) {
                dot += u.q[e] * b[i].qs[e];
                sx += b[i].qs[e];
            }
            sumi += u.scale[s] * dot;
            summ += u.min[s] * sx;
        }
        sum += b[i].d * (u.d * sumi - u.dmin * summ);
    }
    return sum;
}

// ------------------------------------------------------------ quantizers
void quantize_q2_K(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ2_K*>(dst);
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[16], scales[16];
    const float q4scale = 15.f;
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; ++j) {
            for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
            scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        if (max_scale > 0) {
            const float iscale = q4scale / max_scale;
            for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
            y[i].d = f2h(max_scale / q4scale);
        } else {
            for (int j = 0; j < 16; ++j) y[i].scales[j] = 0;
            y[i].d = f2h(0.f);
        }
        if (max_min > 0) {
            const float iscale = q4scale / max_min;
            for (int j = 0; j < 16; ++j) y[i].scales[j] |= static_cast<uint8_t>(nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = f2h(max_min / q4scale);
        } else {
            y[i].dmin = f2h(0.f);
        }
        for (int j = 0; j < 16; ++j) {
            const float d = h2f(y[i].d) * (y[i].scales[j] & 0xF);
            if (!d) continue;
            const float dm = h2f(y[i].dmin) * (y[i].scales[j] >> 4);
            for (int ii = 0; ii < 16; ++ii) L[16 * j + ii] = static_cast<uint8_t>(clampi(nearest_int((x[16 * j + ii] + dm) / d), 0, 3));
        }
        pack_2bit(L, y[i].qs);
    }
}

void quantize_q3_K(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ3_K*>(dst);
    int8_t L[QK_K];
    float scales[16];
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < 16; ++j) {
            scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
            const float scale = std::fabs(scales[j]);
            if (scale > amax) {
                amax = scale;
                max_scale = scales[j];
            }
        }
        std::memset(y[i].scales, 0, 12);
        if (max_scale) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; ++j) {
                int8_t l = static_cast<int8_t>(nearest_int(iscale * scales[j]));
                l = static_cast<int8_t>(clampi(l, -32, 31) + 32);
                if (j < 8) y[i].scales[j] = l & 0xF;
                else y[i].scales[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
                l = static_cast<int8_t>(l >> 4);
                y[i].scales[j % 4 + 8] |= static_cast<uint8_t>(l << (2 * (j / 4)));
            }
            y[i].d = f2h(1 / iscale);
        } else {
            y[i].d = f2h(0.f);
        }
        for (int j = 0; j < 16; ++j) {
            const float d = h2f(y[i].d) * q3k_scale(y[i].scales, j);
            if (!d) continue;
            for (int ii = 0; ii < 16; ++ii)
                L[16 * j + ii] = static_cast<int8_t>(clampi(nearest_int(x[16 * j + ii] / d), -4, 3) + 4);
        }
        std::memset(y[i].hmask, 0, QK_K / 8);
        uint8_t Lu[QK_K];
        for (int e = 0; e < QK_K; ++e) {
            int l = L[e];
            if (l > 3) {
                y[i].hmask[e % 32] |= static_cast<uint8_t>(1 << (e / 32));
                l -= 4;
            }
            Lu[e] = static_cast<uint8_t>(l);
        }
        pack_2bit(Lu, y[i].qs);
    }
}

template <int nmax, bool five_bit>
void quantize_q45_K(const float* x, uint16_t* d_out, uint16_t* dmin_out, uint8_t* scales_out, uint8_t* L) {
    uint8_t Laux[32];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
        scales[j] = five_bit ? make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15, false)
                             : make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
        // ggml stores nearest_int into a uint8_t, then clamps to 63
        ls[j] = static_cast<uint8_t>(nearest_int(inv_scale * scales[j]));
        lm[j] = static_cast<uint8_t>(nearest_int(inv_min * mins[j]));
        if (ls[j] > 63) ls[j] = 63;
        if (lm[j] > 63) lm[j] = 63;
    }
    std::memset(scales_out, 0, 12);
    pack_scale_min_k4(ls, lm, scales_out);
    *d_out = f2h(max_scale / 63.f);
    *dmin_out = f2h(max_min / 63.f);
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, scales_out, &sc, &m);
        const float d = h2f(*d_out) * sc;
        if (!d) continue;
        const float dm = h2f(*dmin_out) * m;
        for (int ii = 0; ii < 32; ++ii) L[32 * j + ii] = static_cast<uint8_t>(clampi(nearest_int((x[32 * j + ii] + dm) / d), 0, nmax));
    }
}

void quantize_q4_K(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ4_K*>(dst);
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        quantize_q45_K<15, false>(x, &y[i].d, &y[i].dmin, y[i].scales, L);
        for (int c = 0; c < 4; ++c)
            for (int l = 0; l < 32; ++l) y[i].qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + l + 32] << 4));
    }
}

void quantize_q5_K(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ5_K*>(dst);
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        quantize_q45_K<31, true>(x, &y[i].d, &y[i].dmin, y[i].scales, L);
        std::memset(y[i].qh, 0, QK_K / 8);
        for (int e = 0; e < QK_K; ++e)
            if (L[e] > 15) {
                y[i].qh[e % 32] |= static_cast<uint8_t>(1 << (e / 32));
                L[e] -= 16;
            }
        for (int c = 0; c < 4; ++c)
            for (int l = 0; l < 32; ++l) y[i].qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + l + 32] << 4));
    }
}

void quantize_q6_K(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ6_K*>(dst);
    int8_t L[QK_K];
    float scales[16];
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < 16; ++ib) {
            scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1);
            if (std::fabs(scales[ib]) > max_abs_scale) {
                max_abs_scale = std::fabs(scales[ib]);
                max_scale = scales[ib];
            }
        }
        if (max_abs_scale < kGroupMaxEps) {
            std::memset(&y[i], 0, sizeof(BlockQ6_K));
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[i].d = f2h(1 / iscale);
        for (int ib = 0; ib < 16; ++ib) {
            const int v = nearest_int(iscale * scales[ib]);
            y[i].scales[ib] = static_cast<int8_t>(v < 127 ? v : 127);
        }
        for (int j = 0; j < 16; ++j) {
            const float d = h2f(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ++ii)
                L[16 * j + ii] = static_cast<int8_t>(clampi(nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
        }
        for (int h = 0; h < 2; ++h) {
            const int8_t* Lh = L + 128 * h;
            uint8_t* ql = y[i].ql + 64 * h;
            uint8_t* qh = y[i].qh + 32 * h;
            for (int l = 0; l < 32; ++l) {
                ql[l] = static_cast<uint8_t>((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
                ql[l + 32] = static_cast<uint8_t>((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
                qh[l] = static_cast<uint8_t>((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
            }
        }
    }
}

// ------------------------------------------------------------ Q8_K
void quantize_q8_K(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ8_K*>(dst);
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; ++j)
            if (std::fabs(x[j]) > amax) {
                amax = std::fabs(x[j]);
                max = x[j];
            }
        if (!amax) {
            std::memset(&y[i], 0, sizeof(BlockQ8_K));
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; ++j) {
            const int v = nearest_int(iscale * x[j]);
            y[i].qs[j] = static_cast<int8_t>(v < 127 ? v : 127);
        }
        for (int j = 0; j < 16; ++j) {
            int s = 0;
            for (int l = 0; l < 16; ++l) s += y[i].qs[16 * j + l];
            y[i].bsums[j] = static_cast<int16_t>(s);
        }
        y[i].d = 1 / iscale;
    }
}
void dequantize_q8_K(const void* src, float* y, int64_t n) {
    const auto* b = static_cast<const BlockQ8_K*>(src);
    for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K)
        for (int j = 0; j < QK_K; ++j) y[j] = b[i].d * b[i].qs[j];
}

} // namespace

void register_kquant_formats(FormatOps* t) {
    t[static_cast<int>(DType::Q2_K)] = {quantize_q2_K, dequantize_k<BlockQ2_K, unpack_q2_K>, dot_k<BlockQ2_K, unpack_q2_K>, DType::Q8_K};
    t[static_cast<int>(DType::Q3_K)] = {quantize_q3_K, dequantize_k<BlockQ3_K, unpack_q3_K>, dot_k<BlockQ3_K, unpack_q3_K>, DType::Q8_K};
    t[static_cast<int>(DType::Q4_K)] = {quantize_q4_K, dequantize_k<BlockQ4_K, unpack_q4_K>, dot_k<BlockQ4_K, unpack_q4_K>, DType::Q8_K};
    t[static_cast<int>(DType::Q5_K)] = {quantize_q5_K, dequantize_k<BlockQ5_K, unpack_q5_K>, dot_k<BlockQ5_K, unpack_q5_K>, DType::Q8_K};
    t[static_cast<int>(DType::Q6_K)] = {quantize_q6_K, dequantize_k<BlockQ6_K, unpack_q6_K>, dot_k<BlockQ6_K, unpack_q6_K>, DType::Q8_K};
    // Q8_K is an activation format: quantize/dequantize for tests, no weight kernels.
    t[static_cast<int>(DType::Q8_K)] = {quantize_q8_K, dequantize_q8_K, nullptr, DType::Q8_K};
}

} // namespace phi::quant
