/* The five bench layers through the portable and the Helium (MVE) kernels, one call each between
 * the region markers (firmware/markers.c), so the QEMU plugin counts each call's instructions.
 *
 * Layers: (a) conv 3x3 s1 SAME 16->16 on 32x32, (b) conv 1x1 64->64 on 25x5, (c) depthwise 3x3 64ch
 * on 25x5, (d) fully connected 256->128, (e) conv 3x3 s2 SAME 3->8 on 96x96; each with input zero
 * point -128 (the usual one after ReLU) and then 3. Regions come in pairs (portable, mve) in the
 * order of the lines printed: "layer <name> zp <zp> macs <macs> <ok|MISMATCH>". Returns non-zero on
 * any mismatch. Cortex-M with MVE only (built with -mcpu=cortex-m55).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ep_kernels.h"
#include "markers.h"

static int8_t g_input[96 * 96 * 3];
static int8_t g_filter[256 * 128];
static int8_t g_out_portable[48 * 48 * 8];
static int8_t g_out_mve[48 * 48 * 8];
static int32_t g_bias[256], g_mult[256], g_shift[256];
static int32_t g_scratch[4096];

static uint32_t g_rng = 0x9E3779B9u; /* xorshift32 */

static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 17;
    g_rng ^= g_rng << 5;
    return g_rng;
}

static void fill(int8_t *a, int32_t n)
{
    for (int32_t i = 0; i < n; ++i) {
        a[i] = (int8_t)(rnd() & 0xFFu);
    }
}

/* Per-channel requantization of the size a real layer has: shifts -9..-11. */
static ep_quant_t make_quant(int32_t channels, int32_t in_zp)
{
    for (int32_t c = 0; c < channels; ++c) {
        g_bias[c] = (int32_t)(rnd() % 20001u) - 10000;
        g_mult[c] = (int32_t)((1u << 30) + (rnd() & 0x3FFFFFFFu));
        g_shift[c] = -9 - (int32_t)(rnd() % 3u);
    }
    ep_quant_t q;
    q.input_offset = -in_zp;
    q.output_offset = -3;
    q.activation_min = -128;
    q.activation_max = 127;
    q.multiplier = g_mult;
    q.shift = g_shift;
    return q;
}

static int report(const char *name, int32_t zp, int32_t macs, int32_t n_out)
{
    const int bad = memcmp(g_out_portable, g_out_mve, (size_t)n_out) != 0;
    printf("layer %s zp %d macs %d %s\n", name, (int)zp, (int)macs, bad ? "MISMATCH" : "ok");
    return bad;
}

static int conv(const char *name, int32_t hw_h, int32_t hw_w, int32_t in_c, int32_t out_c, int32_t k, int32_t stride,
                int32_t zp)
{
    const ep_dims_t in_d = {1, hw_h, hw_w, in_c}, f_d = {out_c, k, k, in_c};
    const ep_dims_t out_d = {1, (hw_h + stride - 1) / stride, (hw_w + stride - 1) / stride, out_c}; /* SAME */
    const int32_t pad_h = (out_d.h - 1) * stride + k - hw_h, pad_w = (out_d.w - 1) * stride + k - hw_w;
    const ep_conv_params_t p = {stride, stride, 1, 1, pad_h > 0 ? pad_h / 2 : 0, pad_w > 0 ? pad_w / 2 : 0};
    fill(g_input, hw_h * hw_w * in_c);
    fill(g_filter, out_c * k * k * in_c);
    const ep_quant_t q = make_quant(out_c, zp);
    if (ep_conv2d_s8_scratch_size_mve(&in_d, &f_d, &out_d) > (int32_t)sizeof g_scratch) {
        printf("layer %s: scratch too large\n", name);
        return 1;
    }
    ep_region_begin();
    ep_conv2d_s8_portable(&p, &q, &in_d, g_input, &f_d, g_filter, g_bias, &out_d, g_out_portable, NULL);
    ep_region_end();
    ep_region_begin();
    ep_conv2d_s8_mve(&p, &q, &in_d, g_input, &f_d, g_filter, g_bias, &out_d, g_out_mve, g_scratch);
    ep_region_end();
    const int32_t n_out = out_d.h * out_d.w * out_c;
    return report(name, zp, n_out * k * k * in_c, n_out);
}

static int depthwise(const char *name, int32_t hw_h, int32_t hw_w, int32_t ch, int32_t k, int32_t zp)
{
    const ep_dims_t in_d = {1, hw_h, hw_w, ch}, f_d = {1, k, k, ch}, out_d = {1, hw_h, hw_w, ch}; /* SAME, s1 */
    const ep_conv_params_t p = {1, 1, 1, 1, (k - 1) / 2, (k - 1) / 2};
    fill(g_input, hw_h * hw_w * ch);
    fill(g_filter, k * k * ch);
    const ep_quant_t q = make_quant(ch, zp);
    if (ep_depthwise_conv2d_s8_scratch_size_mve(&in_d, &f_d, &out_d) > (int32_t)sizeof g_scratch) {
        printf("layer %s: scratch too large\n", name);
        return 1;
    }
    ep_region_begin();
    ep_depthwise_conv2d_s8_portable(&p, 1, &q, &in_d, g_input, &f_d, g_filter, g_bias, &out_d, g_out_portable, NULL);
    ep_region_end();
    ep_region_begin();
    ep_depthwise_conv2d_s8_mve(&p, 1, &q, &in_d, g_input, &f_d, g_filter, g_bias, &out_d, g_out_mve, g_scratch);
    ep_region_end();
    const int32_t n_out = hw_h * hw_w * ch;
    return report(name, zp, n_out * k * k, n_out);
}

static int fully_connected(const char *name, int32_t n_in, int32_t n_out, int32_t zp)
{
    fill(g_input, n_in);
    fill(g_filter, n_in * n_out);
    const ep_quant_t q = make_quant(n_out, zp);
    ep_region_begin();
    ep_fully_connected_s8_portable(&q, 1, n_in, n_out, g_input, g_filter, g_bias, g_out_portable, NULL);
    ep_region_end();
    ep_region_begin();
    ep_fully_connected_s8_mve(&q, 1, n_in, n_out, g_input, g_filter, g_bias, g_out_mve, NULL);
    ep_region_end();
    return report(name, zp, n_in * n_out, n_out);
}

int main(void)
{
    static const int32_t zps[2] = {-128, 3};
    int bad = 0;
    printf("backend %s\n", ep_backend_name());
    for (int i = 0; i < 2; ++i) {
        bad |= conv("a", 32, 32, 16, 16, 3, 1, zps[i]);
        bad |= conv("b", 25, 5, 64, 64, 1, 1, zps[i]);
        bad |= depthwise("c", 25, 5, 64, 3, zps[i]);
        bad |= fully_connected("d", 256, 128, zps[i]);
        bad |= conv("e", 96, 96, 3, 8, 3, 2, zps[i]);
    }
    printf("%s\n", bad ? "FAIL" : "PASS");
    return bad;
}
