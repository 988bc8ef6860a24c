/* On-device adaptation: see adapt.h and firmware/PROTOCOL.md ("Adaptation"). The algorithm mirrors
 * toolchain/edgeprune/adapt/session.py (--device sim) step by step: the same selection (budget.py's
 * Greedy and costs, selectors.py's scores), the same SGD, the same NEq velocities with either history
 * of neq.py: "recompute" (a pre-epoch copy of the trained parameters; the probe set runs through the
 * old and the new region) or "int8" (every candidate's outputs over the probe set kept in int8 with
 * its layer's fixed scale, neq.quantize_history; the cosine's sums are then exact integers).
 * The host sends what is constant for the model and the run (per-neuron parameter counts and MACs,
 * the path costs, su's static choice, and numpy's random permutations); the device selects, trains,
 * and measures itself. */
#ifdef EP_WITH_ADAPT

#include "adapt.h"

#include <math.h>
#include <string.h>

#include "adapt_prefix.h"
#include "ep_io.h"
#include "ep_train_f32.h"
#include "markers.h"
#include "model.h"
#include "protocol.h"
#ifdef EP_WITH_STORE
#include "param_store.h"
#endif

#if EP_ADAPT_LAYERS > 5
#error "the adaptation mode supports at most 5 region layers (the path-cost table)"
#endif

enum { SEL_NEQ, SEL_SU, SEL_RANDOM, SEL_FULL, SEL_CHEAPEST, SEL_NEQ_SHUFFLED, SEL_NEQ_NORM, SEL_NEQ_EXPLORE, SEL_GRAD,
       SEL_GRAD_EXPLORE };
enum { INIT_SU, INIT_RANDOM, INIT_LAST };
#define F_MOMENTUM 1u
#define F_NEQ 2u
#define F_RECOMPUTE 4u
#define F_PROBE_IN_RAM 8u
#define F_MACS 16u
#define F_GRAD 32u /* error-mass accumulators (the gradient-signal scores) */
#define HEADER_WORDS 17u
/* Per candidate: 1 - v_prev, nu, then the cosine's three running sums: recompute: float (a-b).(a-b),
 * a.a, b.b; int8 history: int32 a.b, a.a, b.b (exact, held in the same 4 bytes each). */
#define NEQ_FLOATS 5

/* ---- the adapted model: the region's float32 parameters, packed as ep_adapt_factory (its non-zero
 * weights, then its biases; the factory copy lives in flash). */
static float params[EP_ADAPT_PARAM_FLOATS];
static int adapted; /* infer runs the float region */
static int params_ready;

/* ---- inference-side buffers (as the int8 arena: not training state): two float activation sets
 * (the NEq pass runs the old and the new parameters side by side) and the prefix's int8 output. */
static float fwd_a[EP_ADAPT_FORWARD_FLOATS], fwd_b[EP_ADAPT_FORWARD_FLOATS];
static float *arena_a[EP_ADAPT_TENSORS], *arena_b[EP_ADAPT_TENSORS];
static int8_t prefix_out[EP_ADAPT_REGION_INPUT_SIZE];

/* ---- the training pool: everything budget.py counts, nothing else. The int8 buffers (probe set in
 * RAM, NEq history) come first, from pool_origin (0-3 bytes into the array) chosen so the float
 * buffers after them are word-aligned without padding: the pool's bytes are exactly budget.py's. */
static float pool_words[(EP_ADAPT_POOL_BYTES + 3) / 4 + 1]; /* float: its users are float buffers (aliasing) */
static uint32_t pool_origin, pool_used, pool_keep, pool_peak;

/* The measurement: the pool is painted before use, like the stack; the highest word no longer holding
 * the pattern is the training RAM actually touched (independent of the allocator's own count). */
#define POOL_PATTERN 0xA5A5A5A5u

static void paint_pool(uint32_t from)
{
    const uint32_t pattern = POOL_PATTERN;
    for (uint32_t i = (pool_origin + from) / 4u; i < (uint32_t)(sizeof pool_words / 4u); ++i) {
        memcpy(&pool_words[i], &pattern, 4);
    }
}

static uint32_t pool_touched(void)
{
    uint32_t i = (uint32_t)(sizeof pool_words / 4u);
    for (; i > 0u; --i) {
        uint32_t w;
        memcpy(&w, &pool_words[i - 1u], 4);
        if (w != POOL_PATTERN) {
            break;
        }
    }
    return 4u * i > pool_origin ? 4u * i - pool_origin : 0u;
}

static void *pool_alloc(uint32_t bytes)
{
    if (bytes > (uint32_t)EP_ADAPT_POOL_BYTES - pool_used) {
        return NULL;
    }
    uint8_t *p = (uint8_t *)pool_words + pool_origin + pool_used;
    pool_used += bytes; /* after the int8 buffers every request is a multiple of 4 bytes: floats stay aligned */
    if (pool_used > pool_peak) {
        pool_peak = pool_used;
    }
    return p;
}

/* ---- the run's configuration (adapt_begin) */
static int active;
static uint32_t selector, init_policy, flags, budget_ram, budget_macs, first_candidate, probe_count;
static uint32_t state_bytes, probe_bytes, bytes_per_param, n_neurons; /* state: the score's (NEq, or error mass) */
static float lr, momentum, weight_decay, mu, eps;
static uint32_t nparams[EP_ADAPT_NEURONS], nmacs[EP_ADAPT_NEURONS];
static uint8_t nbias[EP_ADAPT_NEURONS], su_sel[EP_ADAPT_NEURONS];
static uint32_t path_cost[EP_ADAPT_LAYERS][1u << EP_ADAPT_LAYERS][3]; /* saved, errors, input-grad MACs */
static int32_t layer_first[EP_ADAPT_LAYERS + 1];                     /* global index of channel 0 */
static int32_t neuron_layer[EP_ADAPT_NEURONS];
static int8_t probe_flash[EP_ADAPT_MAX_PROBE * EP_MODEL_INPUT_SIZE]; /* "flash": read in place */
static const int8_t *probe;
static float *neq_state;
/* Per candidate: the error mass of the last epoch (sum of |d loss / d output|), -1 where the backward
 * pass did not reach its layer (scores.py's gradient-signal scores). */
static float *mass;
static int8_t *history;                         /* int8 history: o^{t-1} of every candidate, NULL with recompute */
static uint32_t history_at[EP_ADAPT_LAYERS];    /* per candidate layer: its probe outputs' offset in history */
static int history_ready;                       /* o^0 recorded (the first epoch does it before training) */
static uint32_t epochs_done;
static int neq_history_pass(int compare); /* the int8 history's probe pass (with the NEq update, below) */

/* ---- the epoch (adapt_epoch) */
static uint8_t sel_w[EP_ADAPT_NEURONS], sel_b[EP_ADAPT_NEURONS];
static uint8_t prev_w[EP_ADAPT_NEURONS]; /* the previous epoch's weight-training neurons (neq-explore) */
static int32_t packed_at[EP_ADAPT_NEURONS];
static uint32_t sel_params;
static int32_t deepest_step;
static float *master, *grads, *mom, *prev;
static float *act[EP_ADAPT_TENSORS], *err[EP_ADAPT_TENSORS];
static uint64_t epoch_ram, epoch_macs;
static double loss_sum;
static uint32_t samples_seen;
static int in_epoch;

/* ---- little-endian helpers */
static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static float get_f32(const uint8_t *p)
{
    const uint32_t u = get_u32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void put_f32(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(p, u);
}

static int refuse(uint8_t *out, uint32_t *out_n, const char *msg)
{
    uint32_t n = 0;
    while (msg[n] != '\0' && n < EP_PROTO_MAX_PAYLOAD) {
        out[n] = (uint8_t)msg[n];
        ++n;
    }
    *out_n = n;
    return EP_ERR_ADAPT;
}

/* ---- the region: a layer's weights in the packed parameters, as the sparse kernels take them. */
static ep_sparse_f32_t layer_weights(const ep_adapt_layer_t *L, const float *w)
{
    ep_sparse_f32_t W = {ep_adapt_row_start + L->row_offset, ep_adapt_weight_index + L->weight_offset,
                         w + L->weight_offset};
    return W;
}

/* Forward one step, pre-activation output into a[tout]. */
static void step_forward(const ep_adapt_step_t *st, float *const *a, const float *w)
{
    const float *in = a[st->tin];
    float *out = a[st->tout];
    if (st->layer >= 0) {
        const ep_adapt_layer_t *L = &ep_adapt_layers[st->layer];
        const ep_sparse_f32_t W = layer_weights(L, w);
        const float *B = L->bias_offset >= 0 ? w + L->bias_offset : NULL;
        if (L->kind == EP_ADAPT_CONV) {
            ep_conv2d_f32_sparse(&L->conv, &L->in_dims, in, &L->filter_dims, &W, B, &L->out_dims, out);
        } else if (L->kind == EP_ADAPT_DEPTHWISE) {
            ep_depthwise_conv2d_f32_sparse(&L->conv, L->depth_multiplier, &L->in_dims, in, &L->filter_dims, &W, B,
                                           &L->out_dims, out);
        } else {
            ep_fully_connected_f32_sparse(1, L->in_features, L->channels, in, &W, B, out);
        }
    } else if (st->kind == EP_ADAPT_MEAN) {
        const int32_t c_n = st->out_size;
        for (int32_t c = 0; c < c_n; ++c) {
            float s = 0.0f;
            for (int32_t p = 0; p < st->positions; ++p) {
                s += in[p * c_n + c];
            }
            out[c] = s / (float)st->positions;
        }
    } else if (st->kind == EP_ADAPT_AVG_POOL || st->kind == EP_ADAPT_MAX_POOL) {
        const int is_max = st->kind == EP_ADAPT_MAX_POOL;
        const int32_t C = st->in_c;
        for (int32_t oy = 0; oy < st->out_h; ++oy) {
            for (int32_t ox = 0; ox < st->out_w; ++ox) {
                for (int32_t c = 0; c < C; ++c) {
                    float acc = is_max ? -INFINITY : 0.0f;
                    for (int32_t ky = 0; ky < st->f_h; ++ky) {
                        for (int32_t kx = 0; kx < st->f_w; ++kx) {
                            const float v = in[((oy * st->s_h + ky) * st->in_w + ox * st->s_w + kx) * C + c];
                            acc = is_max ? (v > acc ? v : acc) : acc + v;
                        }
                    }
                    out[(oy * st->out_w + ox) * C + c] = is_max ? acc : acc / (float)(st->f_h * st->f_w);
                }
            }
        }
    } else if (st->kind == EP_ADAPT_PAD) {
        for (int32_t i = 0; i < st->out_size; ++i) {
            out[i] = st->pad_value;
        }
        for (int32_t y = 0; y < st->in_h; ++y) {
            for (int32_t x = 0; x < st->in_w; ++x) {
                memcpy(out + ((y + st->pad_h) * st->out_w + x + st->pad_w) * st->out_c + st->pad_c,
                       in + (y * st->in_w + x) * st->in_c, (size_t)st->in_c * sizeof(float));
            }
        }
    } else if (out != in) { /* an alias whose output is saved on its own (budget.py counts it so) */
        memcpy(out, in, (size_t)st->out_size * sizeof(float));
    }
}

static void activation_forward(const ep_adapt_step_t *st, float *x)
{
    if (st->layer < 0) {
        return;
    }
    const int32_t act_kind = ep_adapt_layers[st->layer].activation;
    if (act_kind == 1) {
        ep_relu_f32(st->out_size, x, x);
    } else if (act_kind == 2) {
        for (int32_t i = 0; i < st->out_size; ++i) {
            x[i] = x[i] < 0.0f ? 0.0f : (x[i] > 6.0f ? 6.0f : x[i]);
        }
    }
}

/* The frozen int8 prefix, then its output dequantized as region.dequantize_input does. */
static int run_prefix(const int8_t *input, float *x)
{
    if (ep_adprefix_invoke(input, prefix_out) != EP_ADPREFIX_OK) {
        return -1;
    }
    for (int32_t i = 0; i < EP_ADAPT_REGION_INPUT_SIZE; ++i) {
        x[i] = ((float)prefix_out[i] - (float)ep_adapt_input_zero_point) * ep_adapt_input_scale;
    }
    return 0;
}

int ep_adapt_predict(const int8_t *input, float *logits)
{
    if (run_prefix(input, arena_a[0]) != 0) {
        return -1;
    }
    for (int32_t s = 0; s < ep_adapt_num_steps; ++s) {
        step_forward(&ep_adapt_steps[s], arena_a, params);
        activation_forward(&ep_adapt_steps[s], arena_a[ep_adapt_steps[s].tout]);
    }
    memcpy(logits, arena_a[ep_adapt_steps[ep_adapt_num_steps - 1].tout], EP_ADAPT_CLASSES * sizeof(float));
    return 0;
}

/* ---- costs: budget.py's CostModel._total, from the tables the host sent. */
static void total_cost(uint64_t n_params, uint64_t wg_macs, int32_t deepest, uint32_t wl, uint64_t *ram,
                       uint64_t *macs)
{
    uint64_t saved = 0, errors = 0, in_macs = 0;
    if (deepest >= 0) {
        saved = path_cost[deepest][wl][0];
        errors = path_cost[deepest][wl][1];
        in_macs = path_cost[deepest][wl][2];
    }
    *ram = n_params * bytes_per_param + saved + errors + state_bytes + probe_bytes;
    *macs = wg_macs + in_macs;
}

static int fits(uint64_t ram, uint64_t macs)
{
    return ram <= budget_ram && (!(flags & F_MACS) || macs <= budget_macs);
}

static void selection_cost(uint64_t *ram, uint64_t *macs)
{
    uint64_t np = 0, wg = 0;
    int32_t deepest = -1;
    uint32_t wl = 0;
    for (uint32_t g = 0; g < n_neurons; ++g) {
        const int32_t i = neuron_layer[g];
        if (sel_w[g]) {
            np += nparams[g];
            wg += nmacs[g];
            wl |= 1u << i;
        } else if (sel_b[g]) {
            np += nbias[g];
        }
        if ((sel_w[g] || sel_b[g]) && (deepest < 0 || i < deepest)) {
            deepest = i;
        }
    }
    total_cost(np, wg, deepest, wl, ram, macs);
}

/* budget.Greedy.run from an empty selection: add in `order`, skipping what does not fit. */
static void greedy(const uint16_t *order, uint32_t n, int bias_only)
{
    uint64_t np = 0, wg = 0;
    int32_t deepest = -1;
    uint32_t wl = 0;
    for (uint32_t k = 0; k < n; ++k) {
        const uint32_t g = order[k];
        const int32_t i = neuron_layer[g];
        if (sel_w[g] || (bias_only && sel_b[g])) {
            continue;
        }
        uint64_t add_p, add_m;
        if (bias_only) {
            add_p = nbias[g];
            add_m = 0;
        } else {
            add_p = nparams[g] - (sel_b[g] ? nbias[g] : 0u);
            add_m = nmacs[g];
        }
        const int32_t d = (deepest < 0 || i < deepest) ? i : deepest;
        const uint32_t w2 = wl | (bias_only ? 0u : (1u << i));
        uint64_t ram, macs;
        total_cost(np + add_p, wg + add_m, d, w2, &ram, &macs);
        if (fits(ram, macs)) {
            if (bias_only) {
                sel_b[g] = 1;
            } else {
                sel_w[g] = 1;
            }
            np += add_p;
            wg += add_m;
            deepest = d;
            wl = w2;
        }
    }
}

/* The neurons' own share of the budgets (selectors.py: own RAM / budget + own MACs / budget). */
static double own_cost(uint32_t g)
{
    double c = (double)nparams[g] * (double)bytes_per_param / (double)budget_ram;
    if (flags & F_MACS) {
        c += (double)nmacs[g] / (double)budget_macs;
    }
    return c;
}

/* Stable sort of n indices by key ascending (numpy's argsort(kind="stable")): insertion sort. */
static void stable_order(uint16_t *idx, const double *key, uint32_t n)
{
    for (uint32_t i = 0; i < n; ++i) {
        idx[i] = (uint16_t)i;
    }
    for (uint32_t i = 1; i < n; ++i) {
        const uint16_t v = idx[i];
        uint32_t j = i;
        while (j > 0 && key[idx[j - 1]] > key[v]) {
            idx[j] = idx[j - 1];
            --j;
        }
        idx[j] = v;
    }
}

/* |nu| as the scores use it. Below NU_FLOOR a velocity is float32 rounding of the NEq sums (the state
 * budget.py counts is float32; the sim's is float64): it counts as 0 there, so neurons whose outputs
 * did not change tie exactly (and keep their order) as they do in the sim. Far below eps (1e-3). */
#define NU_FLOOR 1e-6
static double nu_abs(uint32_t k)
{
    const double v = fabs((double)neq_state[k * NEQ_FLOATS + 1]);
    return v < NU_FLOOR ? 0.0 : v;
}

/* numpy's float64 sum (pairwise, 8 accumulators in blocks of up to 128): its means, bit for bit. */
static double np_sum(const double *x, uint32_t n)
{
    if (n < 8u) {
        double r = 0.0; /* numpy starts from -0.0 here; the same for any sum of magnitudes */
        for (uint32_t i = 0; i < n; ++i) {
            r += x[i];
        }
        return r;
    }
    if (n <= 128u) {
        double r[8];
        uint32_t i;
        for (int k = 0; k < 8; ++k) {
            r[k] = x[k];
        }
        for (i = 8; i < n - n % 8u; i += 8) {
            for (int k = 0; k < 8; ++k) {
                r[k] += x[i + (uint32_t)k];
            }
        }
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; ++i) {
            res += x[i];
        }
        return res;
    }
    uint32_t n2 = n / 2u;
    n2 -= n2 % 8u;
    return np_sum(x, n2) + np_sum(x + n2, n - n2);
}

/* scores.py's alternatives to |nu| / cost over the candidates (key: higher first). */
static void alt_scores(uint32_t policy, uint32_t first, uint32_t n_cand, double *score)
{
    static double nu[EP_ADAPT_NEURONS], own[EP_ADAPT_NEURONS];
    for (uint32_t k = 0; k < n_cand; ++k) {
        nu[k] = nu_abs(k);
        own[k] = (double)nparams[first + k] * (double)bytes_per_param;
    }
    if (policy == SEL_NEQ_NORM) { /* per layer: velocity over its mean, over (own + path share) / mean own */
        for (int32_t i = (int32_t)first_candidate; i < ep_adapt_num_layers; ++i) {
            const uint32_t a = (uint32_t)layer_first[i] - first, m = (uint32_t)(layer_first[i + 1] - layer_first[i]);
            const uint32_t bit = 1u << (uint32_t)i;
            const double path = (double)((uint64_t)path_cost[i][bit][0] + path_cost[i][bit][1]);
            double mean_nu = np_sum(nu + a, m) / (double)m, mean_own = np_sum(own + a, m) / (double)m;
            mean_nu = mean_nu > 1e-12 ? mean_nu : 1e-12;
            mean_own = mean_own > 1.0 ? mean_own : 1.0;
            for (uint32_t k = a; k < a + m; ++k) {
                score[k] = (nu[k] / mean_nu) / ((own[k] + path / (double)m) / mean_own);
            }
        }
    } else { /* neq-explore: neurons whose weights did not train last epoch first, then |nu| / cost */
        double top = 0.0;
        for (uint32_t k = 0; k < n_cand; ++k) {
            score[k] = nu[k] / own_cost(first + k);
            top = score[k] > top ? score[k] : top;
        }
        for (uint32_t k = 0; k < n_cand; ++k) {
            score[k] += prev_w[first + k] ? 0.0 : top + 1.0;
        }
    }
}

/* scores.py's gradient-signal scores (key: higher first): the last epoch's error mass over the
 * neuron's own cost plus the whole backward path to its layer; unobserved candidates (-1) last.
 * grad-explore: observed neurons whose weights did not train last epoch first. */
static void grad_scores(uint32_t policy, uint32_t first, uint32_t n_cand, double *score)
{
    double top = 0.0;
    for (uint32_t k = 0; k < n_cand; ++k) {
        const uint32_t g = first + k;
        const uint32_t *path = path_cost[neuron_layer[g]][1u << (uint32_t)neuron_layer[g]];
        double path_share = (double)((uint64_t)path[0] + path[1]) / (double)budget_ram;
        path_share += (flags & F_MACS) ? (double)path[2] / (double)budget_macs : 0.0;
        score[k] = mass[k] < 0.0f ? 0.0 : (double)mass[k] / (own_cost(g) + path_share);
        top = score[k] > top ? score[k] : top;
    }
    for (uint32_t k = 0; k < n_cand; ++k) {
        if (mass[k] < 0.0f) {
            score[k] = -1.0;
        } else if (policy == SEL_GRAD_EXPLORE && !prev_w[first + k]) {
            score[k] += top + 1.0;
        }
    }
}

/* ---- selection (selectors.Selector.select) */
static int select_neurons(uint32_t epoch, const uint16_t *perm, uint32_t n_perm)
{
    static uint16_t order[EP_ADAPT_NEURONS];
    static double key[EP_ADAPT_NEURONS];
    const uint32_t first = (uint32_t)layer_first[first_candidate];
    const uint32_t n_cand = n_neurons - first;
    memcpy(prev_w, sel_w, sizeof prev_w);
    memset(sel_w, 0, sizeof sel_w);
    memset(sel_b, 0, sizeof sel_b);
    uint32_t policy = selector;
    const int grad = selector == SEL_GRAD || selector == SEL_GRAD_EXPLORE;
    const int warmup = epoch < (grad ? 1u : 2u); /* the error mass exists after one epoch, velocities after two */
    if (selector != SEL_FULL && selector != SEL_SU && selector != SEL_RANDOM && warmup) {
        policy = init_policy == INIT_SU ? SEL_SU : (init_policy == INIT_RANDOM ? SEL_RANDOM : 100u);
    }
    if (policy == SEL_FULL) {
        memset(sel_w, 1, n_neurons);
    } else if (policy == SEL_SU) {
        for (uint32_t g = 0; g < n_neurons; ++g) {
            sel_w[g] = su_sel[g] == 2u;
            sel_b[g] = su_sel[g] != 0u;
        }
    } else if (policy == SEL_RANDOM || policy == 100u) {
        if (policy == SEL_RANDOM && n_perm != n_cand) {
            return -1;
        }
        uint32_t n = 0;
        for (uint32_t k = 0; k < n_cand; ++k) {
            const uint32_t g = policy == SEL_RANDOM ? first + perm[k] : first + k;
            if (policy == SEL_RANDOM || neuron_layer[g] == ep_adapt_num_layers - 1) {
                order[n++] = (uint16_t)g;
            }
        }
        greedy(order, n, 0);
    } else {
        if (policy == SEL_NEQ_SHUFFLED && n_perm != n_cand) {
            return -1;
        }
        if (grad || policy == SEL_NEQ_NORM || policy == SEL_NEQ_EXPLORE) { /* scores.py's scores, highest first */
            if (grad) {
                grad_scores(policy, first, n_cand, key);
            } else {
                alt_scores(policy, first, n_cand, key);
            }
            for (uint32_t k = 0; k < n_cand; ++k) {
                key[k] = -key[k];
            }
        } else { /* cheapest: own cost ascending; neq, neq-shuffled: |nu| / cost descending */
            for (uint32_t k = 0; k < n_cand; ++k) {
                const double cost = own_cost(first + k);
                if (policy == SEL_CHEAPEST) {
                    key[k] = cost;
                } else {
                    const uint32_t src = policy == SEL_NEQ_SHUFFLED ? perm[k] : k;
                    key[k] = -(nu_abs(src) / cost);
                }
            }
        }
        stable_order(order, key, n_cand);
        for (uint32_t k = 0; k < n_cand; ++k) {
            order[k] = (uint16_t)(order[k] + first);
        }
        greedy(order, n_cand, 0);
    }
    return 0;
}

/* ---- the training copies: each selected neuron's trained values, in layer, channel order: its
 * non-zero weights (the factory's pruning mask, position order) then its bias. addr gets their
 * places in params. */
static uint32_t neuron_entries(uint32_t g, int32_t *addr)
{
    const int32_t i = neuron_layer[g];
    const int32_t c = (int32_t)g - layer_first[i];
    const ep_adapt_layer_t *L = &ep_adapt_layers[i];
    const int32_t *row_start = ep_adapt_row_start + L->row_offset;
    uint32_t n = 0;
    if (sel_w[g]) {
        for (int32_t e = row_start[c]; e < row_start[c + 1]; ++e) {
            addr[n++] = L->weight_offset + e;
        }
    }
    if ((sel_w[g] || sel_b[g]) && L->bias_offset >= 0) {
        addr[n++] = L->bias_offset + c;
    }
    return n;
}

static int32_t entry_addr[EP_ADAPT_MAX_CHANNEL_SIZE + 1];

static void swap_in_prev(int32_t layer)
{
    for (int32_t g = layer_first[layer]; g < layer_first[layer + 1]; ++g) {
        if (sel_w[g] || sel_b[g]) {
            const uint32_t n = neuron_entries((uint32_t)g, entry_addr);
            for (uint32_t k = 0; k < n; ++k) {
                const float t = params[entry_addr[k]];
                params[entry_addr[k]] = prev[packed_at[g] + (int32_t)k];
                prev[packed_at[g] + (int32_t)k] = t;
            }
        }
    }
}

/* ---- commands */
/* A forward buffer holds only a step's input and output at once (region_c.forward_offsets): a tensor
 * read later (by the backward pass) lives in the training pool instead. */
static void arena_pointers(float *base, float **ptrs)
{
    for (int32_t t = 0; t < ep_adapt_num_tensors; ++t) {
        ptrs[t] = base + ep_adapt_tensor_offsets[t];
    }
}

static void init_params(void)
{
    if (!params_ready) {
        memcpy(params, ep_adapt_factory, sizeof params);
        arena_pointers(fwd_a, arena_a);
        arena_pointers(fwd_b, arena_b);
        ep_adprefix_init();
        for (int32_t i = 0, g = 0; i < ep_adapt_num_layers; ++i) {
            const ep_adapt_layer_t *L = &ep_adapt_layers[i];
            layer_first[i] = g;
            for (int32_t c = 0; c < L->channels; ++c) {
                neuron_layer[g++] = i;
            }
            layer_first[i + 1] = g;
        }
        params_ready = 1;
    }
}

static uint32_t put_dec(uint8_t *out, uint32_t n, uint64_t v)
{
    char digits[21];
    int i = 20;
    do {
        digits[--i] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v != 0u);
    while (i < 20 && n < EP_PROTO_MAX_PAYLOAD) {
        out[n++] = (uint8_t)digits[i++];
    }
    return n;
}

static uint32_t put_str(uint8_t *out, uint32_t n, const char *s)
{
    while (*s != '\0' && n < EP_PROTO_MAX_PAYLOAD) {
        out[n++] = (uint8_t)*s++;
    }
    return n;
}

/* The device's own refusal of a budget too small for any single candidate neuron (su: one bias),
 * naming the smallest workable budget (the host refuses first, with budget.too_small_message). */
static int too_small(uint8_t *out, uint32_t *out_n)
{
    const int bias_only = selector == SEL_SU;
    uint64_t best_ram = UINT64_MAX, best_macs = UINT64_MAX;
    for (uint32_t g = (uint32_t)layer_first[first_candidate]; g < n_neurons; ++g) {
        const int32_t i = neuron_layer[g];
        uint64_t ram, macs;
        total_cost(bias_only ? nbias[g] : nparams[g], bias_only ? 0u : nmacs[g], i, bias_only ? 0u : (1u << i), &ram,
                   &macs);
        if (fits(ram, macs)) {
            return 0;
        }
        best_ram = ram < best_ram ? ram : best_ram;
        best_macs = macs < best_macs ? macs : best_macs;
    }
    uint32_t n = 0;
    if (best_ram > budget_ram) {
        n = put_str(out, n, "--budget-ram ");
        n = put_dec(out, n, budget_ram);
        n = put_str(out, n, " B is too small for even one neuron on the device: the smallest workable budget is ");
        n = put_dec(out, n, best_ram);
        n = put_str(out, n, " B");
    } else {
        n = put_str(out, n, "--budget-macs ");
        n = put_dec(out, n, budget_macs);
        n = put_str(out, n, " is too small for even one neuron on the device: the smallest workable budget is ");
        n = put_dec(out, n, best_macs);
        n = put_str(out, n, " backward MACs per sample");
    }
    *out_n = n;
    return 1;
}

/* The int8 history's layout (budget.py's neq_bytes beyond the 5 floats per candidate): per candidate
 * layer, per probe sample, its output tensor (positions x channels). Returns its bytes, or
 * HISTORY_TOO_LONG when a neuron's int32 sums could overflow (probe x positions x 127^2 > INT32_MAX). */
#define HISTORY_TOO_LONG 0xFFFFFFFFu
static uint32_t history_layout(void)
{
    uint32_t bytes = 0;
    for (int32_t i = (int32_t)first_candidate; i < ep_adapt_num_layers; ++i) {
        const ep_adapt_layer_t *L = &ep_adapt_layers[i];
        if ((uint64_t)probe_count * (uint64_t)L->positions > (uint64_t)INT32_MAX / (127u * 127u)) {
            return HISTORY_TOO_LONG;
        }
        history_at[i] = bytes;
        bytes += probe_count * (uint32_t)(L->channels * L->positions);
    }
    return bytes;
}

static int cmd_begin(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    init_params();
    const uint32_t L = (uint32_t)ep_adapt_num_layers;
    const uint32_t paths = L * (1u << L);
    if (n < HEADER_WORDS * 4u) {
        return refuse(out, out_n, "adapt_begin: short header");
    }
    const uint32_t nn = get_u32(in + 14 * 4), nl = get_u32(in + 15 * 4);
    if (nn != EP_ADAPT_NEURONS || nl != L) {
        return refuse(out, out_n, "adapt_begin: the host's region does not match this firmware's");
    }
    if (n != HEADER_WORDS * 4u + nn * 9u + paths * 12u + nn) {
        return refuse(out, out_n, "adapt_begin: bad payload length");
    }
    active = 0;
    in_epoch = 0;
    selector = get_u32(in);
    flags = get_u32(in + 4);
    budget_ram = get_u32(in + 8);
    budget_macs = get_u32(in + 12);
    lr = get_f32(in + 16);
    momentum = get_f32(in + 20);
    weight_decay = get_f32(in + 24);
    mu = get_f32(in + 28);
    eps = get_f32(in + 32);
    first_candidate = get_u32(in + 36);
    probe_count = get_u32(in + 40);
    state_bytes = get_u32(in + 44);
    probe_bytes = get_u32(in + 48);
    bytes_per_param = get_u32(in + 52);
    n_neurons = nn;
    init_policy = get_u32(in + 64);
    const uint8_t *p = in + HEADER_WORDS * 4u;
    for (uint32_t g = 0; g < nn; ++g, p += 9) {
        nparams[g] = get_u32(p);
        nmacs[g] = get_u32(p + 4);
        nbias[g] = p[8];
    }
    for (uint32_t d = 0; d < L; ++d) {
        for (uint32_t m = 0; m < (1u << L); ++m, p += 12) {
            path_cost[d][m][0] = get_u32(p);
            path_cost[d][m][1] = get_u32(p + 4);
            path_cost[d][m][2] = get_u32(p + 8);
        }
    }
    memcpy(su_sel, p, nn);
    if (selector > SEL_GRAD_EXPLORE || init_policy > INIT_LAST || first_candidate >= L ||
        probe_count > EP_ADAPT_MAX_PROBE) {
        return refuse(out, out_n, "adapt_begin: bad selector, init, first candidate layer or probe count");
    }
    const int needs_velocities = selector == SEL_NEQ || selector == SEL_NEQ_SHUFFLED || selector == SEL_NEQ_NORM ||
                                 selector == SEL_NEQ_EXPLORE;
    if (needs_velocities != ((flags & F_NEQ) != 0u)) {
        return refuse(out, out_n, "adapt_begin: the NEq state flag does not match the selector");
    }
    if ((selector == SEL_GRAD || selector == SEL_GRAD_EXPLORE) != ((flags & F_GRAD) != 0u)) {
        return refuse(out, out_n, "adapt_begin: the error-mass flag does not match the selector");
    }
    const uint32_t recompute = (flags & F_NEQ) && (flags & F_RECOMPUTE);
    if ((flags & F_RECOMPUTE) && !recompute) {
        return refuse(out, out_n, "adapt_begin: the recompute flag needs the NEq state flag");
    }
    if (bytes_per_param != 4u * (2u + ((flags & F_MOMENTUM) ? 1u : 0u) + recompute)) {
        return refuse(out, out_n, "adapt_begin: bytes per trained parameter disagree with the flags");
    }
    /* The pruning mask is the device's own (zeros of the factory weights): it must agree with the host's counts. */
    memset(sel_w, 1, sizeof sel_w);
    for (uint32_t g = 0; g < nn; ++g) {
        if (neuron_entries(g, entry_addr) != nparams[g]) {
            return refuse(out, out_n, "adapt_begin: the host's parameter counts do not match the device's weights");
        }
    }
    if (selector != SEL_FULL && budget_ram > EP_ADAPT_POOL_BYTES) {
        return refuse(out, out_n, "--budget-ram exceeds this firmware's training pool (EP_ADAPT_POOL_BYTES); rebuild "
                                  "with a larger pool or lower the budget");
    }
    if (selector != SEL_FULL && too_small(out, out_n)) {
        return EP_ERR_ADAPT;
    }
    const int int8_history = (flags & F_NEQ) && !(flags & F_RECOMPUTE);
    const uint32_t history_bytes = int8_history ? history_layout() : 0u;
    if (history_bytes == HISTORY_TOO_LONG) {
        return refuse(out, out_n, "the int8 NEq history's sums would overflow: a candidate layer has more than 133144 "
                                  "probe samples x output positions; lower --probe-per-class or use --neq-history recompute");
    }
    const uint32_t n_cand = nn - (uint32_t)layer_first[first_candidate];
    const uint32_t velocity_bytes = (flags & F_NEQ) ? n_cand * NEQ_FLOATS * 4u : 0u;
    const uint32_t mass_bytes = (flags & F_GRAD) ? n_cand * 4u : 0u;
    if (state_bytes != velocity_bytes + history_bytes + mass_bytes) {
        return refuse(out, out_n, "adapt_begin: the score's state size disagrees with the candidates");
    }
    if (probe_bytes != 0u && probe_bytes != probe_count * EP_MODEL_INPUT_SIZE) {
        return refuse(out, out_n, "adapt_begin: the probe set's RAM disagrees with the probe count");
    }
    /* The int8 buffers first, so that the float buffers after them start word-aligned. */
    pool_origin = (4u - (probe_bytes + history_bytes) % 4u) % 4u;
    pool_used = pool_peak = 0;
    paint_pool(0);
    probe = probe_flash;
    if (probe_bytes != 0u) {
        probe = (const int8_t *)pool_alloc(probe_bytes);
        if (probe == NULL) {
            return refuse(out, out_n, "the probe set does not fit the training pool");
        }
    }
    history = NULL;
    history_ready = 0;
    neq_state = NULL;
    if (flags & F_NEQ) {
        history = int8_history ? (int8_t *)pool_alloc(history_bytes) : NULL;
        neq_state = (float *)pool_alloc(velocity_bytes);
        if (neq_state == NULL || (int8_history && history == NULL)) {
            return refuse(out, out_n, "the NEq state does not fit the training pool");
        }
        memset(neq_state, 0, velocity_bytes);
        if (history != NULL) {
            memset(history, 0, history_bytes);
        }
    }
    mass = NULL;
    if (flags & F_GRAD) {
        mass = (float *)pool_alloc(mass_bytes);
        if (mass == NULL) {
            return refuse(out, out_n, "the error-mass accumulators do not fit the training pool");
        }
        for (uint32_t k = 0; k < n_cand; ++k) {
            mass[k] = -1.0f; /* nothing observed before the first epoch */
        }
    }
    pool_keep = pool_used;
    epochs_done = 0;
    active = 1;
    put_u32(out, EP_ADAPT_POOL_BYTES);
    put_u32(out + 4, (uint32_t)(sizeof fwd_a + sizeof fwd_b + sizeof prefix_out));
    put_u32(out + 8, pool_keep);
    put_u32(out + 12, (uint32_t)sizeof params);
    put_u32(out + 16, EP_ADPREFIX_ARENA_SIZE); /* the int8 prefix's own activations */
    *out_n = 20;
    return 0;
}

static int cmd_probe(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    if (!active || n != 4u + EP_MODEL_INPUT_SIZE) {
        return refuse(out, out_n, "adapt_probe: needs adapt_begin, then u32 index + one model input");
    }
    const uint32_t k = get_u32(in);
    if (k >= probe_count) {
        return refuse(out, out_n, "adapt_probe: index beyond the probe count");
    }
    memcpy((int8_t *)probe + k * EP_MODEL_INPUT_SIZE, in + 4, EP_MODEL_INPUT_SIZE);
    *out_n = 0;
    return 0;
}

static int cmd_epoch(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    static uint16_t perm[EP_ADAPT_NEURONS];
    if (!active || n < 8u) {
        return refuse(out, out_n, "adapt_epoch: needs adapt_begin, then u32 epoch, u32 n, n x u16 permutation");
    }
    const uint32_t epoch = get_u32(in), n_perm = get_u32(in + 4);
    if (n_perm > EP_ADAPT_NEURONS || n != 8u + 2u * n_perm) {
        return refuse(out, out_n, "adapt_epoch: bad permutation length");
    }
    for (uint32_t k = 0; k < n_perm; ++k) {
        perm[k] = (uint16_t)(in[8 + 2 * k] | (in[9 + 2 * k] << 8));
        if (perm[k] >= n_perm) {
            return refuse(out, out_n, "adapt_epoch: bad permutation");
        }
    }
    if (history != NULL && !history_ready) { /* o^0: the probe outputs before any training (neq.py's first observe) */
        if (neq_history_pass(0) != 0) {
            return refuse(out, out_n, "adapt_epoch: the int8 prefix failed");
        }
        history_ready = 1;
    }
    if (select_neurons(epoch, perm, n_perm) != 0) {
        return refuse(out, out_n, "adapt_epoch: this selector needs the epoch's permutation of the candidates");
    }
    selection_cost(&epoch_ram, &epoch_macs);
    int any = 0;
    for (uint32_t g = 0; g < n_neurons; ++g) {
        any |= sel_w[g] | sel_b[g];
    }
    if (!any) {
        return refuse(out, out_n, "no neuron fits both budgets at once; raise --budget-ram or --budget-macs");
    }
    if (selector != SEL_FULL && !fits(epoch_ram, epoch_macs)) {
        return refuse(out, out_n, "adapt_epoch: the selection exceeds the budget (host and device disagree)");
    }
    /* Allocate exactly what budget.py counts: master, gradient, momentum, pre-epoch copy per trained
     * parameter; saved activations; error buffers. */
    pool_used = pool_keep;
    paint_pool(pool_keep);
    sel_params = 0;
    for (uint32_t g = 0; g < n_neurons; ++g) {
        packed_at[g] = (int32_t)sel_params;
        if (sel_w[g] || sel_b[g]) {
            sel_params += neuron_entries(g, entry_addr);
        }
    }
    const uint32_t bytes = sel_params * 4u;
    master = (float *)pool_alloc(bytes);
    grads = (float *)pool_alloc(bytes);
    mom = (flags & F_MOMENTUM) ? (float *)pool_alloc(bytes) : NULL;
    prev = (flags & F_RECOMPUTE) ? (float *)pool_alloc(bytes) : NULL;
    int fail = master == NULL || grads == NULL || ((flags & F_MOMENTUM) && mom == NULL) ||
               ((flags & F_RECOMPUTE) && prev == NULL);
    int32_t deepest_layer = -1;
    for (uint32_t g = 0; g < n_neurons && deepest_layer < 0; ++g) {
        if (sel_w[g] || sel_b[g]) {
            deepest_layer = neuron_layer[g];
        }
    }
    deepest_step = 0;
    uint8_t saved[EP_ADAPT_TENSORS];
    memset(saved, 0, sizeof saved);
    for (int32_t s = 0; s < ep_adapt_num_steps; ++s) {
        const ep_adapt_step_t *st = &ep_adapt_steps[s];
        if (st->layer == deepest_layer) {
            deepest_step = s;
        }
        if (st->layer >= 0) {
            for (int32_t g = layer_first[st->layer]; g < layer_first[st->layer + 1]; ++g) {
                if (sel_w[g]) {
                    saved[st->tin] = 1;
                }
            }
        }
    }
    for (int32_t s = deepest_step; s < ep_adapt_num_steps; ++s) {
        const ep_adapt_step_t *st = &ep_adapt_steps[s];
        if (st->layer >= 0 && ep_adapt_layers[st->layer].activation != 0) {
            saved[st->tout] = 1;
        }
        if (st->kind == EP_ADAPT_MAX_POOL) {
            saved[st->tin] = 1;
        }
    }
    for (int32_t t = 0; t < ep_adapt_num_tensors && !fail; ++t) {
        act[t] = saved[t] ? (float *)pool_alloc((uint32_t)ep_adapt_tensor_sizes[t] * 4u) : arena_a[t];
        fail |= act[t] == NULL;
    }
    for (int32_t s = 0; s < ep_adapt_num_steps && !fail; ++s) { /* unsaved aliases share their input */
        const ep_adapt_step_t *st = &ep_adapt_steps[s];
        if (st->kind == EP_ADAPT_ALIAS && !saved[st->tout]) {
            act[st->tout] = act[st->tin];
        }
    }
    for (int32_t s = deepest_step; s < ep_adapt_num_steps && !fail; ++s) {
        const ep_adapt_step_t *st = &ep_adapt_steps[s];
        err[st->tout] = st->kind == EP_ADAPT_ALIAS ? err[st->tin] : (float *)pool_alloc((uint32_t)st->out_size * 4u);
        fail |= err[st->tout] == NULL;
    }
    if (fail) {
        return refuse(out, out_n, "adapt_epoch: the selection does not fit the training pool");
    }
    for (uint32_t g = 0; g < n_neurons; ++g) { /* gather the master copies */
        if (sel_w[g] || sel_b[g]) {
            const uint32_t m = neuron_entries(g, entry_addr);
            for (uint32_t k = 0; k < m; ++k) {
                master[packed_at[g] + (int32_t)k] = params[entry_addr[k]];
            }
        }
    }
    memset(grads, 0, bytes);
    if (mom != NULL) {
        memset(mom, 0, bytes);
    }
    if (prev != NULL) {
        memcpy(prev, master, bytes);
    }
    if (mass != NULL) { /* this epoch's error mass: observed from the deepest selected layer up */
        const uint32_t first = (uint32_t)layer_first[first_candidate];
        for (uint32_t g = first; g < n_neurons; ++g) {
            mass[g - first] = neuron_layer[g] >= deepest_layer ? 0.0f : -1.0f;
        }
    }
    samples_seen = 0;
    loss_sum = 0.0;
    in_epoch = 1;
    put_u32(out, (uint32_t)epoch_ram);
    put_u32(out + 4, (uint32_t)epoch_macs);
    put_u32(out + 8, pool_used);
    for (uint32_t g = 0; g < n_neurons; ++g) {
        out[12 + g] = sel_w[g] ? 2u : (sel_b[g] ? 1u : 0u);
    }
    *out_n = 12u + n_neurons;
    if (neq_state != NULL && epoch >= 2u) { /* the velocities the selection used, for the host's report */
        const uint32_t first = (uint32_t)layer_first[first_candidate];
        for (uint32_t k = 0; k < n_neurons - first && *out_n + 4u <= EP_PROTO_MAX_PAYLOAD; ++k) {
            put_f32(out + *out_n, neq_state[k * NEQ_FLOATS + 1]);
            *out_n += 4u;
        }
    }
    return 0;
}

/* One SGD step (torch.optim.SGD, as ep_sgd_update_f32) on the packed parameters, scattered back. */
static void sgd_step(void)
{
    for (uint32_t g = 0; g < n_neurons; ++g) {
        if (!(sel_w[g] || sel_b[g])) {
            continue;
        }
        const uint32_t m = neuron_entries(g, entry_addr);
        for (uint32_t k = 0; k < m; ++k) {
            const int32_t j = packed_at[g] + (int32_t)k;
            float d = grads[j];
            if (weight_decay != 0.0f) {
                d += weight_decay * master[j];
            }
            if (mom != NULL) {
                mom[j] = momentum * mom[j] + d;
                d = mom[j];
            }
            master[j] = master[j] - lr * d;
            grads[j] = 0.0f;
            params[entry_addr[k]] = master[j];
        }
    }
}

/* batch: the sample's batch size (the error buffers hold d loss / batch). */
static void layer_backward(const ep_adapt_step_t *st, int32_t step_index, uint32_t batch)
{
    const ep_adapt_layer_t *L = &ep_adapt_layers[st->layer];
    const ep_sparse_f32_t W = layer_weights(L, params);
    float *g_out = err[st->tout];
    const float *x = act[st->tin];
    if (L->activation == 1) {
        ep_relu_f32_backward(st->out_size, act[st->tout], g_out, g_out);
    } else if (L->activation == 2) {
        const float *y = act[st->tout];
        for (int32_t i = 0; i < st->out_size; ++i) {
            g_out[i] = (y[i] > 0.0f && y[i] < 6.0f) ? g_out[i] : 0.0f;
        }
    }
    if (mass != NULL && st->layer >= (int32_t)first_candidate) { /* |d loss / d output| per channel, per sample */
        float *m = mass + (layer_first[st->layer] - layer_first[first_candidate]);
        for (int32_t c = 0; c < L->channels; ++c) {
            float sum = 0.0f;
            for (int32_t p = 0; p < L->positions; ++p) {
                sum += fabsf(g_out[p * L->channels + c]);
            }
            m[c] += sum * (float)batch; /* the mass is per sample */
        }
    }
    /* One channel's weight gradient on this sample, then added to the batch's sum. */
    float sample_grad[EP_ADAPT_MAX_CHANNEL_SIZE];
    for (int32_t g = layer_first[st->layer]; g < layer_first[st->layer + 1]; ++g) {
        if (!(sel_w[g] || sel_b[g])) {
            continue;
        }
        const int32_t c = g - layer_first[st->layer];
        float gb = 0.0f;
        float *gf = sel_w[g] ? sample_grad : NULL;
        float *gbp = L->bias_offset >= 0 ? &gb : NULL;
        if (L->kind == EP_ADAPT_CONV) {
            ep_conv2d_f32_sparse_backward(&L->conv, &L->in_dims, x, &L->filter_dims, &W, &L->out_dims, g_out, NULL,
                                          &c, 1, gf, gbp, 0);
        } else if (L->kind == EP_ADAPT_DEPTHWISE) {
            ep_depthwise_conv2d_f32_sparse_backward(&L->conv, L->depth_multiplier, &L->in_dims, x, &L->filter_dims,
                                                    &W, &L->out_dims, g_out, NULL, &c, 1, gf, gbp, 0);
        } else {
            ep_fully_connected_f32_sparse_backward(1, L->in_features, L->channels, x, &W, g_out, NULL, &c, 1, gf, gbp,
                                                   0);
        }
        float *dst = grads + packed_at[g];
        if (sel_w[g]) {
            for (int32_t e = 0; e < W.row_start[c + 1] - W.row_start[c]; ++e) {
                *dst++ += sample_grad[e];
            }
        }
        if (gbp != NULL) {
            *dst += gb;
        }
    }
    if (step_index > deepest_step) { /* the input gradient, only on the path to the deepest selected layer */
        float *g_in = err[st->tin];
        if (L->kind == EP_ADAPT_CONV) {
            ep_conv2d_f32_sparse_backward(&L->conv, &L->in_dims, x, &L->filter_dims, &W, &L->out_dims, g_out, g_in,
                                          NULL, 0, NULL, NULL, 0);
        } else if (L->kind == EP_ADAPT_DEPTHWISE) {
            ep_depthwise_conv2d_f32_sparse_backward(&L->conv, L->depth_multiplier, &L->in_dims, x, &L->filter_dims,
                                                    &W, &L->out_dims, g_out, g_in, NULL, 0, NULL, NULL, 0);
        } else {
            ep_fully_connected_f32_sparse_backward(1, L->in_features, L->channels, x, &W, g_out, g_in, NULL, 0, NULL,
                                                   NULL, 0);
        }
    }
}

/* The input gradient of a step without parameters (the error buffers of budget.py's path). */
static void plain_backward(const ep_adapt_step_t *st)
{
    const float *go = err[st->tout];
    float *gi = err[st->tin];
    if (st->kind == EP_ADAPT_MEAN) {
        for (int32_t p = 0; p < st->positions; ++p) {
            for (int32_t c = 0; c < st->out_size; ++c) {
                gi[p * st->out_size + c] = go[c] / (float)st->positions;
            }
        }
    } else if (st->kind == EP_ADAPT_AVG_POOL || st->kind == EP_ADAPT_MAX_POOL) {
        const int32_t C = st->in_c;
        const float *x = act[st->tin]; /* saved for MAX_POOL */
        memset(gi, 0, (size_t)st->in_size * sizeof(float));
        for (int32_t oy = 0; oy < st->out_h; ++oy) {
            for (int32_t ox = 0; ox < st->out_w; ++ox) {
                for (int32_t c = 0; c < C; ++c) {
                    const float g = go[(oy * st->out_w + ox) * C + c];
                    int32_t at = -1;
                    float best = -INFINITY;
                    for (int32_t ky = 0; ky < st->f_h; ++ky) {
                        for (int32_t kx = 0; kx < st->f_w; ++kx) {
                            const int32_t i = ((oy * st->s_h + ky) * st->in_w + ox * st->s_w + kx) * C + c;
                            if (st->kind == EP_ADAPT_AVG_POOL) {
                                gi[i] += g / (float)(st->f_h * st->f_w);
                            } else if (at < 0 || x[i] > best) { /* the first maximum, as torch */
                                at = i;
                                best = x[i];
                            }
                        }
                    }
                    if (at >= 0) {
                        gi[at] += g;
                    }
                }
            }
        }
    } else if (st->kind == EP_ADAPT_PAD) {
        for (int32_t y = 0; y < st->in_h; ++y) {
            for (int32_t x = 0; x < st->in_w; ++x) {
                memcpy(gi + (y * st->in_w + x) * st->in_c,
                       go + ((y + st->pad_h) * st->out_w + x + st->pad_w) * st->out_c + st->pad_c,
                       (size_t)st->in_c * sizeof(float));
            }
        }
    }
}

static int cmd_sample(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    if (!in_epoch || n != 4u + EP_MODEL_INPUT_SIZE) {
        return refuse(out, out_n, "adapt_sample: needs adapt_epoch, then u8 label, u8 end of batch, u16 batch size, input");
    }
    const uint32_t label = in[0], end_of_batch = in[1], batch = (uint32_t)in[2] | ((uint32_t)in[3] << 8);
    if (label >= (uint32_t)EP_ADAPT_CLASSES || batch == 0u) {
        return refuse(out, out_n, "adapt_sample: label out of range or batch size 0");
    }
    ep_region_begin();
    if (run_prefix((const int8_t *)in + 4, act[0]) != 0) {
        ep_region_end();
        return refuse(out, out_n, "adapt_sample: the int8 prefix failed");
    }
    for (int32_t s = 0; s < ep_adapt_num_steps; ++s) {
        const ep_adapt_step_t *st = &ep_adapt_steps[s];
        step_forward(st, act, params);
        activation_forward(st, act[st->tout]);
    }
    /* Softmax cross-entropy; its gradient, over the batch's mean (as torch's cross_entropy). */
    const ep_adapt_step_t *last = &ep_adapt_steps[ep_adapt_num_steps - 1];
    const float *z = act[last->tout];
    float *gz = err[last->tout];
    float zmax = z[0];
    for (int32_t k = 1; k < EP_ADAPT_CLASSES; ++k) {
        zmax = z[k] > zmax ? z[k] : zmax;
    }
    float sum = 0.0f;
    for (int32_t k = 0; k < EP_ADAPT_CLASSES; ++k) {
        sum += expf(z[k] - zmax);
    }
    const float loss = logf(sum) + zmax - z[label];
    for (int32_t k = 0; k < EP_ADAPT_CLASSES; ++k) {
        gz[k] = (expf(z[k] - zmax) / sum - (k == (int32_t)label ? 1.0f : 0.0f)) / (float)batch;
    }
    for (int32_t s = ep_adapt_num_steps - 1; s >= deepest_step; --s) {
        const ep_adapt_step_t *st = &ep_adapt_steps[s];
        if (st->layer >= 0) {
            layer_backward(st, s, batch);
        } else if (s > deepest_step) {
            plain_backward(st);
        }
    }
    if (end_of_batch) {
        sgd_step();
    }
    ep_region_end();
    loss_sum += (double)loss;
    ++samples_seen;
    put_f32(out, loss);
    *out_n = 4;
    return 0;
}

/* NEq (neq.py), recompute history: the probe set through the region with the pre-epoch parameters
 * and with the new ones side by side; per candidate neuron the sums of (a-b)^2, a^2, b^2 of its
 * pre-activation outputs. 1 - cos is kept instead of cos (and formed from |a-b|^2) so float32 state
 * keeps the precision of small changes. */
static int neq_sums_recompute(void)
{
    const uint32_t first = (uint32_t)layer_first[first_candidate];
    for (uint32_t p = 0; p < probe_count; ++p) {
        if (run_prefix(probe + p * EP_MODEL_INPUT_SIZE, arena_a[0]) != 0) {
            return -1;
        }
        for (int32_t s = 0; s < ep_adapt_num_steps; ++s) {
            const ep_adapt_step_t *st = &ep_adapt_steps[s];
            /* Below the deepest trained layer old and new parameters are the same: one pass suffices. */
            const int same = s < deepest_step;
            step_forward(st, arena_a, params);
            if (!same) {
                if (s == deepest_step) {
                    memcpy(arena_b[st->tin], arena_a[st->tin], (size_t)st->in_size * sizeof(float));
                }
                if (st->layer >= 0) {
                    swap_in_prev(st->layer);
                    step_forward(st, arena_b, params);
                    swap_in_prev(st->layer);
                } else {
                    step_forward(st, arena_b, params);
                }
            }
            if (st->layer >= (int32_t)first_candidate) {
                const float *a = arena_a[st->tout], *b = same ? a : arena_b[st->tout];
                const int32_t ch = ep_adapt_layers[st->layer].channels;
                for (int32_t c = 0; c < ch; ++c) {
                    double dd = 0.0, aa = 0.0, bb = 0.0;
                    for (int32_t q = c; q < st->out_size; q += ch) {
                        const double d = (double)a[q] - (double)b[q];
                        dd += d * d;
                        aa += (double)a[q] * (double)a[q];
                        bb += (double)b[q] * (double)b[q];
                    }
                    float *s5 = neq_state + ((uint32_t)(layer_first[st->layer] + c) - first) * NEQ_FLOATS;
                    s5[2] += (float)dd;
                    s5[3] += (float)aa;
                    s5[4] += (float)bb;
                }
            }
            activation_forward(st, arena_a[st->tout]);
            if (!same) {
                activation_forward(st, arena_b[st->tout]);
            }
        }
    }
    return 0;
}

/* neq.quantize_history, bit for bit: x = o / scale in float32, round half away from zero (|x| + 0.5
 * in float32, floored), saturate to +-127. */
static int32_t quantize_history(float o, float scale)
{
    const float x = o / scale;
    float r = floorf(fabsf(x) + 0.5f);
    r = r < 127.0f ? r : 127.0f; /* NaN gives 127, not an undefined conversion */
    return x < 0.0f ? -(int32_t)r : (int32_t)r;
}

static int32_t get_i32(const float *slot)
{
    int32_t v;
    memcpy(&v, slot, 4);
    return v;
}

static void add_i32(float *slot, int32_t v)
{
    const int32_t sum = get_i32(slot) + v; /* cannot overflow: adapt_begin bounds the probe outputs per neuron */
    memcpy(slot, &sum, 4);
}

/* One probe sample's outputs of a candidate layer against its int8 history: the new outputs are
 * quantized, their exact sums with the history's (a.b, a.a, b.b) accumulated per neuron (compare), and
 * they replace the history's (each probe sample has its own slot, so it is rewritten in place). */
static void history_update(const ep_adapt_step_t *st, uint32_t p, int compare)
{
    const ep_adapt_layer_t *L = &ep_adapt_layers[st->layer];
    const float *a = arena_a[st->tout];
    int8_t *h = history + history_at[st->layer] + p * (uint32_t)st->out_size;
    const uint32_t first = (uint32_t)layer_first[first_candidate];
    for (int32_t c = 0; c < L->channels; ++c) {
        int32_t ab = 0, aa = 0, bb = 0;
        for (int32_t q = c; q < st->out_size; q += L->channels) {
            const int32_t qa = quantize_history(a[q], L->history_scale), qb = h[q];
            ab += qa * qb;
            aa += qa * qa;
            bb += qb * qb;
            h[q] = (int8_t)qa;
        }
        if (compare) {
            float *s5 = neq_state + ((uint32_t)(layer_first[st->layer] + c) - first) * NEQ_FLOATS;
            add_i32(s5 + 2, ab);
            add_i32(s5 + 3, aa);
            add_i32(s5 + 4, bb);
        }
    }
}

/* int8 history: the probe set through the region once with the current parameters. compare = 0
 * records o^0 only (before the first epoch trains). */
static int neq_history_pass(int compare)
{
    for (uint32_t p = 0; p < probe_count; ++p) {
        if (run_prefix(probe + p * EP_MODEL_INPUT_SIZE, arena_a[0]) != 0) {
            return -1;
        }
        for (int32_t s = 0; s < ep_adapt_num_steps; ++s) {
            const ep_adapt_step_t *st = &ep_adapt_steps[s];
            step_forward(st, arena_a, params);
            if (st->layer >= (int32_t)first_candidate) {
                history_update(st, p, compare);
            }
            activation_forward(st, arena_a[st->tout]);
        }
    }
    return 0;
}

/* 1 - cos of a candidate from its sums. Both vectors zero: unchanged (cos 1); one zero: cos 0. The
 * int8 sums are exact, so cos is numpy's float64 a.b / sqrt(a.a * b.b) bit for bit. */
static double neq_gap(const float *s5)
{
    if (history != NULL) {
        const double ab = (double)get_i32(s5 + 2), aa = (double)get_i32(s5 + 3), bb = (double)get_i32(s5 + 4);
        if (aa == 0.0 && bb == 0.0) {
            return 0.0;
        }
        return (aa == 0.0 || bb == 0.0) ? 1.0 : 1.0 - ab / sqrt(aa * bb);
    }
    const double aa = s5[3], bb = s5[4];
    if (aa == 0.0 && bb == 0.0) {
        return 0.0;
    }
    if (aa == 0.0 || bb == 0.0) {
        return 1.0;
    }
    const double na = sqrt(aa), nb = sqrt(bb);
    return ((double)s5[2] - (na - nb) * (na - nb)) / (2.0 * na * nb);
}

/* The probe pass of the epoch's end, then per candidate 1 - cos, its change and the velocity. */
static int neq_update(void)
{
    const uint32_t first = (uint32_t)layer_first[first_candidate];
    if ((history != NULL ? neq_history_pass(1) : neq_sums_recompute()) != 0) {
        return -1;
    }
    for (uint32_t k = 0; k < n_neurons - first; ++k) {
        float *s5 = neq_state + k * NEQ_FLOATS;
        const double gap = neq_gap(s5);
        if (epochs_done >= 1u) {
            const double dv = (double)s5[0] - gap; /* v - v_prev */
            s5[1] = (float)(dv + (double)mu * (double)s5[1]);
        }
        s5[0] = (float)gap;
        memset(s5 + 2, 0, 3u * sizeof(float)); /* float 0 and int32 0 alike */
    }
    return 0;
}

extern uint32_t ep_device_stack_peak(void); /* device_main.c: stack painting */

static int cmd_epoch_end(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    (void)in;
    if (!in_epoch || n != 0u) {
        return refuse(out, out_n, "adapt_epoch_end: no epoch is running");
    }
    uint32_t at_eq = 0xFFFFFFFFu;
    if (flags & F_NEQ) {
        ep_region_begin(); /* counted under QEMU: the NEq pass of the epoch */
        const int rc = neq_update();
        ep_region_end();
        if (rc != 0) {
            return refuse(out, out_n, "adapt_epoch_end: the int8 prefix failed");
        }
        if (epochs_done >= 1u) {
            at_eq = 0;
            for (uint32_t k = 0; k < n_neurons - (uint32_t)layer_first[first_candidate]; ++k) {
                at_eq += fabsf(neq_state[k * NEQ_FLOATS + 1]) < eps;
            }
        }
    }
    ++epochs_done;
    in_epoch = 0;
    put_u32(out, pool_touched()); /* measured: the painted pool's high-water mark */
    put_u32(out + 4, ep_device_stack_peak());
    put_u32(out + 8, samples_seen);
    put_u32(out + 12, at_eq);
    put_f32(out + 16, (float)loss_sum);
    put_u32(out + 20, pool_peak); /* what the allocator handed out */
    *out_n = 24;
    pool_peak = pool_keep; /* the next epoch's high-water mark starts from the persistent state */
    return 0;
}

static int cmd_eval(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    init_params();
    if (n != EP_MODEL_INPUT_SIZE || in_epoch) {
        return refuse(out, out_n, "adapt_eval: one model input, outside an epoch");
    }
    static float logits[EP_ADAPT_CLASSES];
    if (ep_adapt_predict((const int8_t *)in, logits) != 0) {
        return refuse(out, out_n, "adapt_eval: the int8 prefix failed");
    }
    for (int32_t k = 0; k < EP_ADAPT_CLASSES; ++k) {
        put_f32(out + 4 * k, logits[k]);
    }
    *out_n = 4u * EP_ADAPT_CLASSES;
    return 0;
}

/* `infer` after adaptation: the int8 prefix, the float region, the logits quantized like the model's
 * output (the deployed model's scale and zero point). Before adaptation: the int8 model as before. */
static int cmd_infer_adapted(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    if (n != EP_MODEL_INPUT_SIZE) { /* device_main.c's answer, word for word */
        static const char msg[] = "payload must be input_bytes=";
        uint32_t k = 0, v = EP_MODEL_INPUT_SIZE, d = 1;
        (void)refuse(out, &k, msg);
        while (v / d >= 10u) {
            d *= 10u;
        }
        for (; d > 0u; d /= 10u) {
            out[k++] = (uint8_t)('0' + (v / d) % 10u);
        }
        *out_n = k;
        return EP_ERR_BAD_LENGTH;
    }
    const uint32_t start = ep_cycles_now();
    int rc;
    ep_region_begin();
    if (adapted) {
        static float logits[EP_ADAPT_CLASSES];
        rc = ep_adapt_predict((const int8_t *)in, logits);
        if (ep_adapt_output_softmax) { /* the deployed model's tail, in float */
            float zmax = logits[0], sum = 0.0f;
            for (int32_t k = 1; k < EP_ADAPT_CLASSES; ++k) {
                zmax = logits[k] > zmax ? logits[k] : zmax;
            }
            for (int32_t k = 0; k < EP_ADAPT_CLASSES; ++k) {
                logits[k] = expf(logits[k] - zmax);
                sum += logits[k];
            }
            for (int32_t k = 0; k < EP_ADAPT_CLASSES; ++k) {
                logits[k] /= sum;
            }
        }
        for (int32_t k = 0; k < EP_ADAPT_CLASSES && k < EP_MODEL_OUTPUT_SIZE; ++k) {
            const float q = roundf(logits[k] / EP_MODEL_OUTPUT_SCALE) + (float)EP_MODEL_OUTPUT_ZERO_POINT;
            out[k] = (uint8_t)(int8_t)(q < -128.0f ? -128 : (q > 127.0f ? 127 : (int32_t)q));
        }
    } else {
        rc = ep_model_invoke((const int8_t *)in, (int8_t *)out) == EP_MODEL_OK ? 0 : -1;
    }
    ep_region_end();
    const uint32_t cycles = ep_cycles_now() - start;
    if (rc != 0) {
        return refuse(out, out_n, "infer failed") - EP_ERR_ADAPT + EP_ERR_MODEL_ERROR;
    }
    put_u32(out + EP_MODEL_OUTPUT_SIZE, ep_cycles_available() ? cycles : 0xFFFFFFFFu);
    *out_n = EP_MODEL_OUTPUT_SIZE + 4;
    return 0;
}

static int cmd_end(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    (void)in;
    (void)n;
    if (!active || in_epoch) {
        return refuse(out, out_n, "adapt_end: no adaptation to end (or an epoch is still running)");
    }
    active = 0;
    adapted = 1;
    pool_used = 0;
    ep_protocol_register(EP_KIND_INFER, cmd_infer_adapted); /* from now on `infer` runs the adapted region */
    uint32_t saved = 0;
#ifdef EP_WITH_STORE
    saved = ep_store_save((const uint8_t *)params, (uint32_t)sizeof params) == EP_STORE_OK;
#endif
    put_u32(out, saved);
    *out_n = 4;
    return 0;
}

static int cmd_reset(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    (void)in;
    (void)n;
    (void)out;
    init_params();
    memcpy(params, ep_adapt_factory, sizeof params);
    active = in_epoch = adapted = 0;
    pool_used = 0;
#ifdef EP_WITH_STORE
    (void)ep_store_rollback();
#endif
    *out_n = 0;
    return 0;
}

void ep_adapt_register(void)
{
#ifdef EP_WITH_STORE
    uint32_t n = 0;
    const uint8_t *blob = ep_store_active(&n);
    if (blob != NULL && n == sizeof params) { /* boot the adapted parameters */
        init_params();
        memcpy(params, blob, sizeof params);
        adapted = 1;
    }
#endif
    ep_protocol_register(EP_KIND_ADAPT_BEGIN, cmd_begin);
    ep_protocol_register(EP_KIND_ADAPT_PROBE, cmd_probe);
    ep_protocol_register(EP_KIND_ADAPT_EPOCH, cmd_epoch);
    ep_protocol_register(EP_KIND_ADAPT_SAMPLE, cmd_sample);
    ep_protocol_register(EP_KIND_ADAPT_EPOCH_END, cmd_epoch_end);
    ep_protocol_register(EP_KIND_ADAPT_EVAL, cmd_eval);
    ep_protocol_register(EP_KIND_ADAPT_END, cmd_end);
    ep_protocol_register(EP_KIND_ADAPT_RESET, cmd_reset);
    if (adapted) {
        ep_protocol_register(EP_KIND_INFER, cmd_infer_adapted);
    }
}

#else
typedef int ep_adapt_translation_unit_not_empty; /* C99 forbids an empty translation unit */
#endif /* EP_WITH_ADAPT */
