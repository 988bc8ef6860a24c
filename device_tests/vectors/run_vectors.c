/* Test-vector runner: replays ops recorded on the host (with TFLite Micro's outputs as the
 * expectation) through this build's dispatched kernels, on the device or its emulator.
 *
 *   run_vectors <file>     prints the backend, then per op "op <name> cases <n> mismatches <m>";
 *                          exit status 0 when every output is bit-exact, 1 on any mismatch,
 *                          2 when the file cannot be read or is malformed.
 *
 * File format (little-endian; written by device_tests/device_support.py):
 *   file  := "EPV1" u32 n_cases case*
 *   case  := u32 op u32 id u32 n_params i32 params[n_params] u32 n_arrays array[n_arrays]
 *   array := u32 elem_size (1: int8, 4: int32) u32 count bytes[elem_size * count] pad to 4 bytes
 * The last array of every case is the expected int8 output. What the params and the other
 * arrays mean is the op's own (see the table at the end); adding an op is one run function and
 * one table row here, and one encoder on the Python side.
 *
 * Cases are read one at a time, so the whole file never has to fit in a small device's RAM.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ep_kernels.h"

#define MAX_PARAMS 64
#define MAX_ARRAYS 8

typedef struct {
    uint32_t elem_size;
    uint32_t count;
    void *data; /* NULL when count is 0 */
} array_t;

typedef struct {
    const int32_t *p;
    uint32_t n_params;
    array_t *a;
    uint32_t n_arrays;
} case_t;

static const int8_t *i8(const case_t *c, uint32_t i)
{
    return (const int8_t *)c->a[i].data;
}

static const int32_t *i32(const case_t *c, uint32_t i)
{
    return (const int32_t *)c->a[i].data;
}

static ep_dims_t dims_at(const int32_t *p)
{
    ep_dims_t d = {p[0], p[1], p[2], p[3]};
    return d;
}

/* Quantization params at p: input_offset, output_offset, activation_min, activation_max; the
 * per-channel multiplier and shift are arrays. */
static ep_quant_t quant_at(const int32_t *p, const int32_t *multiplier, const int32_t *shift)
{
    ep_quant_t q = {p[0], p[1], p[2], p[3], multiplier, shift};
    return q;
}

static void *scratch_alloc(int32_t bytes)
{
    /* malloc's alignment (8) covers the kernels' 4-byte requirement. */
    return bytes > 0 ? malloc((size_t)bytes) : NULL;
}

/* CONV_2D. params: input dims(4) filter dims(4) output dims(4) stride_h stride_w dilation_h
 * dilation_w pad_h pad_w quant(4). arrays: input filter bias multiplier shift expected. */
static int run_conv2d(const case_t *c, int8_t *out)
{
    const int32_t *p = c->p;
    const ep_dims_t in = dims_at(p), filt = dims_at(p + 4), outd = dims_at(p + 8);
    const ep_conv_params_t cp = {p[12], p[13], p[14], p[15], p[16], p[17]};
    const ep_quant_t q = quant_at(p + 18, i32(c, 3), i32(c, 4));
    const int32_t size = ep_conv2d_s8_scratch_size(&in, &filt, &outd);
    void *scratch = scratch_alloc(size);
    if (size > 0 && !scratch) {
        return -1;
    }
    ep_conv2d_s8(&cp, &q, &in, i8(c, 0), &filt, i8(c, 1), i32(c, 2), &outd, out, scratch);
    free(scratch);
    return 0;
}

/* DEPTHWISE_CONV_2D. params: as CONV_2D, then depth_multiplier. arrays: as CONV_2D. */
static int run_depthwise_conv2d(const case_t *c, int8_t *out)
{
    const int32_t *p = c->p;
    const ep_dims_t in = dims_at(p), filt = dims_at(p + 4), outd = dims_at(p + 8);
    const ep_conv_params_t cp = {p[12], p[13], p[14], p[15], p[16], p[17]};
    const ep_quant_t q = quant_at(p + 18, i32(c, 3), i32(c, 4));
    const int32_t size = ep_depthwise_conv2d_s8_scratch_size(&in, &filt, &outd);
    void *scratch = scratch_alloc(size);
    if (size > 0 && !scratch) {
        return -1;
    }
    ep_depthwise_conv2d_s8(&cp, p[22], &q, &in, i8(c, 0), &filt, i8(c, 1), i32(c, 2), &outd, out, scratch);
    free(scratch);
    return 0;
}

/* FULLY_CONNECTED. params: batches in_features out_features quant(4).
 * arrays: input filter bias multiplier shift expected. */
static int run_fully_connected(const case_t *c, int8_t *out)
{
    const int32_t *p = c->p;
    const ep_quant_t q = quant_at(p + 3, i32(c, 3), i32(c, 4));
    const int32_t size = ep_fully_connected_s8_scratch_size(p[0], p[1], p[2]);
    void *scratch = scratch_alloc(size);
    if (size > 0 && !scratch) {
        return -1;
    }
    ep_fully_connected_s8(&q, p[0], p[1], p[2], i8(c, 0), i8(c, 1), i32(c, 2), out, scratch);
    free(scratch);
    return 0;
}

/* AVERAGE_POOL_2D and MAX_POOL_2D. params: input dims(4) output dims(4) ep_pool_params_t(8).
 * arrays: input expected. */
static int run_pool(const case_t *c, int8_t *out, int average)
{
    const int32_t *p = c->p;
    const ep_dims_t in = dims_at(p), outd = dims_at(p + 4);
    const ep_pool_params_t pp = {p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15]};
    (average ? ep_average_pool2d_s8 : ep_max_pool2d_s8)(&pp, &in, i8(c, 0), &outd, out);
    return 0;
}

static int run_average_pool2d(const case_t *c, int8_t *out)
{
    return run_pool(c, out, 1);
}

static int run_max_pool2d(const case_t *c, int8_t *out)
{
    return run_pool(c, out, 0);
}

/* ADD. params: input1 dims(4) input2 dims(4) output dims(4) ep_add_params_t(12).
 * arrays: input1 input2 expected. */
static int run_add(const case_t *c, int8_t *out)
{
    const int32_t *p = c->p;
    const ep_dims_t a = dims_at(p), b = dims_at(p + 4), o = dims_at(p + 8);
    const ep_add_params_t ap = {p[12], p[13], p[14], p[15], p[16], p[17], p[18], p[19], p[20], p[21], p[22], p[23]};
    ep_add_s8(&ap, &a, i8(c, 0), &b, i8(c, 1), &o, out);
    return 0;
}

/* MUL. params: input1 dims(4) input2 dims(4) output dims(4) ep_mul_params_t(7). arrays: as ADD. */
static int run_mul(const case_t *c, int8_t *out)
{
    const int32_t *p = c->p;
    const ep_dims_t a = dims_at(p), b = dims_at(p + 4), o = dims_at(p + 8);
    const ep_mul_params_t mp = {p[12], p[13], p[14], p[15], p[16], p[17], p[18]};
    ep_mul_s8(&mp, &a, i8(c, 0), &b, i8(c, 1), &o, out);
    return 0;
}

/* MEAN over H and W. params: input dims(4) ep_mean_params_t(4). arrays: input expected. */
static int run_mean(const case_t *c, int8_t *out)
{
    const int32_t *p = c->p;
    const ep_dims_t in = dims_at(p);
    const ep_mean_params_t mp = {p[4], p[5], p[6], p[7]};
    ep_mean_s8(&mp, &in, i8(c, 0), out);
    return 0;
}

/* SOFTMAX. params: outer_size depth ep_softmax_s8_params_t(3). arrays: input expected. */
static int run_softmax(const case_t *c, int8_t *out)
{
    const int32_t *p = c->p;
    const ep_softmax_s8_params_t sp = {p[2], p[3], p[4]};
    ep_softmax_s8(&sp, p[0], p[1], i8(c, 0), out);
    return 0;
}

/* LOGISTIC and TANH. params: size ep_logistic_tanh_s8_params_t(4). arrays: input expected. */
static int run_logistic(const case_t *c, int8_t *out)
{
    const int32_t *p = c->p;
    const ep_logistic_tanh_s8_params_t lp = {p[1], p[2], p[3], p[4]};
    ep_logistic_s8(&lp, p[0], i8(c, 0), out);
    return 0;
}

static int run_tanh(const case_t *c, int8_t *out)
{
    const int32_t *p = c->p;
    const ep_logistic_tanh_s8_params_t lp = {p[1], p[2], p[3], p[4]};
    ep_tanh_s8(&lp, p[0], i8(c, 0), out);
    return 0;
}

typedef struct {
    uint32_t code;    /* the op code in the file */
    const char *name;
    uint32_t n_params; /* exact counts, checked before the op runs */
    uint32_t n_arrays; /* including the expected output */
    int (*run)(const case_t *c, int8_t *out);
    uint32_t cases, mismatches;
} op_t;

static op_t ops[] = {
    {1, "conv2d", 22, 6, run_conv2d, 0, 0},
    {2, "depthwise_conv2d", 23, 6, run_depthwise_conv2d, 0, 0},
    {3, "fully_connected", 7, 6, run_fully_connected, 0, 0},
    {4, "average_pool2d", 16, 2, run_average_pool2d, 0, 0},
    {5, "max_pool2d", 16, 2, run_max_pool2d, 0, 0},
    {6, "add", 24, 3, run_add, 0, 0},
    {7, "mul", 19, 3, run_mul, 0, 0},
    {8, "mean", 8, 2, run_mean, 0, 0},
    {9, "softmax", 5, 2, run_softmax, 0, 0},
    {10, "logistic", 5, 2, run_logistic, 0, 0},
    {11, "tanh", 5, 2, run_tanh, 0, 0},
};

static int read_u32(FILE *f, uint32_t *v)
{
    return fread(v, sizeof *v, 1, f) == 1;
}

static int read_array(FILE *f, array_t *a)
{
    if (!read_u32(f, &a->elem_size) || !read_u32(f, &a->count) || (a->elem_size != 1 && a->elem_size != 4)) {
        return 0;
    }
    const size_t bytes = (size_t)a->elem_size * a->count, padded = (bytes + 3u) & ~(size_t)3u;
    a->data = NULL;
    if (padded == 0) {
        return 1;
    }
    a->data = malloc(padded);
    if (!a->data || fread(a->data, 1, padded, f) != padded) {
        free(a->data);
        a->data = NULL;
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: run_vectors <file>\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    char magic[4];
    uint32_t n_cases = 0;
    if (!f || fread(magic, 1, 4, f) != 4 || memcmp(magic, "EPV1", 4) != 0 || !read_u32(f, &n_cases)) {
        fprintf(stderr, "cannot read vector file %s\n", argv[1]);
        return 2;
    }
    printf("backend %s\n", ep_backend_name());
    const uint32_t n_ops = sizeof ops / sizeof ops[0];
    int status = 0;
    for (uint32_t k = 0; k < n_cases && status != 2; ++k) {
        uint32_t code, id, n_params, n_arrays;
        int32_t params[MAX_PARAMS];
        array_t arrays[MAX_ARRAYS];
        uint32_t n_read = 0;
        if (!read_u32(f, &code) || !read_u32(f, &id) || !read_u32(f, &n_params) || n_params > MAX_PARAMS ||
            fread(params, sizeof params[0], n_params, f) != n_params || !read_u32(f, &n_arrays) ||
            n_arrays > MAX_ARRAYS || n_arrays == 0) {
            fprintf(stderr, "malformed case header at case %lu\n", (unsigned long)k);
            status = 2;
            break;
        }
        while (n_read < n_arrays && read_array(f, &arrays[n_read])) {
            ++n_read;
        }
        op_t *op = NULL;
        for (uint32_t i = 0; i < n_ops; ++i) {
            op = ops[i].code == code ? &ops[i] : op;
        }
        const array_t *expected = &arrays[n_arrays - 1];
        int8_t *got = NULL;
        if (n_read != n_arrays || !op || op->n_params != n_params || op->n_arrays != n_arrays ||
            expected->elem_size != 1 || expected->count == 0) {
            fprintf(stderr, "case %lu (id %lu): unknown op %lu or malformed arrays\n", (unsigned long)k,
                    (unsigned long)id, (unsigned long)code);
            status = 2;
        } else if ((got = malloc(expected->count)) == NULL) {
            fprintf(stderr, "case %lu: out of memory\n", (unsigned long)id);
            status = 2;
        } else {
            memset(got, 0, expected->count);
            const case_t c = {params, n_params, arrays, n_arrays};
            if (op->run(&c, got) != 0) {
                fprintf(stderr, "case %lu: out of memory for scratch\n", (unsigned long)id);
                status = 2;
            } else {
                const int8_t *want = (const int8_t *)expected->data;
                uint32_t wrong = 0, first = 0;
                for (uint32_t i = 0; i < expected->count; ++i) {
                    if (got[i] != want[i] && wrong++ == 0) {
                        first = i;
                    }
                }
                op->cases++;
                if (wrong) {
                    op->mismatches++;
                    status = 1;
                    printf("MISMATCH op %s case %lu: %lu of %lu outputs differ, first at %lu: got %d expected %d\n",
                           op->name, (unsigned long)id, (unsigned long)wrong, (unsigned long)expected->count,
                           (unsigned long)first, got[first], want[first]);
                }
            }
        }
        free(got);
        for (uint32_t i = 0; i < n_read; ++i) {
            free(arrays[i].data);
        }
    }
    fclose(f);
    for (uint32_t i = 0; i < n_ops; ++i) {
        printf("op %s cases %lu mismatches %lu\n", ops[i].name, (unsigned long)ops[i].cases,
               (unsigned long)ops[i].mismatches);
    }
    printf("%s\n", status == 0 ? "PASS" : "FAIL");
    return status;
}
