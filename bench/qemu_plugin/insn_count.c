/* QEMU TCG plugin: exact instruction counts between two marker functions.
 *
 * QEMU has no cycle counter, so we count executed guest instructions instead. The program
 * under test calls a `begin` marker function, runs the code to measure, then calls an `end`
 * marker. Each end prints one line "region <n> <instructions>" (instructions executed from the
 * first instruction of `begin` up to, not including, the first instruction of `end`), and the
 * exit prints "total <instructions>". Counts are identical run after run.
 *
 *   qemu-system-arm ... -plugin libinsncount.so,begin=0x1234,end=0x1240,out=counts.txt
 *
 * Addresses come from the ELF symbol table (the Thumb bit is ignored). Without `out`, lines go
 * to QEMU's log (stderr). Single vCPU only, which is all our targets have.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static uint64_t executed;     /* incremented inline before every guest instruction */
static uint64_t region_start;
static uint64_t regions;
static uint64_t begin_addr = UINT64_MAX, end_addr = UINT64_MAX;
static FILE *out;

static void emit(const char *line)
{
    if (out) {
        fputs(line, out);
        fflush(out);
    } else {
        qemu_plugin_outs(line);
    }
}

static void on_begin(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    (void)udata;
    region_start = executed - 1; /* the marker's own first instruction is already counted */
}

static void on_end(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    (void)udata;
    char line[64];
    snprintf(line, sizeof line, "region %" PRIu64 " %" PRIu64 "\n", regions++, executed - 1 - region_start);
    emit(line);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    const size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; ++i) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &executed, 1);
        const uint64_t addr = qemu_plugin_insn_vaddr(insn) & ~(uint64_t)1;
        if (addr == begin_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_begin, QEMU_PLUGIN_CB_NO_REGS, NULL);
        } else if (addr == end_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_end, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
    }
}

static void on_program_exit(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    char line[64];
    snprintf(line, sizeof line, "total %" PRIu64 "\n", executed);
    emit(line);
    if (out) {
        fclose(out);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; ++i) {
        if (strncmp(argv[i], "begin=", 6) == 0) {
            begin_addr = strtoull(argv[i] + 6, NULL, 0) & ~(uint64_t)1;
        } else if (strncmp(argv[i], "end=", 4) == 0) {
            end_addr = strtoull(argv[i] + 4, NULL, 0) & ~(uint64_t)1;
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            out = fopen(argv[i] + 4, "w");
            if (!out) {
                fprintf(stderr, "insn_count: cannot write %s\n", argv[i] + 4);
                return -1;
            }
        } else {
            fprintf(stderr, "insn_count: unknown argument %s (expected begin=, end=, out=)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_program_exit, NULL);
    return 0;
}
