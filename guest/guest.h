/*
 * Definitions shared by the kernel half (kernel.c, virtio.c: CPL0) and the
 * user half (user.c: ring 3) of the built-in guest.
 *
 * All guest state lives in this image's .data/.bss (guest RAM), in registers
 * and in device state, so a snapshot taken at any instruction restores it.
 * Every page is mapped user-accessible, so ring 3 reads `g` directly; the
 * kernel writes it from ISRs and system calls, ring 3 writes only cmd_tail.
 */
#ifndef GUEST_GUEST_H
#define GUEST_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "abi.h"

/* Saved by isr_common (entry.S) in this order, lowest address first. */
struct frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};

/* System calls: int $0x80, number in rax, arguments in rdi, rsi, rdx, r10. */
#define SYS_PRINT  1 /* (buf, len): print one line, atomically w.r.t. tick lines */
#define SYS_WAIT   2 /* halt until the next interrupt unless a command is queued */
#define SYS_DISK   3 /* (disk, lba, buf, write): one 512-byte sector; returns 0 or <0 */
#define SYS_REBOOT 4 /* reset the machine (PC reset control register 0xCF9) */

#define DISK_ENODEV (-1)
#define DISK_ERANGE (-2)
#define DISK_EIO    (-3)

#define CMD_MAX      128
#define CMD_QUEUE    8
#define MAX_DISKS    8
#define MAX_DATA     GUEST_MAX_RAM_RANGES
#define CMD_TOO_LONG '\x01' /* first byte of a queued line that overflowed */

struct data_range {
    uint64_t base;
    uint64_t size;
};

struct shared {
    volatile uint64_t jiffies; /* PIT interrupts since boot */
    volatile uint64_t ticks;   /* printed ticks */
    uint32_t base_ms;          /* PIT period in ms */
    uint32_t tick_div;         /* PIT interrupts per tick */
    uint32_t sub;              /* PIT interrupts since the last tick */
    uint32_t nr_data;
    struct data_range data[MAX_DATA];
    uint64_t data_bytes;
    uint32_t nr_disks;
    uint64_t disk_sectors[MAX_DISKS];
    /* Complete command lines, produced by the serial ISR, consumed by ring 3. */
    char cmds[CMD_QUEUE][CMD_MAX];
    volatile uint32_t cmd_head;
    volatile uint32_t cmd_tail;
};

extern struct shared g;

static inline void barrier(void)
{
    __asm__ volatile("" ::: "memory");
}

/* lib.c */
void *memset(void *s, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
size_t strlen(const char *s);
int streq(const char *a, const char *b);
uint64_t mix64(uint64_t x);
uint64_t fill_word(uint64_t seed, uint64_t index);
uint64_t sum_word(uint64_t word, uint64_t index);
uint64_t sum_final(uint64_t acc, uint64_t nwords);
/* Small formatting helpers: append to buf at *pos, never past cap-1. */
void fmt_str(char *buf, size_t cap, size_t *pos, const char *s);
void fmt_dec(char *buf, size_t cap, size_t *pos, uint64_t v);
void fmt_hex16(char *buf, size_t cap, size_t *pos, uint64_t v);
bool parse_u64(const char *s, uint64_t *out);

/* kernel.c */
void kmain(struct guest_boot_info *bi);
void kputs_line(const char *s, size_t len);
void isr_dispatch(struct frame *f);
uint64_t syscall_dispatch(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t nr);

/* virtio.c (kernel) */
void virtio_probe(void);
int virtio_disk_io(uint32_t disk, uint64_t lba, void *buf, bool write);

/* user.c (ring 3) */
void user_main(void);

/* port I/O, kernel only */
static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

#endif
