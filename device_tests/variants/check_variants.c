/* The build's dispatched variant of each dense int8 op against the portable one, bit for bit.
 *
 * Hundreds of random configurations per op from a fixed-seed PRNG (shapes, strides, dilations,
 * padding, depth multipliers, batches, odd and unit channel counts, quantization including
 * non-negative shifts and narrowed activation ranges), plus the five bench layers. Prints one
 * line per op, "<op>: <cases> cases, <mismatches> mismatches", and returns non-zero on any
 * mismatch. Plain C99 and printf only, static buffers, so it runs bare-metal as well as under
 * qemu-user.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ep_kernels.h"

/* Under AddressSanitizer, the unused tails of the static buffers are poisoned around each call, so
 * a variant reading or writing past its inputs, outputs or requested scratch is caught exactly. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#ifndef CASES_PER_OP /* -DCASES_PER_OP=3000 -DSEED=7 for a longer run */
#define CASES_PER_OP 300
#endif
#ifndef SEED
#define SEED 0x2545F491u
#endif
/* Sized for the bench layers, and to fit a 320 KiB Cortex-M7 next to its stack and heap. */
/* Buffer sizes fit the bench layers; smaller boards (Cortex-M4, 128 KiB) build with smaller ones
 * and -DBIG_CASES_OPTIONAL=1, which lets the fixed cases that do not fit be skipped. */
#ifndef MAX_IN
#define MAX_IN 28672
#endif
#ifndef MAX_OUT
#define MAX_OUT 18560
#endif
#ifndef MAX_FILTER
#define MAX_FILTER 32768
#endif
#define MAX_CH 256
#ifndef MAX_SCRATCH
#define MAX_SCRATCH (40 * 1024)
#endif
#ifndef BIG_CASES_OPTIONAL
#define BIG_CASES_OPTIONAL 0
#endif
#define GUARD 64

static int8_t g_input[MAX_IN];
static int8_t g_filter[MAX_FILTER];
static int32_t g_bias[MAX_CH];
static int32_t g_mult[MAX_CH];
static int32_t g_shift[MAX_CH];
static int8_t g_out_variant[MAX_OUT + GUARD];
static int8_t g_out_portable[MAX_OUT + GUARD];
static int32_t g_scratch[MAX_SCRATCH / 4];

/* xorshift32: the same sequence on every target. */
static uint32_t g_rng = SEED;

static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 17;
    g_rng ^= g_rng << 5;
    return g_rng;
}

static int32_t rnd_range(int32_t lo, int32_t hi) /* inclusive */
{
    return lo + (int32_t)(rnd() % (uint32_t)(hi - lo + 1));
}

static int chance(int percent)
{
    return (int32_t)(rnd() % 100u) < percent;
}

static void fill_int8(int8_t *a, int32_t n, int sparse)
{
    const int zero_pct = sparse ? rnd_range(0, 90) : 0;
    for (int32_t i = 0; i < n; ++i) {
        a[i] = chance(zero_pct) ? 0 : (int8_t)rnd_range(-128, 127);
    }
}

static int32_t ilog2(uint32_t x)
{
    int32_t r = -1;
    while (x) {
        x >>= 1;
        ++r;
    }
    return r;
}

/* Per-channel requantization sized to the accumulator's spread (fan_in products of about 74^2),
 * so most outputs land inside int8; a case in five also gets shifts >= 0 on some channels. */
static void random_quant(ep_quant_t *q, int32_t channels, int32_t fan_in)
{
    const int general = chance(20);
    int32_t spread = 5500;
    for (int32_t f = fan_in; f > 1; f /= 4) {
        spread *= 2; /* about sqrt(fan_in) */
    }
    const int32_t base = -(ilog2((uint32_t)spread) - 6);
    for (int32_t c = 0; c < channels; ++c) {
        g_mult[c] = (int32_t)((1u << 30) + (rnd() & 0x3FFFFFFFu));
        g_shift[c] = base + rnd_range(-2, 2);
        if (g_shift[c] > -1 && !general) {
            g_shift[c] = -1;
        }
        if (general && chance(30)) {
            g_shift[c] = rnd_range(0, 2);
        }
        if (g_shift[c] < -31) {
            g_shift[c] = -31;
        }
    }
    const int32_t in_zp = chance(10) ? (chance(50) ? -128 : 127) : rnd_range(-128, 127);
    q->input_offset = -in_zp;
    q->output_offset = rnd_range(-128, 127);
    q->activation_min = -128;
    q->activation_max = 127;
    if (chance(40)) { /* a fused RELU/RELU6-like range */
        q->activation_min = rnd_range(-128, 0);
        q->activation_max = rnd_range(q->activation_min, 127);
    }
    q->multiplier = g_mult;
    q->shift = g_shift;
}

static void fill_bias(int32_t channels, const int32_t **bias)
{
    for (int32_t c = 0; c < channels; ++c) {
        g_bias[c] = rnd_range(-30000, 30000);
    }
    *bias = chance(85) ? g_bias : NULL;
}

/* TFLite's output size and padding for SAME or VALID. */
static int32_t out_size(int32_t in, int32_t k, int32_t stride, int32_t dilation, int same, int32_t *pad)
{
    const int32_t eff = (k - 1) * dilation + 1;
    const int32_t out = same ? (in + stride - 1) / stride : (in - eff + stride) / stride;
    const int32_t total = (out - 1) * stride + eff - in;
    *pad = same && total > 0 ? total / 2 : 0;
    return out;
}

typedef struct {
    int32_t cases, mismatches, reported;
} tally_t;

static int compare(tally_t *t, const char *op, int32_t n, const char *what)
{
    t->cases++;
    int bad = memcmp(g_out_variant, g_out_portable, (size_t)n) != 0;
    for (int32_t i = n; i < n + GUARD; ++i) {
        bad |= g_out_variant[i] != 0x5A; /* the variant wrote past the output */
    }
    if (bad) {
        t->mismatches++;
        if (t->reported++ < 5) {
            int32_t i = 0;
            while (i < n && g_out_variant[i] == g_out_portable[i]) {
                ++i;
            }
            printf("MISMATCH %s case %d: %s (first at %d of %d)\n", op, (int)t->cases, what, (int)i, (int)n);
        }
    }
    return bad;
}

/* Poisons (on = 1) or unpoisons everything past the sizes the call may touch. */
static void guard(int on, int32_t n_in, int32_t n_f, int32_t channels, int32_t n_out, int32_t scratch)
{
    struct {
        void *base;
        size_t used, size;
    } r[] = {
        {g_input, (size_t)n_in, sizeof g_input},        {g_filter, (size_t)n_f, sizeof g_filter},
        {g_bias, (size_t)channels * 4, sizeof g_bias},  {g_mult, (size_t)channels * 4, sizeof g_mult},
        {g_shift, (size_t)channels * 4, sizeof g_shift}, {g_out_variant, (size_t)n_out, sizeof g_out_variant},
        {g_scratch, (size_t)scratch, sizeof g_scratch},
    };
    for (unsigned i = 0; i < sizeof r / sizeof r[0]; ++i) {
        if (on) {
            POISON((char *)r[i].base + r[i].used, r[i].size - r[i].used);
        } else {
            UNPOISON(r[i].base, r[i].size);
        }
    }
}

static void clear_outputs(void)
{
    memset(g_out_variant, 0x5A, sizeof g_out_variant);
    memset(g_out_portable, 0x33, sizeof g_out_portable);
}

/* ---- CONV_2D ---------------------------------------------------------------------------- */

typedef struct {
    int32_t batch, in_h, in_w, in_c, out_c, k_h, k_w, stride_h, stride_w, dil_h, dil_w, same;
} conv_case_t;

static void run_conv(tally_t *t, const conv_case_t *c, int must)
{
    ep_conv_params_t p;
    ep_dims_t in_d = {c->batch, c->in_h, c->in_w, c->in_c};
    ep_dims_t f_d = {c->out_c, c->k_h, c->k_w, c->in_c};
    ep_dims_t out_d = {c->batch, 0, 0, c->out_c};
    p.stride_h = c->stride_h, p.stride_w = c->stride_w, p.dilation_h = c->dil_h, p.dilation_w = c->dil_w;
    out_d.h = out_size(c->in_h, c->k_h, c->stride_h, c->dil_h, c->same, &p.pad_h);
    out_d.w = out_size(c->in_w, c->k_w, c->stride_w, c->dil_w, c->same, &p.pad_w);
    const int32_t n_in = c->batch * c->in_h * c->in_w * c->in_c;
    const int32_t n_f = c->out_c * c->k_h * c->k_w * c->in_c;
    const int32_t n_out = c->batch * out_d.h * out_d.w * c->out_c;
    const int32_t scratch = ep_conv2d_s8_scratch_size(&in_d, &f_d, &out_d);
    char what[160];
    snprintf(what, sizeof what, "n%d %dx%dx%d -> %d, k%dx%d s%d,%d d%d,%d %s, scratch %d", (int)c->batch,
             (int)c->in_h, (int)c->in_w, (int)c->in_c, (int)c->out_c, (int)c->k_h, (int)c->k_w, (int)c->stride_h,
             (int)c->stride_w, (int)c->dil_h, (int)c->dil_w, c->same ? "SAME" : "VALID", (int)scratch);
    if (out_d.h < 1 || out_d.w < 1 || n_in > MAX_IN || n_f > MAX_FILTER || n_out > MAX_OUT ||
        c->out_c > MAX_CH || scratch > MAX_SCRATCH || scratch < 0) {
        if (must && !BIG_CASES_OPTIONAL) { /* a fixed case must run */
            printf("SKIPPED conv2d case (too large for the static buffers): %s\n", what);
            t->mismatches++;
        }
        return;
    }
    ep_quant_t q;
    const int32_t *bias;
    fill_int8(g_input, n_in, 0);
    fill_int8(g_filter, n_f, 1);
    fill_bias(c->out_c, &bias);
    random_quant(&q, c->out_c, c->k_h * c->k_w * c->in_c);
    clear_outputs();
    memset(g_scratch, 0xA5, sizeof g_scratch);
    guard(1, n_in, n_f, c->out_c, n_out, scratch);
    ep_conv2d_s8(&p, &q, &in_d, g_input, &f_d, g_filter, bias, &out_d, g_out_variant, scratch ? g_scratch : NULL);
    guard(0, 0, 0, 0, 0, 0);
    ep_conv2d_s8_portable(&p, &q, &in_d, g_input, &f_d, g_filter, bias, &out_d, g_out_portable, NULL);
    compare(t, "conv2d", n_out, what);
}

static void check_conv(tally_t *t)
{
    /* The bench layers (a), (b), (e), then edge cases, then random ones. */
    static const conv_case_t fixed[] = {
        {1, 32, 32, 16, 16, 3, 3, 1, 1, 1, 1, 1}, {1, 25, 5, 64, 64, 1, 1, 1, 1, 1, 1, 1},
        {1, 96, 96, 3, 8, 3, 3, 2, 2, 1, 1, 1},   {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0},
        {2, 3, 3, 16, 17, 1, 1, 1, 1, 1, 1, 0},   {1, 4, 5, 32, 48, 1, 1, 1, 1, 1, 1, 1},
        {1, 5, 5, 1, 1, 5, 5, 1, 1, 1, 1, 1},     {1, 7, 6, 5, 33, 3, 2, 2, 3, 2, 1, 1},
        {3, 2, 9, 7, 3, 1, 3, 1, 1, 1, 3, 0},     {1, 9, 9, 16, 16, 3, 3, 3, 3, 2, 2, 1},
    };
    for (unsigned i = 0; i < sizeof fixed / sizeof fixed[0]; ++i) {
        run_conv(t, &fixed[i], 1);
    }
    while (t->cases < CASES_PER_OP) {
        conv_case_t c;
        c.batch = rnd_range(1, 3);
        c.in_h = rnd_range(1, 12);
        c.in_w = rnd_range(1, 12);
        c.in_c = chance(30) ? 16 * rnd_range(1, 4) : rnd_range(1, 40);
        c.out_c = chance(30) ? 16 * rnd_range(1, 3) : rnd_range(1, 40);
        c.k_h = rnd_range(1, 5);
        c.k_w = rnd_range(1, 5);
        if (chance(30)) {
            c.k_h = c.k_w = 1;
        }
        c.stride_h = rnd_range(1, 3);
        c.stride_w = rnd_range(1, 3);
        c.dil_h = chance(25) ? rnd_range(2, 3) : 1;
        c.dil_w = chance(25) ? rnd_range(2, 3) : 1;
        c.same = chance(60);
        const int32_t eff_h = (c.k_h - 1) * c.dil_h + 1, eff_w = (c.k_w - 1) * c.dil_w + 1;
        if (!c.same && (eff_h > c.in_h || eff_w > c.in_w)) {
            continue;
        }
        run_conv(t, &c, 0); /* draws too large for the buffers are redrawn */
    }
}

/* ---- DEPTHWISE_CONV_2D ------------------------------------------------------------------ */

typedef struct {
    int32_t batch, in_h, in_w, in_c, mult, k_h, k_w, stride_h, stride_w, dil_h, dil_w, same;
} dw_case_t;

static void run_dw(tally_t *t, const dw_case_t *c, int must)
{
    ep_conv_params_t p;
    const int32_t out_c = c->in_c * c->mult;
    ep_dims_t in_d = {c->batch, c->in_h, c->in_w, c->in_c};
    ep_dims_t f_d = {1, c->k_h, c->k_w, out_c};
    ep_dims_t out_d = {c->batch, 0, 0, out_c};
    p.stride_h = c->stride_h, p.stride_w = c->stride_w, p.dilation_h = c->dil_h, p.dilation_w = c->dil_w;
    out_d.h = out_size(c->in_h, c->k_h, c->stride_h, c->dil_h, c->same, &p.pad_h);
    out_d.w = out_size(c->in_w, c->k_w, c->stride_w, c->dil_w, c->same, &p.pad_w);
    const int32_t n_in = c->batch * c->in_h * c->in_w * c->in_c;
    const int32_t n_f = c->k_h * c->k_w * out_c;
    const int32_t n_out = c->batch * out_d.h * out_d.w * out_c;
    const int32_t scratch = ep_depthwise_conv2d_s8_scratch_size(&in_d, &f_d, &out_d);
    char what[160];
    snprintf(what, sizeof what, "n%d %dx%dx%d x%d, k%dx%d s%d,%d d%d,%d %s, scratch %d", (int)c->batch,
             (int)c->in_h, (int)c->in_w, (int)c->in_c, (int)c->mult, (int)c->k_h, (int)c->k_w, (int)c->stride_h,
             (int)c->stride_w, (int)c->dil_h, (int)c->dil_w, c->same ? "SAME" : "VALID", (int)scratch);
    if (out_d.h < 1 || out_d.w < 1 || n_in > MAX_IN || n_f > MAX_FILTER || n_out > MAX_OUT || out_c > MAX_CH ||
        scratch > MAX_SCRATCH || scratch < 0) {
        if (must && !BIG_CASES_OPTIONAL) { /* a fixed case must run */
            printf("SKIPPED depthwise_conv2d case (too large for the static buffers): %s\n", what);
            t->mismatches++;
        }
        return;
    }
    ep_quant_t q;
    const int32_t *bias;
    fill_int8(g_input, n_in, 0);
    fill_int8(g_filter, n_f, 1);
    fill_bias(out_c, &bias);
    random_quant(&q, out_c, c->k_h * c->k_w);
    clear_outputs();
    memset(g_scratch, 0xA5, sizeof g_scratch);
    guard(1, n_in, n_f, out_c, n_out, scratch);
    ep_depthwise_conv2d_s8(&p, c->mult, &q, &in_d, g_input, &f_d, g_filter, bias, &out_d, g_out_variant,
                           scratch ? g_scratch : NULL);
    guard(0, 0, 0, 0, 0, 0);
    ep_depthwise_conv2d_s8_portable(&p, c->mult, &q, &in_d, g_input, &f_d, g_filter, bias, &out_d, g_out_portable,
                                    NULL);
    compare(t, "depthwise_conv2d", n_out, what);
}

static void check_dw(tally_t *t)
{
    /* The bench layer (c), then edge cases, then random ones. */
    static const dw_case_t fixed[] = {
        {1, 25, 5, 64, 1, 3, 3, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0},
        {1, 8, 8, 32, 1, 3, 3, 2, 2, 1, 1, 1},  {2, 6, 7, 17, 1, 5, 5, 1, 1, 1, 1, 1},
        {1, 5, 9, 3, 4, 3, 3, 1, 2, 1, 1, 1},   {1, 9, 9, 16, 1, 3, 3, 1, 1, 2, 3, 1},
        {1, 4, 4, 1, 1, 7, 7, 1, 1, 1, 1, 1},   {1, 10, 10, 48, 1, 3, 9, 1, 1, 1, 1, 0},
        /* taller than wide, 3 wide, channels a multiple of 16: the dot-product column path */
        {2, 12, 3, 32, 1, 3, 3, 1, 1, 1, 1, 1}, {1, 11, 4, 16, 1, 4, 3, 2, 1, 1, 1, 1},
        {1, 12, 5, 16, 1, 2, 3, 1, 2, 2, 1, 0}, {1, 9, 6, 48, 1, 1, 3, 3, 3, 3, 1, 1},
        {1, 10, 2, 16, 1, 3, 3, 1, 1, 1, 1, 1}, {1, 7, 1, 16, 1, 3, 3, 1, 1, 3, 1, 1},
    };
    for (unsigned i = 0; i < sizeof fixed / sizeof fixed[0]; ++i) {
        run_dw(t, &fixed[i], 1);
    }
    while (t->cases < CASES_PER_OP) {
        dw_case_t c;
        c.batch = rnd_range(1, 3);
        c.in_h = rnd_range(1, 12);
        c.in_w = rnd_range(1, 12);
        c.in_c = chance(30) ? 16 * rnd_range(1, 4) : rnd_range(1, 40);
        c.mult = chance(70) ? 1 : rnd_range(2, 4);
        c.k_h = rnd_range(1, 5);
        c.k_w = rnd_range(1, 6);
        if (chance(40)) {
            c.k_h = c.k_w = 3;
        }
        c.stride_h = rnd_range(1, 3);
        c.stride_w = rnd_range(1, 3);
        c.dil_h = chance(25) ? rnd_range(2, 3) : 1;
        c.dil_w = chance(25) ? rnd_range(2, 3) : 1;
        c.same = chance(60);
        const int32_t eff_h = (c.k_h - 1) * c.dil_h + 1, eff_w = (c.k_w - 1) * c.dil_w + 1;
        if (!c.same && (eff_h > c.in_h || eff_w > c.in_w)) {
            continue;
        }
        run_dw(t, &c, 0);
    }
    /* More random ones for the dot-product column path: 3 wide, taller than wide, channels a
     * multiple of 16 (a few draws miss it on purpose: dilated columns, short outputs). */
    for (int n = 0; n < 100; ++n) {
        dw_case_t c;
        c.batch = rnd_range(1, 2);
        c.in_w = rnd_range(1, 6);
        c.in_h = rnd_range(c.in_w + 1, 16);
        c.in_c = 16 * rnd_range(1, 4);
        c.mult = 1;
        c.k_h = rnd_range(1, 4);
        c.k_w = 3;
        c.stride_h = rnd_range(1, 3);
        c.stride_w = rnd_range(1, 2);
        c.dil_h = chance(25) ? rnd_range(2, 3) : 1;
        c.dil_w = chance(10) ? 2 : 1;
        c.same = chance(60);
        const int32_t eff_h = (c.k_h - 1) * c.dil_h + 1, eff_w = (c.k_w - 1) * c.dil_w + 1;
        if (!c.same && (eff_h > c.in_h || eff_w > c.in_w)) {
            continue;
        }
        run_dw(t, &c, 0);
    }
}

/* ---- FULLY_CONNECTED -------------------------------------------------------------------- */

static void run_fc(tally_t *t, int32_t batches, int32_t in_f, int32_t out_f, int must)
{
    const int32_t scratch = ep_fully_connected_s8_scratch_size(batches, in_f, out_f);
    char what[96];
    snprintf(what, sizeof what, "batches %d, %d -> %d, scratch %d", (int)batches, (int)in_f, (int)out_f,
             (int)scratch);
    if (batches * in_f > MAX_IN || in_f * out_f > MAX_FILTER || batches * out_f > MAX_OUT || out_f > MAX_CH ||
        scratch > MAX_SCRATCH || scratch < 0) {
        if (must && !BIG_CASES_OPTIONAL) { /* a fixed case must run */
            printf("SKIPPED fully_connected case (too large for the static buffers): %s\n", what);
            t->mismatches++;
        }
        return;
    }
    ep_quant_t q;
    const int32_t *bias;
    fill_int8(g_input, batches * in_f, 0);
    fill_int8(g_filter, in_f * out_f, 1);
    fill_bias(out_f, &bias);
    random_quant(&q, out_f, in_f);
    clear_outputs();
    memset(g_scratch, 0xA5, sizeof g_scratch);
    guard(1, batches * in_f, in_f * out_f, out_f, batches * out_f, scratch);
    ep_fully_connected_s8(&q, batches, in_f, out_f, g_input, g_filter, bias, g_out_variant,
                          scratch ? g_scratch : NULL);
    guard(0, 0, 0, 0, 0, 0);
    ep_fully_connected_s8_portable(&q, batches, in_f, out_f, g_input, g_filter, bias, g_out_portable, NULL);
    compare(t, "fully_connected", batches * out_f, what);
}

static void check_fc(tally_t *t)
{
    /* The bench layer (d), then edge cases, then random ones. */
    run_fc(t, 1, 256, 128, 1);
    run_fc(t, 1, 1, 1, 1);
    run_fc(t, 3, 64, 4, 1);
    run_fc(t, 2, 17, 5, 1);
    run_fc(t, 1, 200, 7, 1);
    run_fc(t, 4, 1000, 3, 1);
    while (t->cases < CASES_PER_OP) {
        const int32_t batches = chance(60) ? 1 : rnd_range(2, 5);
        const int32_t in_f = chance(30) ? 16 * rnd_range(1, 20) : rnd_range(1, 300);
        const int32_t out_f = rnd_range(1, 70);
        run_fc(t, batches, in_f, out_f, 0);
    }
}

int main(void)
{
    tally_t conv = {0, 0, 0}, dw = {0, 0, 0}, fc = {0, 0, 0};
    printf("backend %s\n", ep_backend_name());
    check_conv(&conv);
    printf("conv2d: %d cases, %d mismatches\n", (int)conv.cases, (int)conv.mismatches);
    check_dw(&dw);
    printf("depthwise_conv2d: %d cases, %d mismatches\n", (int)dw.cases, (int)dw.mismatches);
    check_fc(&fc);
    printf("fully_connected: %d cases, %d mismatches\n", (int)fc.cases, (int)fc.mismatches);
    const int failed = conv.mismatches + dw.mismatches + fc.mismatches;
    printf("%s\n", failed ? "FAIL" : "PASS");
    return failed ? 1 : 0;
}
