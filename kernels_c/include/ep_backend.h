/* Build-time backend selection. The compiler flags for the target pick the backend:
 *   -mcpu=cortex-m55 (Helium, integer MVE)      -> EP_BACKEND_MVE (checked first: the M55 also has DSP)
 *   -mcpu=cortex-m4/m7/m33 (DSP extension)      -> EP_BACKEND_DSP
 *   -march=armv8.2-a+dotprod (arm64 with SDOT)  -> EP_BACKEND_NEON_DOT
 *   any other arm64 / NEON target                -> EP_BACKEND_NEON
 *   anything else                                -> EP_BACKEND_PORTABLE
 * Define EP_BACKEND_PORTABLE yourself to force the plain C loops on any target. */
#ifndef EP_BACKEND_H_
#define EP_BACKEND_H_

#if defined(EP_BACKEND_PORTABLE)
#define EP_BACKEND_NAME "portable"
#elif defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#define EP_BACKEND_MVE 1
#define EP_BACKEND_NAME "mve"
#elif defined(__ARM_FEATURE_DSP) && !defined(__aarch64__)
#define EP_BACKEND_DSP 1
#define EP_BACKEND_NAME "dsp"
#elif defined(__ARM_FEATURE_DOTPROD) && defined(__aarch64__)
#define EP_BACKEND_NEON_DOT 1
#define EP_BACKEND_NAME "neon_dot"
#elif defined(__ARM_NEON) && defined(__aarch64__)
#define EP_BACKEND_NEON 1
#define EP_BACKEND_NAME "neon"
#else
#define EP_BACKEND_PORTABLE 1
#define EP_BACKEND_NAME "portable"
#endif

/* The Cortex-M DSP extension (SMLAD and friends) may be used: with the DSP backend, and with the
 * MVE backend for the kernels that have no MVE variant (the sparse formats); the M55 has both. */
#if (defined(EP_BACKEND_DSP) || defined(EP_BACKEND_MVE)) && defined(__ARM_FEATURE_DSP)
#define EP_HAS_DSP_EXTENSION 1
#endif

#endif /* EP_BACKEND_H_ */
