/* Portable C stand-ins for the ACLE DSP intrinsics the *_dsp.c kernels use, so the host test
 * build (-DEP_DSP_EMULATE) runs the very same kernel code. Semantics follow the Arm ARM:
 * halfword lanes are signed 16-bit, sums wrap modulo 2^32 like the instructions (no UB).
 * Only included when not compiling for an Arm core with the DSP extension. */
#ifndef EP_ACLE_HOST_H_
#define EP_ACLE_HOST_H_

#include <stdint.h>

static inline int32_t ep_host_lo16(int32_t x)
{
    return (int16_t)(uint16_t)((uint32_t)x & 0xFFFFu);
}

static inline int32_t ep_host_hi16(int32_t x)
{
    return (int16_t)(uint16_t)((uint32_t)x >> 16);
}

static inline int32_t ep_host_pack16(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16));
}

/* SXTB16: bytes 0 and 2, sign-extended into the two halfwords. */
static inline int32_t __sxtb16(int32_t x)
{
    return ep_host_pack16((int8_t)(uint8_t)((uint32_t)x & 0xFFu), (int8_t)(uint8_t)(((uint32_t)x >> 16) & 0xFFu));
}

/* SXTAB16: a's halfwords plus bytes 0 and 2 of x, sign-extended, each lane modulo 2^16. */
static inline int32_t __sxtab16(int32_t a, int32_t x)
{
    const int32_t b = __sxtb16(x);
    return ep_host_pack16(ep_host_lo16(a) + ep_host_lo16(b), ep_host_hi16(a) + ep_host_hi16(b));
}

/* SMLAD: acc + lo*lo + hi*hi, modulo 2^32. */
static inline int32_t __smlad(int32_t x, int32_t y, int32_t acc)
{
    const uint32_t p = (uint32_t)(ep_host_lo16(x) * ep_host_lo16(y)) + (uint32_t)(ep_host_hi16(x) * ep_host_hi16(y));
    return (int32_t)((uint32_t)acc + p);
}

static inline int32_t __smlabb(int32_t x, int32_t y, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(ep_host_lo16(x) * ep_host_lo16(y)));
}

static inline int32_t __smlatt(int32_t x, int32_t y, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(ep_host_hi16(x) * ep_host_hi16(y)));
}

#endif /* EP_ACLE_HOST_H_ */
