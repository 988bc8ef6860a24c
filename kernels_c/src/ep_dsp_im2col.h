/* Shared pieces of the Cortex-M DSP kernels (*_dsp.c): intrinsics, unaligned word access and the
 * widening of int8 activations to int16 with the input offset added.
 *
 * The DSP code is compiled when the target has the DSP extension (EP_HAS_DSP_EXTENSION) or, on the host,
 * when EP_DSP_EMULATE is defined: then ep_acle_host.h supplies the intrinsics in plain C so the
 * tests can run the same code. Elsewhere EP_DSP_ENABLED stays undefined and the files are empty. */
#ifndef EP_DSP_IM2COL_H_
#define EP_DSP_IM2COL_H_

#include "ep_backend.h"

#if defined(EP_HAS_DSP_EXTENSION) || defined(EP_DSP_EMULATE)
#define EP_DSP_ENABLED 1

#include <stdint.h>
#include <string.h>

#include "ep_fixedpoint.h"
#include "ep_types.h"

#if defined(EP_HAS_DSP_EXTENSION)
#include <arm_acle.h>
#else
#include "ep_acle_host.h"
#endif

/* Keeps a hot loop nest out of its caller, so it gets the registers to itself. */
#if defined(__GNUC__)
#define EP_DSP_NOINLINE __attribute__((noinline))
#else
#define EP_DSP_NOINLINE
#endif

/* Word access through memcpy: no alignment or aliasing assumptions; one LDR/STR on Cortex-M. */
static inline int32_t ep_dsp_read32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline void ep_dsp_write32(void *p, int32_t v)
{
    memcpy(p, &v, 4);
}

/* SXTB16/SXTAB16 of bytes 1 and 3. The instructions can rotate their operand for free, but GCC 12
 * emits a separate ROR for __sxtb16(ror(x)), so on Arm we spell the rotated form out. */
#if defined(EP_HAS_DSP_EXTENSION) && defined(__GNUC__)
static inline int32_t ep_dsp_sxtb16_ror8(int32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

static inline int32_t ep_dsp_sxtab16_ror8(int32_t a, int32_t x)
{
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
#else
static inline int32_t ep_dsp_sxtb16_ror8(int32_t x)
{
    return __sxtb16((int32_t)((uint32_t)x >> 8));
}

static inline int32_t ep_dsp_sxtab16_ror8(int32_t a, int32_t x)
{
    return __sxtab16(a, (int32_t)((uint32_t)x >> 8));
}
#endif

/* Halfword packing: (a.lo, b.lo) and (a.hi, b.hi), low halfword first. One PKHBT / PKHTB on Arm,
 * where GCC 12 would emit two instructions for the C form. */
#if defined(EP_HAS_DSP_EXTENSION) && defined(__GNUC__)
static inline int32_t ep_dsp_pack_lo(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

static inline int32_t ep_dsp_pack_hi(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhtb %0, %2, %1, asr #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
#else
static inline int32_t ep_dsp_pack_lo(int32_t a, int32_t b)
{
    return (int32_t)(((uint32_t)a & 0xFFFFu) | ((uint32_t)b << 16));
}

static inline int32_t ep_dsp_pack_hi(int32_t a, int32_t b)
{
    return (int32_t)(((uint32_t)a >> 16) | ((uint32_t)b & 0xFFFF0000u));
}
#endif

/* Saturation to [-128, 127]: one SSAT on Arm. */
#if defined(EP_HAS_DSP_EXTENSION)
#define ep_dsp_ssat8(x) __ssat((x), 8)
#else
static inline int32_t ep_dsp_ssat8(int32_t x)
{
    return x < -128 ? -128 : (x > 127 ? 127 : x);
}
#endif

/* The input offset in both halfwords, for SXTAB16. */
static inline int32_t ep_dsp_pair16(int32_t v)
{
    return (int32_t)(((uint32_t)v & 0xFFFFu) | ((uint32_t)v << 16));
}

/* Widens n int8 values to int16 plus the offset (|x + offset| <= 255 by the callers' checks).
 * Each whole group of 4 is stored as (x0, x2, x1, x3): the order in which SXTB16 and its rotated
 * form split a word of 4 weights, so the dot product loops can feed both to SMLAD unchanged.
 * The last n % 4 values stay in natural order; dst must be 4-byte aligned. */
static inline void ep_dsp_widen_reordered(const int8_t *src, int16_t *dst, int32_t n, int32_t offset)
{
    const int32_t offset2 = ep_dsp_pair16(offset);
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const int32_t x = ep_dsp_read32(src + i);
        ep_dsp_write32(dst + i, __sxtab16(offset2, x));
        ep_dsp_write32(dst + i + 2, ep_dsp_sxtab16_ror8(offset2, x));
    }
    for (; i < n; ++i) {
        dst[i] = (int16_t)(src[i] + offset);
    }
}

/* Widens n int8 values to int16 plus the offset in natural order (dst need not be aligned). */
static inline void ep_dsp_widen_natural(const int8_t *src, int16_t *dst, int32_t n, int32_t offset)
{
    const int32_t offset2 = ep_dsp_pair16(offset);
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const int32_t x = ep_dsp_read32(src + i);
        const int32_t even = __sxtab16(offset2, x), odd = ep_dsp_sxtab16_ror8(offset2, x);
        ep_dsp_write32(dst + i, ep_dsp_pack_lo(even, odd));
        ep_dsp_write32(dst + i + 2, ep_dsp_pack_hi(even, odd));
    }
    for (; i < n; ++i) {
        dst[i] = (int16_t)(src[i] + offset);
    }
}

/* The offset trick needs the padding value -offset to be an int8: true for every real zero point. */
static inline int ep_dsp_offset_ok(int32_t input_offset)
{
    return input_offset >= -127 && input_offset <= 128;
}

/* Requantization parameters copied out of ep_quant_t: every int8 store may alias memory, so values
 * kept in locals spare the compiler reloading them after each output byte. */
typedef struct {
    const int32_t *multiplier, *shift;
    int32_t output_offset, activation_min, activation_max;
} ep_dsp_rq_t;

static inline ep_dsp_rq_t ep_dsp_rq_init(const ep_quant_t *quant)
{
    ep_dsp_rq_t r;
    r.multiplier = quant->multiplier;
    r.shift = quant->shift;
    r.output_offset = quant->output_offset;
    r.activation_min = quant->activation_min;
    r.activation_max = quant->activation_max;
    return r;
}

static inline int8_t ep_dsp_rq(ep_dsp_rq_t r, int32_t acc, int32_t multiplier, int32_t shift)
{
    return ep_requantize_fast(acc, multiplier, shift, r.output_offset, r.activation_min, r.activation_max);
}

#if defined(__GNUC__)
#define EP_DSP_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define EP_DSP_ALWAYS_INLINE inline
#endif

/* The fused activation's clamp; `full` (the whole int8 range: no activation) is a constant in each
 * caller, and then one SSAT does it. */
static EP_DSP_ALWAYS_INLINE int32_t ep_dsp_clamp(int full, int32_t v, int32_t lo, int32_t hi)
{
    if (full) {
        return ep_dsp_ssat8(v);
    }
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

/* Requantizes a block of accumulators channel by channel, acc[ch * pixels + p] to
 * out[p * out_stride + ch], for 1 or 2 pixels (`two`). Kept out of the dot product loops so that
 * each loop has the registers to itself; channels in the usual range take the one-shift form. */
static EP_DSP_ALWAYS_INLINE void ep_dsp_requant_impl(int full, int two, const int32_t *acc, int32_t channels,
                                                     ep_dsp_rq_t rq, int8_t *out, int32_t out_stride)
{
    const int32_t zp = rq.output_offset, lo = rq.activation_min, hi = rq.activation_max;
    for (int32_t ch = 0; ch < channels; ++ch) {
        const int32_t m = rq.multiplier[ch], sh = rq.shift[ch];
        const int32_t *a = acc + (two ? 2 * ch : ch);
        if (ep_rshift_form_applies(m, sh)) {
            const int32_t v0 = ep_multiply_by_quantized_multiplier_rshift(a[0], m, -sh) + zp;
            out[ch] = (int8_t)ep_dsp_clamp(full, v0, lo, hi);
            if (two) {
                const int32_t v1 = ep_multiply_by_quantized_multiplier_rshift(a[1], m, -sh) + zp;
                out[out_stride + ch] = (int8_t)ep_dsp_clamp(full, v1, lo, hi);
            }
        } else {
            out[ch] = ep_dsp_rq(rq, a[0], m, sh);
            if (two) {
                out[out_stride + ch] = ep_dsp_rq(rq, a[1], m, sh);
            }
        }
    }
}

/* rq.multiplier and rq.shift must point at the first of the `channels` channels; pixels is 1 or 2. */
static inline void ep_dsp_requant(const int32_t *acc, int32_t channels, int32_t pixels, ep_dsp_rq_t rq, int8_t *out,
                                  int32_t out_stride)
{
    const int full = rq.activation_min == -128 && rq.activation_max == 127;
    if (pixels == 2) {
        if (full) {
            ep_dsp_requant_impl(1, 1, acc, channels, rq, out, out_stride);
        } else {
            ep_dsp_requant_impl(0, 1, acc, channels, rq, out, out_stride);
        }
    } else if (full) {
        ep_dsp_requant_impl(1, 0, acc, channels, rq, out, out_stride);
    } else {
        ep_dsp_requant_impl(0, 0, acc, channels, rq, out, out_stride);
    }
}

#endif /* EP_HAS_DSP_EXTENSION || EP_DSP_EMULATE */
#endif /* EP_DSP_IM2COL_H_ */
