/* The device firmware: serves the host-device protocol (firmware/PROTOCOL.md) for one compiled
 * model (model.c, built with -DEP_MODEL_LAYER_HOOKS). Commands: info, infer, bench, exit; more
 * are added with ep_protocol_register (kinds 0x10..0x3F are the adaptation issue's).
 *
 * Instruction counts under QEMU: `infer` runs the model between ep_region_begin/end; `bench`
 * runs it with the per-layer hooks active, so each layer sits between its own pair. The hooks are
 * always compiled in (one model.c, one set of weights in flash); outside `bench` each costs a
 * call and a test, about 5 instructions per hook call, which the `infer` count includes. */
#include <stdint.h>

#include "ep_backend.h"
#include "ep_io.h"
#include "markers.h"
#include "model.h"
#include "protocol.h"
#ifdef EP_WITH_STORE
#include "param_store.h" /* adapted parameters in flash (issue 6) */
#endif

/* Every tensor crosses the wire in one frame. */
#if EP_MODEL_INPUT_SIZE > EP_PROTO_MAX_PAYLOAD || EP_MODEL_OUTPUT_SIZE + 4 > EP_PROTO_MAX_PAYLOAD
#error "the model's input or output does not fit one protocol frame (EP_PROTO_MAX_PAYLOAD bytes)"
#endif
#if 8 + 4 * EP_MODEL_NUM_LAYERS > EP_PROTO_MAX_PAYLOAD
#error "too many layers for one bench response"
#endif

#ifndef EP_BOARD_NAME
#define EP_BOARD_NAME "unknown"
#endif
#ifndef EP_BUILD_FLAGS
#define EP_BUILD_FLAGS ""
#endif

/* ---- stack painting: fill the unused stack with a pattern at start-up; the lowest word that
 * no longer holds it is the deepest the stack has been. */
#define STACK_PATTERN 0xA5A5A5A5u
#define STACK_MARGIN 256u /* left unpainted below the painter's own frame */

#if defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'
extern uint32_t __stack_limit__, __stack_top__; /* firmware/boards/common.ld */
#define STACK_FROM_LINKER 1
#else
#define STACK_WINDOW (64u * 1024u) /* Linux: watch this much below main's frame */
#endif

static uintptr_t stack_low, stack_painted_end, stack_top;

__attribute__((noinline)) static void paint_stack(void)
{
    volatile uint8_t here = 0;
    const uintptr_t sp = (uintptr_t)&here;
#ifdef STACK_FROM_LINKER
    stack_low = (uintptr_t)&__stack_limit__;
    stack_top = (uintptr_t)&__stack_top__;
#else
    stack_top = sp;
    stack_low = sp - STACK_WINDOW;
#endif
    stack_painted_end = (sp - STACK_MARGIN) & ~(uintptr_t)3;
    for (uintptr_t p = stack_low; p < stack_painted_end; p += 4) {
        *(volatile uint32_t *)p = STACK_PATTERN;
    }
}

static uint32_t stack_peak_bytes(void)
{
    uintptr_t p = stack_low;
    while (p < stack_painted_end && *(volatile const uint32_t *)p == STACK_PATTERN) {
        p += 4;
    }
    return (uint32_t)(stack_top - p);
}

#ifdef EP_WITH_ADAPT
void ep_adapt_register(void); /* firmware/adapt.c: on-device adaptation (issue 6) */
uint32_t ep_device_stack_peak(void); /* for adapt.c's epoch reports */
uint32_t ep_device_stack_peak(void)
{
    return stack_peak_bytes();
}
#endif

/* ---- per-layer hooks of model.c: active only while `bench` runs. */
static int bench_active;
static uint32_t layer_start, layer_cycles[EP_MODEL_NUM_LAYERS];

void ep_model_layer_begin(int32_t layer)
{
    (void)layer;
    if (bench_active) {
        layer_start = ep_cycles_now();
        ep_region_begin();
    }
}

void ep_model_layer_end(int32_t layer)
{
    if (bench_active) {
        ep_region_end();
        if (layer >= 0 && layer < EP_MODEL_NUM_LAYERS) {
            layer_cycles[layer] = ep_cycles_now() - layer_start;
        }
    }
}

/* ---- response helpers (no printf: it would cost more flash than the whole firmware). */
static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

typedef struct {
    uint8_t *buf;
    uint32_t n;
} text_t;

static void put_text(text_t *t, const char *s)
{
    while (*s != '\0' && t->n < EP_PROTO_MAX_PAYLOAD) {
        t->buf[t->n++] = (uint8_t)*s++;
    }
}

static void put_dec(text_t *t, uint32_t v)
{
    char digits[11];
    int i = 10;
    digits[i] = '\0';
    do {
        digits[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0);
    put_text(t, digits + i);
}

static void put_key_dec(text_t *t, const char *key, uint32_t v)
{
    put_text(t, key);
    put_dec(t, v);
    put_text(t, "\n");
}

static int model_error(int rc, uint8_t *out, uint32_t *out_n)
{
    text_t t = {out, 0};
    put_text(&t, "ep_model_invoke returned -");
    put_dec(&t, (uint32_t)(-(int64_t)rc));
    *out_n = t.n;
    return EP_ERR_MODEL_ERROR;
}

static int bad_length(uint8_t *out, uint32_t *out_n)
{
    text_t t = {out, 0};
    put_key_dec(&t, "payload must be input_bytes=", EP_MODEL_INPUT_SIZE);
    *out_n = t.n - 1; /* without the newline */
    return EP_ERR_BAD_LENGTH;
}

/* ---- commands */
static int cmd_info(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    (void)in;
    if (n != 0) {
        *out_n = 0;
        return EP_ERR_BAD_LENGTH;
    }
    text_t t = {out, 0};
    put_text(&t, "protocol=1\nmodel_hash=" EP_MODEL_HASH "\n");
    put_key_dec(&t, "arena_bytes=", EP_MODEL_ARENA_SIZE);
    put_key_dec(&t, "input_bytes=", EP_MODEL_INPUT_SIZE);
    put_key_dec(&t, "output_bytes=", EP_MODEL_OUTPUT_SIZE);
    put_key_dec(&t, "layers=", EP_MODEL_NUM_LAYERS);
    put_text(&t, "layer_names=");
    for (int i = 0; i < EP_MODEL_NUM_LAYERS; ++i) {
        put_text(&t, i > 0 ? "," : "");
        put_text(&t, ep_model_layer_names[i]);
    }
    put_text(&t, "\n");
    put_key_dec(&t, "max_payload=", EP_PROTO_MAX_PAYLOAD);
    put_text(&t, "backend=" EP_BACKEND_NAME "\nboard=" EP_BOARD_NAME "\ncompiler=");
#ifdef __VERSION__
    put_text(&t, "gcc " __VERSION__);
#endif
    put_text(&t, ep_cycles_available() ? "\ncycle_counter=dwt\n" : "\ncycle_counter=none\n");
    put_key_dec(&t, "stack_bytes=", (uint32_t)(stack_top - stack_low));
    put_key_dec(&t, "stack_peak_bytes=", stack_peak_bytes());
    put_text(&t, "build_flags=" EP_BUILD_FLAGS "\n");
    *out_n = t.n;
    return 0;
}

static int cmd_infer(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    if (n != EP_MODEL_INPUT_SIZE) {
        return bad_length(out, out_n);
    }
    const uint32_t start = ep_cycles_now();
    ep_region_begin();
    const int rc = ep_model_invoke((const int8_t *)in, (int8_t *)out);
    ep_region_end();
    const uint32_t cycles = ep_cycles_now() - start;
    if (rc != EP_MODEL_OK) {
        return model_error(rc, out, out_n);
    }
    put_u32(out + EP_MODEL_OUTPUT_SIZE, ep_cycles_available() ? cycles : 0xFFFFFFFFu);
    *out_n = EP_MODEL_OUTPUT_SIZE + 4;
    return 0;
}

static int cmd_bench(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    static int8_t output[EP_MODEL_OUTPUT_SIZE];
    if (n != EP_MODEL_INPUT_SIZE) {
        return bad_length(out, out_n);
    }
    bench_active = 1;
    const int rc = ep_model_invoke((const int8_t *)in, output);
    bench_active = 0;
    if (rc != EP_MODEL_OK) {
        return model_error(rc, out, out_n);
    }
    put_u32(out, EP_MODEL_NUM_LAYERS);
    for (int i = 0; i < EP_MODEL_NUM_LAYERS; ++i) {
        put_u32(out + 4 + 4 * i, ep_cycles_available() ? layer_cycles[i] : 0xFFFFFFFFu);
    }
    put_u32(out + 4 + 4 * EP_MODEL_NUM_LAYERS, stack_peak_bytes());
    *out_n = 8 + 4 * EP_MODEL_NUM_LAYERS;
    return 0;
}

static int exit_requested;

static int cmd_exit(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t *out_n)
{
    (void)in;
    (void)n;
    (void)out;
    *out_n = 0;
    exit_requested = 1;
    return 0;
}

int main(void)
{
    ep_io_init();
    paint_stack();
    ep_model_init();
    ep_protocol_register(EP_KIND_INFO, cmd_info);
    ep_protocol_register(EP_KIND_INFER, cmd_infer);
    ep_protocol_register(EP_KIND_BENCH, cmd_bench);
    ep_protocol_register(EP_KIND_EXIT, cmd_exit);
#ifdef EP_WITH_STORE
    ep_store_init(); /* picks the newest valid slot before anything asks for it */
    ep_store_register_commands();
#endif
#ifdef EP_WITH_ADAPT
    ep_adapt_register(); /* after the store: it boots the adapted parameters */
#endif
    for (;;) {
        ep_protocol_serve_one();
        if (exit_requested) {
            ep_device_exit(0); /* after the response went out */
        }
    }
}
