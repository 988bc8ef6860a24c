/* DEPTHWISE_CONV_2D, int8, Helium (MVE). MVE has no lane-wise multiply-accumulate of two vectors,
 * so a tap is a multiply and an add per vector. Depth multiplier 1: eight channels per vector pair,
 * two output pixels at a time sharing each weight load; the int8 values widen to int16 on loading,
 * and VMULLB/VMULLT give the exact int32 products of the even and odd channels.
 * Other depth multipliers: four output channels per int32 vector, four pixels at a time, each lane's
 * input channel fetched with one VLDRB gather. Pixels whose window lies inside the image read the
 * input in place; the others are copied (im2col) with padded taps set to -input_offset, so every
 * window has all its taps and the input offset folds into the bias once per call. */
#include "ep_mve_helpers.h"

#include "ep_kernels.h"

static int32_t ep_dw_mve_c8(int32_t channels)
{
    return (channels + 7) & ~7;
}

static int32_t ep_dw_mve_window(const ep_dims_t *input_dims, const ep_dims_t *filter_dims)
{
    return (filter_dims->h * filter_dims->w * input_dims->c + 3) & ~3;
}

/* Built on every target (plain arithmetic), so the compiler can size the M55's scratch on the host. */
int32_t ep_depthwise_conv2d_s8_scratch_size_mve(const ep_dims_t *input_dims, const ep_dims_t *filter_dims,
                                                const ep_dims_t *output_dims)
{
    (void)output_dims;
    /* Folded biases, input channel offsets and the accumulators of four pixels (int32, 6 per output
     * channel, channels rounded up to a multiple of 8 for whole vector pairs), the tap offsets of
     * inside and of im2col windows (int32 per tap), then four windows. */
    return 24 * ep_dw_mve_c8(filter_dims->c) + 8 * filter_dims->h * filter_dims->w +
           4 * ep_dw_mve_window(input_dims, filter_dims);
}

#if defined(EP_MVE_ENABLED)

/* Up to four pixels whose windows share one layout: tap t of pixel j at in[j] + tap_offsets[t],
 * input channels adjacent. */
typedef struct {
    const int8_t *in[4];
    int8_t *out[4];
    int32_t n;
} ep_dw_group_t;

typedef struct {
    const int8_t *filter;
    const int32_t *bias_eff, *multiplier, *shift;
    const uint32_t *in_channel; /* byte offset of each output channel's input channel (multiplier > 1) */
    int32_t *acc;               /* accumulators of a group, acc[j * acc_stride + oc] */
    int32_t acc_stride;         /* out_c rounded up to a multiple of 8 */
    int32_t taps, out_c, output_offset, activation_min, activation_max;
} ep_dw_ctx_t;

/* Loads four lanes of a tap: the input channels of output channels oc..oc+3. */
#define EP_DW_MVE_LOAD_X(ptr)                                                                          \
    (gather ? (tail ? vldrbq_gather_offset_z_s32(ptr, ch, p) : vldrbq_gather_offset_s32(ptr, ch))   \
            : (tail ? vldrbq_z_s32(ptr, p) : vldrbq_s32(ptr)))

/* Depth multiplier > 1: one block of four output channels starting at oc for the four pixels of g,
 * accumulators to ctx->acc. `tail` (a partial block: loads predicated) and `gather` are constants
 * at each call. */
EP_MVE_INLINE void ep_dw_mve_block(const ep_dw_ctx_t *ctx, const ep_dw_group_t *g, const int32_t *tap_offsets,
                                   int32_t oc, int tail, int gather)
{
    const mve_pred16_t p = vctp32q((uint32_t)(ctx->out_c - oc));
    const uint32x4_t ch = gather ? (tail ? vldrwq_z_u32(ctx->in_channel + oc, p) : vldrwq_u32(ctx->in_channel + oc))
                                 : vdupq_n_u32(0);
    const int32_t x_off = gather ? 0 : oc; /* without a gather, input channel == output channel */
    const int32x4_t init = tail ? vldrwq_z_s32(ctx->bias_eff + oc, p) : vldrwq_s32(ctx->bias_eff + oc);
    int32x4_t acc0 = init, acc1 = init, acc2 = init, acc3 = init;
    const int8_t *in0 = g->in[0] + x_off, *in1 = g->in[1] + x_off, *in2 = g->in[2] + x_off, *in3 = g->in[3] + x_off;
    const int8_t *w = ctx->filter + oc;
    const int32_t w_step = ctx->out_c;
    const int32_t *tap = tap_offsets;
    for (int32_t t = ctx->taps; t > 0; --t, w += w_step) {
        const int32_t o = *tap++;
        const int32x4_t wv = tail ? vldrbq_z_s32(w, p) : vldrbq_s32(w);
        acc0 = vaddq_s32(acc0, vmulq_s32(EP_DW_MVE_LOAD_X(in0 + o), wv));
        acc1 = vaddq_s32(acc1, vmulq_s32(EP_DW_MVE_LOAD_X(in1 + o), wv));
        acc2 = vaddq_s32(acc2, vmulq_s32(EP_DW_MVE_LOAD_X(in2 + o), wv));
        acc3 = vaddq_s32(acc3, vmulq_s32(EP_DW_MVE_LOAD_X(in3 + o), wv));
    }
    int32_t *acc = ctx->acc + oc;
    vstrwq_s32(acc, acc0); /* lanes past out_c land in the rounding of acc_stride */
    vstrwq_s32(acc + ctx->acc_stride, acc1);
    vstrwq_s32(acc + 2 * ctx->acc_stride, acc2);
    vstrwq_s32(acc + 3 * ctx->acc_stride, acc3);
}

/* Depth multiplier 1: eight channels from oc for the pixels whose windows start at in0 and in1,
 * accumulators to acc0[oc..] and acc1[oc..] in channel order (VST2 re-interleaves the even and odd
 * channels). `tail` (fewer than eight channels left: loads predicated) is a constant at each call. */
EP_MVE_INLINE void ep_dw_mve_pair8(const ep_dw_ctx_t *ctx, const int8_t *in0, const int8_t *in1, int32_t *acc0,
                                   int32_t *acc1, const int32_t *tap_offsets, int32_t oc, int tail)
{
    const mve_pred16_t p = vctp16q((uint32_t)(ctx->out_c - oc));
    const int32x4x2_t bias = vld2q_s32(ctx->bias_eff + oc);
    int32x4_t even0 = bias.val[0], odd0 = bias.val[1], even1 = even0, odd1 = odd0;
    const int8_t *w = ctx->filter + oc;
    const int32_t w_step = ctx->out_c;
    const int32_t *tap = tap_offsets;
    in0 += oc;
    in1 += oc;
    for (int32_t t = ctx->taps; t > 0; --t, w += w_step) {
        const int32_t o = *tap++;
        const int16x8_t wv = tail ? vldrbq_z_s16(w, p) : vldrbq_s16(w);
        const int16x8_t x0 = tail ? vldrbq_z_s16(in0 + o, p) : vldrbq_s16(in0 + o);
        const int16x8_t x1 = tail ? vldrbq_z_s16(in1 + o, p) : vldrbq_s16(in1 + o);
        even0 = vaddq_s32(even0, vmullbq_int_s16(x0, wv));
        odd0 = vaddq_s32(odd0, vmulltq_int_s16(x0, wv));
        even1 = vaddq_s32(even1, vmullbq_int_s16(x1, wv));
        odd1 = vaddq_s32(odd1, vmulltq_int_s16(x1, wv));
    }
    int32x4x2_t r;
    r.val[0] = even0;
    r.val[1] = odd0;
    vst2q_s32(acc0 + oc, r); /* lanes past out_c land in the rounding of acc_stride */
    r.val[0] = even1;
    r.val[1] = odd1;
    vst2q_s32(acc1 + oc, r);
}

/* Requantizes the group's accumulators (ctx->acc[j * acc_stride + oc]) into its pixels' outputs,
 * four channels per vector: a separate pass, so the accumulation loops keep their registers. */
static EP_MVE_NOINLINE void ep_dw_mve_requantize(const ep_dw_ctx_t *ctx, const ep_dw_group_t *g)
{
    const int32_t out_c = ctx->out_c, full = out_c & ~3;
    const int32_t out_offset = ctx->output_offset, act_min = ctx->activation_min, act_max = ctx->activation_max;
    const int32_t *multiplier = ctx->multiplier, *shift = ctx->shift;
    for (int32_t j = 0; j < g->n; ++j) {
        const int32_t *acc = ctx->acc + j * ctx->acc_stride;
        int8_t *out = g->out[j];
        int32_t oc = 0;
        for (; oc < full; oc += 4) {
            const int32x4_t v = ep_mve_mbqm(vldrwq_s32(acc + oc), vldrwq_s32(multiplier + oc), vldrwq_s32(shift + oc));
            vstrbq_s32(out + oc, ep_mve_clamp(v, out_offset, act_min, act_max));
        }
        if (oc < out_c) {
            const mve_pred16_t p = vctp32q((uint32_t)(out_c - oc));
            const int32x4_t v = ep_mve_mbqm(vldrwq_z_s32(acc + oc, p), vldrwq_z_s32(multiplier + oc, p),
                                            vldrwq_z_s32(shift + oc, p));
            vstrbq_p_s32(out + oc, ep_mve_clamp(v, out_offset, act_min, act_max), p);
        }
    }
}

static EP_MVE_NOINLINE void ep_dw_mve_group(const ep_dw_ctx_t *ctx, ep_dw_group_t *g, const int32_t *tap_offsets,
                                            int gather)
{
    for (int32_t j = g->n; j < 4; ++j) { /* a partial group repeats its first pixel, not stored */
        g->in[j] = g->in[0];
    }
    if (gather) {
        const int32_t full = ctx->out_c & ~3;
        int32_t oc = 0;
        for (; oc < full; oc += 4) {
            ep_dw_mve_block(ctx, g, tap_offsets, oc, 0, 1);
        }
        if (oc < ctx->out_c) {
            ep_dw_mve_block(ctx, g, tap_offsets, oc, 1, 1);
        }
    } else {
        const int32_t full = ctx->out_c & ~7;
        for (int32_t j = 0; j < g->n; j += 2) {
            int32_t *acc0 = ctx->acc + j * ctx->acc_stride, *acc1 = acc0 + ctx->acc_stride;
            int32_t oc = 0;
            for (; oc < full; oc += 8) {
                ep_dw_mve_pair8(ctx, g->in[j], g->in[j + 1], acc0, acc1, tap_offsets, oc, 0);
            }
            if (oc < ctx->out_c) {
                ep_dw_mve_pair8(ctx, g->in[j], g->in[j + 1], acc0, acc1, tap_offsets, oc, 1);
            }
        }
    }
    ep_dw_mve_requantize(ctx, g);
    g->n = 0;
}

void ep_depthwise_conv2d_s8_mve(const ep_conv_params_t *params, int32_t depth_multiplier, const ep_quant_t *quant,
                                const ep_dims_t *input_dims, const int8_t *input, const ep_dims_t *filter_dims,
                                const int8_t *filter, const int32_t *bias, const ep_dims_t *output_dims,
                                int8_t *output, void *scratch)
{
    if (!ep_mve_offset_ok(quant->input_offset) || scratch == NULL) {
        ep_depthwise_conv2d_s8_portable(params, depth_multiplier, quant, input_dims, input, filter_dims, filter, bias,
                                        output_dims, output, NULL);
        return;
    }
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t taps = k_h * k_w, window = ep_dw_mve_window(input_dims, filter_dims);
    const int32_t c8 = ep_dw_mve_c8(out_c);
    int32_t *bias_eff = (int32_t *)scratch;
    uint32_t *in_channel = (uint32_t *)(bias_eff + c8);
    int32_t *acc = (int32_t *)(in_channel + c8);
    int32_t *inside_taps = acc + 4 * c8, *edge_taps = inside_taps + taps;
    int8_t *windows = (int8_t *)(edge_taps + taps);
    const int gather = depth_multiplier != 1;

    /* bias + input_offset * (sum of the channel's taps), four channels at a time. */
    for (int32_t oc = 0; oc < out_c; oc += 4) {
        const mve_pred16_t p = vctp32q((uint32_t)(out_c - oc));
        int32x4_t sum = vdupq_n_s32(0);
        for (int32_t t = 0; t < taps; ++t) {
            sum = vaddq_s32(sum, vldrbq_z_s32(filter + t * out_c + oc, p));
        }
        const int32x4_t b = bias ? vldrwq_z_s32(bias + oc, p) : vdupq_n_s32(0);
        vstrwq_p_s32(bias_eff + oc, vmlaq_n_s32(b, sum, quant->input_offset), p);
    }
    if (gather) {
        for (int32_t oc = 0; oc < out_c; ++oc) {
            in_channel[oc] = (uint32_t)(oc / depth_multiplier);
        }
    }

    ep_dw_ctx_t ctx;
    ctx.filter = filter;
    ctx.bias_eff = bias_eff;
    ctx.multiplier = quant->multiplier;
    ctx.shift = quant->shift;
    ctx.in_channel = in_channel;
    ctx.acc = acc;
    ctx.acc_stride = c8;
    ctx.taps = taps;
    ctx.out_c = out_c;
    ctx.output_offset = quant->output_offset;
    ctx.activation_min = quant->activation_min;
    ctx.activation_max = quant->activation_max;

    /* Inside pixels read the image in place; edge pixels their im2col window (four slots). */
    for (int32_t ky = 0, t = 0; ky < k_h; ++ky) {
        for (int32_t kx = 0; kx < k_w; ++kx, ++t) {
            inside_taps[t] = (params->dilation_h * ky * in_w + params->dilation_w * kx) * in_c;
            edge_taps[t] = (ky * k_w + kx) * in_c;
        }
    }
    const int32_t span_h = params->dilation_h * (k_h - 1), span_w = params->dilation_w * (k_w - 1);
    const int8_t pad = (int8_t)(-quant->input_offset);
    ep_dw_group_t inside, edge;
    inside.n = 0;
    edge.n = 0;
    int8_t *out = output;
    /* Geometry in locals: the stores through int8 pointers could alias *params for the compiler. */
    const int32_t stride_h = params->stride_h, stride_w = params->stride_w;
    const int32_t pad_h = params->pad_h, pad_w = params->pad_w, batches = input_dims->n;
    for (int32_t b = 0; b < batches; ++b) {
        const int8_t *image = &input[b * in_h * in_w * in_c];
        for (int32_t oy = 0, in_y0 = -pad_h; oy < out_h; ++oy, in_y0 += stride_h) {
            const int y_inside = in_y0 >= 0 && in_y0 + span_h < in_h;
            for (int32_t ox = 0, in_x0 = -pad_w; ox < out_w; ++ox, in_x0 += stride_w, out += out_c) {
                if (y_inside && in_x0 >= 0 && in_x0 + span_w < in_w) {
                    inside.in[inside.n] = &image[(in_y0 * in_w + in_x0) * in_c];
                    inside.out[inside.n] = out;
                    if (++inside.n == 4) {
                        ep_dw_mve_group(&ctx, &inside, inside_taps, gather);
                    }
                } else {
                    int8_t *buf = windows + edge.n * window;
                    ep_mve_im2col(params, input_dims, image, k_h, k_w, in_y0, in_x0, pad, buf);
                    edge.in[edge.n] = buf;
                    edge.out[edge.n] = out;
                    if (++edge.n == 4) {
                        ep_dw_mve_group(&ctx, &edge, edge_taps, gather);
                    }
                }
            }
        }
    }
    if (inside.n > 0) {
        ep_dw_mve_group(&ctx, &inside, inside_taps, gather);
    }
    if (edge.n > 0) {
        ep_dw_mve_group(&ctx, &edge, edge_taps, gather);
    }
}

#endif /* EP_MVE_ENABLED */
