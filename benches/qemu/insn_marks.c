/*
 * A qemu TCG plugin for user-mode qemu (qemu-aarch64, qemu-arm, qemu-x86_64; plugin API 1,
 * qemu 7.2 as in Debian 12): counts guest instructions executed and prints the running count
 * whenever the guest calls getppid(2), which benches/stage_instructions.rs uses as its stage
 * marker (nothing else in facegate calls it). Each translation block adds its instruction count
 * when it runs (an inline add, no callback per instruction).
 *
 *   gcc -shared -fPIC -O2 -o insn_marks.so insn_marks.c
 *   qemu-aarch64 -cpu cortex-a72 -plugin ./insn_marks.so PROGRAM
 *
 * The few declarations it needs from qemu's include/qemu/qemu-plugin.h (API version 1) are
 * written out here, since Debian ships no header for them.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stddef.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*syscall_cb)(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                           uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                           uint64_t a7, uint64_t a8);
typedef void (*exit_cb)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, syscall_cb cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, exit_cb cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t insns;
static int64_t marker = -1;
static unsigned marks;

static void on_tb(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insns,
                                             qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    if (num == marker) {
        fprintf(stderr, "insn-mark %u %" PRIu64 "\n", marks++, insns);
    }
}

static void on_exit_(qemu_plugin_id_t id, void *userdata)
{
    fprintf(stderr, "insn-total %" PRIu64 "\n", insns);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info,
                                                               int argc, char **argv)
{
    /* getppid's number on the guest: aarch64 173, arm (EABI) 64, x86_64 110. */
    for (int i = 0; i < argc; i++) {
        if (sscanf(argv[i], "marker=%" SCNd64, &marker) == 1) {
            break;
        }
    }
    if (marker < 0) {
        fprintf(stderr, "insn_marks: pass -plugin insn_marks.so,marker=N (getppid's syscall number)\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_exit_, NULL);
    return 0;
}
