/* A QEMU TCG plugin for targets/x86_64-qemu/profile.sh: the instructions executed by
   every translation block, by its start address, written to `out=FILE` at exit as
   "vaddr(hex) instructions-in-block executions" lines. With `on=ADDR,off=ADDR` (hex),
   only what runs between an execution of the block at ADDR `on` and one at `off` counts
   (the kernel bench's markers `bench_profile_on` / `bench_profile_off`).

   The declarations below are the few of QEMU's plugin API (include/qemu/qemu-plugin.h,
   API version 1 as in QEMU 7.2) that this uses: Debian ships QEMU with plugin support
   but not the header. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr, uint64_t imm);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb, enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
__attribute__((visibility("default"))) int qemu_plugin_version = 1;

struct rec { uint64_t vaddr, n, execs; struct rec *next; };
static struct rec *all;
static const char *out = "/tmp/k9plug/tb.txt";
static uint64_t on_addr, off_addr;
static int on = 1;
static void exec_cb(unsigned int vcpu, void *u) { struct rec *r = u; if (on) r->execs++; }
static void on_cb(unsigned int vcpu, void *u) { on = 1; }
static void off_cb(unsigned int vcpu, void *u) { on = 0; }

static void trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    struct rec *r = calloc(1, sizeof *r);
    r->vaddr = qemu_plugin_tb_vaddr(tb);
    r->n = qemu_plugin_tb_n_insns(tb);
    r->next = all; all = r;
    if (on_addr) {
        if (r->vaddr == on_addr) qemu_plugin_register_vcpu_tb_exec_cb(tb, on_cb, QEMU_PLUGIN_CB_NO_REGS, r);
        if (r->vaddr == off_addr) qemu_plugin_register_vcpu_tb_exec_cb(tb, off_cb, QEMU_PLUGIN_CB_NO_REGS, r);
        qemu_plugin_register_vcpu_tb_exec_cb(tb, exec_cb, QEMU_PLUGIN_CB_NO_REGS, r);
    } else
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &r->execs, 1);
}
static void done(qemu_plugin_id_t id, void *u) {
    FILE *f = fopen(out, "w");
    for (struct rec *r = all; r; r = r->next) if (r->execs) fprintf(f, "%lx %lu %lu\n", r->vaddr, r->n, r->execs);
    fclose(f);
}
__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "on=", 3)) { on_addr = strtoull(argv[i] + 3, 0, 16); on = 0; }
        if (!strncmp(argv[i], "off=", 4)) off_addr = strtoull(argv[i] + 4, 0, 16);
        if (!strncmp(argv[i], "out=", 4)) out = argv[i] + 4;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, trans);
    qemu_plugin_register_atexit_cb(id, done, NULL);
    return 0;
}
