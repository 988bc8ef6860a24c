/* The arm64 sparse variants against expected outputs computed on the host, bit for bit.
 *
 * Usage: check_sparse_variants <vectors.epsv> [bench]
 * The vector file (written by device_tests/test_arm64_sparse.py, little-endian, arrays 4-byte aligned):
 *   "EPSV", u32 cases; per case: u32 op (1 CONV_2D, 2 DEPTHWISE_CONV_2D, 3 FULLY_CONNECTED), u32 id,
 *   u32 n_params, i32 params[n_params], then 5 arrays (u32 bytes, data, zero padding to 4):
 *   input int8, sparse blob, multipliers int32, shifts int32, expected output int8.
 *   conv / depthwise params: in n,h,w,c, filter h,w, out h,w,c, stride h,w, dilation h,w, pad h,w,
 *   depth multiplier, input offset, output offset, activation min, max (21).
 *   fully connected params: batches, input offset, output offset, activation min, max (5).
 * Every case runs the op's dispatcher and each arm64 variant of its format that this build has
 * (_neon_dot with the dot product extension, _neon always), with guard bytes after the output and
 * the scratch. Prints a line per failing case and a summary; exits non-zero on any mismatch.
 * With "bench", runs only the dispatcher, between calls to two noinline markers for the
 * instruction-counting QEMU plugin (bench/qemu_plugin/insn_count.c).
 */
#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ep_backend.h"
#include "ep_kernels.h"
#include "ep_sparse_s8.h"

#define GUARD 64
#define GUARD_BYTE 0x5A

void ep_bench_begin(void) __attribute__((noinline));
void ep_bench_end(void) __attribute__((noinline));
void ep_bench_begin(void)
{
    __asm__ volatile("" ::: "memory");
}
void ep_bench_end(void)
{
    __asm__ volatile("" ::: "memory");
}

typedef struct {
    uint32_t bytes;
    const uint8_t *data;
} array_t;

static uint32_t rd32(const uint8_t **p)
{
    uint32_t v;
    memcpy(&v, *p, 4);
    *p += 4;
    return v;
}

/* A 16-byte aligned copy (the blob must be 4-byte aligned for ep_sparse_s8_view). */
static void *aligned_copy(const array_t *a, size_t extra)
{
    void *m = NULL;
    if (posix_memalign(&m, 16, a->bytes + extra + 16) != 0) {
        return NULL;
    }
    memcpy(m, a->data, a->bytes);
    return m;
}

typedef void (*conv_fn)(EP_CONV2D_S8_SPARSE_ARGS);
typedef void (*dw_fn)(EP_DEPTHWISE_CONV2D_S8_SPARSE_ARGS);
typedef void (*fc_fn)(EP_FULLY_CONNECTED_S8_SPARSE_ARGS);

typedef struct {
    const char *name;
    void (*fn)(void);
    int32_t scratch; /* bytes, or 0 for the op's ep_*_sparse_scratch_size */
} variant_t;

/* The arm64 variants of a format (none for the formats they do not cover). */
static int variants(uint32_t op, int32_t format, const ep_sparse_s8_t *w, const ep_dims_t *in_d,
                    const ep_dims_t *f_d, variant_t *out)
{
    int n = 0;
    out[n++] = (variant_t){"dispatcher", NULL, 0};
    if (op == 1 && format != EP_SPARSE_UNSTRUCTURED) {
        const int32_t s = ep_conv2d_s8_sparse_neon_scratch_size(w, in_d, f_d);
#if defined(__ARM_FEATURE_DOTPROD)
        out[n++] = format == EP_SPARSE_BLOCK4 ? (variant_t){"block4_neon_dot", (void (*)(void))ep_conv2d_s8_block4_neon_dot, s}
                   : format == EP_SPARSE_NM24 ? (variant_t){"nm24_neon_dot", (void (*)(void))ep_conv2d_s8_nm24_neon_dot, s}
                                              : (variant_t){"dead_neon_dot", (void (*)(void))ep_conv2d_s8_dead_neon_dot, s};
#endif
        out[n++] = format == EP_SPARSE_BLOCK4 ? (variant_t){"block4_neon", (void (*)(void))ep_conv2d_s8_block4_neon, s}
                   : format == EP_SPARSE_NM24 ? (variant_t){"nm24_neon", (void (*)(void))ep_conv2d_s8_nm24_neon, s}
                                              : (variant_t){"dead_neon", (void (*)(void))ep_conv2d_s8_dead_neon, s};
    }
    if (op == 3 && (format == EP_SPARSE_BLOCK4 || format == EP_SPARSE_DEAD)) {
        const int32_t s = ep_fully_connected_s8_sparse_neon_scratch_size(w);
        const int b4 = format == EP_SPARSE_BLOCK4;
#if defined(__ARM_FEATURE_DOTPROD)
        out[n++] = b4 ? (variant_t){"block4_neon_dot", (void (*)(void))ep_fully_connected_s8_block4_neon_dot, s}
                      : (variant_t){"dead_neon_dot", (void (*)(void))ep_fully_connected_s8_dead_neon_dot, s};
#endif
        out[n++] = b4 ? (variant_t){"block4_neon", (void (*)(void))ep_fully_connected_s8_block4_neon, s}
                      : (variant_t){"dead_neon", (void (*)(void))ep_fully_connected_s8_dead_neon, s};
    }
    return n;
}

static const char *g_format_names[] = {"?", "unstructured", "block4", "nm24", "dead"};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s vectors.epsv [bench]\n", argv[0]);
        return 2;
    }
    const int bench = argc > 2 && strcmp(argv[2], "bench") == 0;
    FILE *f = fopen(argv[1], "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *file = malloc((size_t)size);
    if (file == NULL || fread(file, 1, (size_t)size, f) != (size_t)size || size < 8 || memcmp(file, "EPSV", 4) != 0) {
        fprintf(stderr, "bad vector file %s\n", argv[1]);
        return 2;
    }
    fclose(f);
    const uint8_t *p = file + 4;
    const uint32_t cases = rd32(&p);
    long runs = 0, failures = 0;

    for (uint32_t ci = 0; ci < cases; ++ci) {
        const uint32_t op = rd32(&p), id = rd32(&p), n_params = rd32(&p);
        int32_t prm[32];
        for (uint32_t i = 0; i < n_params; ++i) {
            prm[i] = (int32_t)rd32(&p);
        }
        array_t a[5];
        for (int i = 0; i < 5; ++i) {
            a[i].bytes = rd32(&p);
            a[i].data = p;
            p += (a[i].bytes + 3) & ~3u;
        }
        void *blob = aligned_copy(&a[1], 0);
        ep_sparse_s8_t w;
        if (blob == NULL || ep_sparse_s8_view(blob, (int32_t)a[1].bytes, &w) < 0) {
            printf("case %u: the blob does not load\n", id);
            ++failures;
            free(blob);
            continue;
        }
        int32_t *mult = aligned_copy(&a[2], 0), *shift = aligned_copy(&a[3], 0);
        const int8_t *input = (const int8_t *)a[0].data, *expect = (const int8_t *)a[4].data;
        const uint32_t out_bytes = a[4].bytes;
        int8_t *out = malloc(out_bytes + GUARD);
        ep_quant_t q;
        ep_dims_t in_d = {0, 0, 0, 0}, f_d = {0, 0, 0, 0}, out_d = {0, 0, 0, 0};
        ep_conv_params_t cp = {0, 0, 0, 0, 0, 0};
        int32_t dm = 1, batches = 0;
        const int32_t *qp;
        int32_t base_scratch;
        if (op == 3) {
            batches = prm[0];
            qp = prm + 1;
            base_scratch = ep_fully_connected_s8_sparse_scratch_size(&w, batches);
        } else {
            in_d = (ep_dims_t){prm[0], prm[1], prm[2], prm[3]};
            f_d = (ep_dims_t){op == 1 ? w.rows : 1, prm[4], prm[5], op == 1 ? prm[3] : w.rows};
            out_d = (ep_dims_t){prm[0], prm[6], prm[7], prm[8]};
            cp = (ep_conv_params_t){prm[9], prm[10], prm[11], prm[12], prm[13], prm[14]};
            dm = prm[15];
            qp = prm + 16;
            base_scratch = op == 1 ? ep_conv2d_s8_sparse_scratch_size(&w, &in_d, &f_d, &out_d)
                                   : ep_depthwise_conv2d_s8_sparse_scratch_size(&w, &in_d, &f_d, &out_d);
        }
        q = (ep_quant_t){qp[0], qp[1], qp[2], qp[3], mult, shift};

        variant_t vs[4];
        const int nv = bench ? 1 : variants(op, w.format, &w, &in_d, &f_d, vs);
        if (bench) {
            vs[0] = (variant_t){"dispatcher", NULL, 0};
        }
        for (int v = 0; v < nv; ++v) {
            const int32_t scratch_bytes = vs[v].scratch ? vs[v].scratch : base_scratch;
            uint8_t *scratch = NULL;
            if (posix_memalign((void **)&scratch, 16, (size_t)scratch_bytes + GUARD) != 0) {
                return 2;
            }
            memset(scratch, GUARD_BYTE, (size_t)scratch_bytes + GUARD);
            memset(out, GUARD_BYTE, out_bytes + GUARD);
            if (bench) {
                ep_bench_begin();
            }
            if (op == 1) {
                conv_fn fn = vs[v].fn ? (conv_fn)vs[v].fn : ep_conv2d_s8_sparse;
                fn(&cp, &q, &in_d, input, &f_d, &w, &out_d, out, scratch);
            } else if (op == 2) {
                dw_fn fn = ep_depthwise_conv2d_s8_sparse;
                fn(&cp, dm, &q, &in_d, input, &f_d, &w, &out_d, out, scratch);
            } else {
                fc_fn fn = vs[v].fn ? (fc_fn)vs[v].fn : ep_fully_connected_s8_sparse;
                fn(&q, batches, input, &w, out, scratch);
            }
            if (bench) {
                ep_bench_end();
            }
            ++runs;
            int32_t bad = 0, first = -1;
            for (uint32_t i = 0; i < out_bytes; ++i) {
                if (out[i] != expect[i]) {
                    bad += 1;
                    first = first < 0 ? (int32_t)i : first;
                }
            }
            int guard_ok = 1;
            for (int i = 0; i < GUARD; ++i) {
                guard_ok &= out[out_bytes + i] == (int8_t)GUARD_BYTE && scratch[scratch_bytes + i] == GUARD_BYTE;
            }
            if (bad || !guard_ok) {
                ++failures;
                printf("case %u op %u %s %s: %d of %u outputs differ (first at %d: %d, expected %d)%s\n", id, op,
                       g_format_names[w.format], vs[v].name, bad, out_bytes, first, first >= 0 ? out[first] : 0,
                       first >= 0 ? expect[first] : 0, guard_ok ? "" : ", wrote past output or scratch");
            }
            free(scratch);
        }
        free(out);
        free(mult);
        free(shift);
        free(blob);
    }
    printf("%s: %u cases, %ld runs, %ld failures\n", EP_BACKEND_NAME, cases, runs, failures);
    return failures != 0;
}
