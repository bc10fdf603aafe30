/*
 * The kernel half of the built-in guest (CPL0).
 *
 * On this host CPL0 code is emulated at about a million instructions a
 * second, so everything here is short: descriptor tables, the PIC and PIT,
 * the 8250 UART (polled output, interrupt-driven input), the timer tick, and
 * three system calls for ring 3.  The command interpreter and all heavy loops
 * live in user.c and run natively in ring 3.
 */
#include "guest.h"

#define KERNEL_CS 0x08
#define USER_DS   0x18
#define USER_CS   0x20
#define TSS_SEL   0x28

#define COM1     0x3f8
#define UART_RBR 0
#define UART_THR 0
#define UART_IER 1
#define UART_IIR 2
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_DLL 0
#define UART_DLM 1

#define PIT_HZ 1193182u

struct shared g;

struct tss {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
} __attribute__((packed));

struct idt_entry {
    uint16_t off_lo;
    uint16_t sel;
    uint8_t ist;
    uint8_t type;
    uint16_t off_mid;
    uint32_t off_hi;
    uint32_t zero;
} __attribute__((packed));

struct desc_ptr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

/* null, kernel code, kernel data, user data, user code, TSS (two slots). */
static uint64_t gdt[7] = {
        0,
        0x00af9a000000ffffULL,
        0x00cf92000000ffffULL,
        0x00cff2000000ffffULL,
        0x00affa000000ffffULL,
        0,
        0,
};
struct desc_ptr gdt_desc = {sizeof(gdt) - 1, (uint64_t)gdt};

static struct idt_entry idt[256];
static struct tss tss;
static uint8_t kernel_stack[16384] __attribute__((aligned(16)));
uint8_t *const kernel_stack_top_ptr = kernel_stack + sizeof(kernel_stack);
static uint8_t user_stack[65536] __attribute__((aligned(16)));

/* The serial line being typed (not yet a command). */
static char line[CMD_MAX];
static uint32_t line_len;
static bool line_overflow;

extern const uint64_t isr_table[48];
extern void enter_user(void (*rip)(void), void *rsp) __attribute__((noreturn));
extern char __mem_end[];

static void serial_putc(char c)
{
    /* Bounded: a wedged UART must not hang the guest. */
    for (int i = 0; i < 100000 && !(inb(COM1 + UART_LSR) & 0x20); i++) {
    }
    outb(COM1 + UART_THR, (uint8_t)c);
}

void kputs_line(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        serial_putc(s[i]);
    }
    serial_putc('\n');
}

static void kputs(const char *s)
{
    kputs_line(s, strlen(s));
}

static void idt_set(int vec, uint64_t handler, uint8_t type)
{
    struct idt_entry *e = &idt[vec];
    e->off_lo = (uint16_t)handler;
    e->sel = KERNEL_CS;
    e->ist = 0;
    e->type = type;
    e->off_mid = (uint16_t)(handler >> 16);
    e->off_hi = (uint32_t)(handler >> 32);
    e->zero = 0;
}

static void tables_init(void)
{
    uint64_t base = (uint64_t)&tss;
    uint64_t limit = sizeof(tss) - 1;
    tss.rsp[0] = (uint64_t)kernel_stack_top_ptr;
    tss.iomap_base = sizeof(tss); /* no I/O bitmap: ring 3 gets no ports */
    gdt[5] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) |
             (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
    gdt[6] = base >> 32;
    __asm__ volatile("ltr %w0" : : "r"(TSS_SEL));

    /* Interrupt gates: IF is cleared on entry. */
    for (int v = 0; v < 48; v++) {
        idt_set(v, isr_table[v], 0x8e);
    }
    struct desc_ptr p = {sizeof(idt) - 1, (uint64_t)idt};
    __asm__ volatile("lidt %0" : : "m"(p));
}

static void pic_init(void)
{
    /* ICW1..ICW4: cascade, vectors 32..47, 8086 mode. */
    outb(0x20, 0x11);
    outb(0xa0, 0x11);
    outb(0x21, 32);
    outb(0xa1, 40);
    outb(0x21, 4);
    outb(0xa1, 2);
    outb(0x21, 1);
    outb(0xa1, 1);
    outb(0x21, (uint8_t) ~((1 << 0) | (1 << 4))); /* timer and COM1 only */
    outb(0xa1, 0xff);
}

/* The PIT cannot count past ~54 ms, so long ticks are several PIT periods. */
static void pit_init(uint32_t tick_ms)
{
    uint32_t base = tick_ms;
    while (base > 50 || tick_ms % base) {
        base--;
    }
    g.base_ms = base;
    g.tick_div = tick_ms / base;
    uint32_t divisor = PIT_HZ * base / 1000;
    outb(0x43, 0x34); /* channel 0, lobyte/hibyte, mode 2 (rate generator) */
    outb(0x40, (uint8_t)divisor);
    outb(0x40, (uint8_t)(divisor >> 8));
}

static void uart_init(void)
{
    outb(COM1 + UART_IER, 0);
    outb(COM1 + UART_LCR, 0x80); /* DLAB */
    outb(COM1 + UART_DLL, 1);    /* 115200 baud */
    outb(COM1 + UART_DLM, 0);
    outb(COM1 + UART_LCR, 0x03); /* 8N1 */
    outb(COM1 + UART_FCR, 0x07); /* FIFOs on and cleared, trigger at 1 byte */
    outb(COM1 + UART_MCR, 0x0b); /* DTR, RTS, OUT2 (routes the IRQ) */
    while (inb(COM1 + UART_LSR) & 1) {
        (void)inb(COM1 + UART_RBR);
    }
    outb(COM1 + UART_IER, 0x01); /* received-data interrupt */
}

static uint32_t parse_tick_ms(const char *cmdline)
{
    const char *key = "tick_ms=";
    for (const char *p = cmdline; *p; p++) {
        if (p != cmdline && p[-1] != ' ') {
            continue;
        }
        size_t i = 0;
        while (key[i] && p[i] == key[i]) {
            i++;
        }
        if (key[i]) {
            continue;
        }
        char num[24];
        size_t n = 0;
        p += i;
        while (*p && *p != ' ' && n < sizeof(num) - 1) {
            num[n++] = *p++;
        }
        num[n] = 0;
        uint64_t v;
        if (parse_u64(num, &v) && v >= 1 && v <= 3600000) {
            return (uint32_t)v;
        }
        return 100;
    }
    return 100;
}

/* Data region: all RAM above the 2 MiB-aligned end of this image. */
static void data_init(const struct guest_boot_info *bi)
{
    uint64_t start = ((uint64_t)__mem_end + 0x1fffff) & ~0x1fffffULL;
    for (uint32_t i = 0; i < bi->nr_ranges && i < GUEST_MAX_RAM_RANGES; i++) {
        uint64_t b = bi->ranges[i].base, e = b + bi->ranges[i].size;
        if (b < start) {
            b = start;
        }
        if (e <= b) {
            continue;
        }
        g.data[g.nr_data].base = b;
        g.data[g.nr_data].size = e - b;
        g.data_bytes += e - b;
        g.nr_data++;
    }
}

void kmain(struct guest_boot_info *bi)
{
    tables_init();
    pic_init();
    uart_init();
    uint32_t tick_ms = 100;
    if (bi->magic == GUEST_BOOTINFO_MAGIC) {
        data_init(bi);
        tick_ms = parse_tick_ms(bi->cmdline);
    }
    pit_init(tick_ms);
    virtio_probe();
    kputs("snapvm guest ready");
    enter_user(user_main, user_stack + sizeof(user_stack));
}

static void print_tick(void)
{
    char buf[32];
    size_t pos = 0;
    fmt_str(buf, sizeof(buf), &pos, "tick ");
    fmt_dec(buf, sizeof(buf), &pos, g.ticks);
    kputs_line(buf, pos);
}

static void serial_resume(void);

static void timer_irq(void)
{
    g.jiffies++;
    serial_resume();
    if (++g.sub >= g.tick_div) {
        g.sub = 0;
        g.ticks++;
        print_tick();
    }
}

static void queue_line(void)
{
    char *dst = g.cmds[g.cmd_head % CMD_QUEUE];
    if (line_overflow) {
        dst[0] = CMD_TOO_LONG;
        dst[1] = 0;
    } else {
        memcpy(dst, line, line_len);
        dst[line_len] = 0;
    }
    barrier();
    g.cmd_head++;
}

static void serial_char(char c)
{
    if (c == '\r' || c == '\n') {
        if (line_len || line_overflow) {
            queue_line();
        }
        line_len = 0;
        line_overflow = false;
    } else if (c == 0x7f || c == 0x08) {
        if (line_len) {
            line_len--;
        }
    } else if (c >= 0x20 && c < 0x7f) {
        if (line_len < CMD_MAX - 1) {
            line[line_len++] = c;
        } else {
            line_overflow = true;
        }
    }
}

/*
 * The PIC is edge-triggered, so the ISR must leave the UART with no
 * interrupt pending, or no new edge ever comes: it reads until the receive
 * FIFO is empty.  When the command queue is full (or after a long burst) it
 * masks the UART's receive interrupt instead, leaving the bytes in the UART
 * (the VMM then stops reading its back end: nothing is lost); the timer
 * unmasks it once ring 3 has taken a command, which makes a fresh edge.
 */
static bool rx_paused;

static void serial_irq(void)
{
    (void)inb(COM1 + UART_IIR);
    for (int n = 0;; n++) {
        if (g.cmd_head - g.cmd_tail >= CMD_QUEUE || n == 512) {
            rx_paused = true;
            outb(COM1 + UART_IER, 0);
            return;
        }
        if (!(inb(COM1 + UART_LSR) & 1)) {
            return;
        }
        serial_char((char)inb(COM1 + UART_RBR));
    }
}

static void serial_resume(void)
{
    if (rx_paused && g.cmd_head - g.cmd_tail < CMD_QUEUE) {
        rx_paused = false;
        outb(COM1 + UART_IER, 0x01);
    }
}

static void fatal_exception(struct frame *f)
{
    char buf[96];
    size_t pos = 0;
    fmt_str(buf, sizeof(buf), &pos, "guest: exception ");
    fmt_dec(buf, sizeof(buf), &pos, f->vector);
    fmt_str(buf, sizeof(buf), &pos, " error ");
    fmt_hex16(buf, sizeof(buf), &pos, f->error);
    fmt_str(buf, sizeof(buf), &pos, " rip ");
    fmt_hex16(buf, sizeof(buf), &pos, f->rip);
    kputs_line(buf, pos);
    for (;;) {
        __asm__ volatile("cli; hlt");
    }
}

uint64_t syscall_dispatch(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t nr)
{
    switch (nr) {
    case SYS_PRINT:
        kputs_line((const char *)a, b < 256 ? b : 256);
        return 0;
    case SYS_WAIT:
        /* Checked with IF clear, and sti's one-instruction shadow makes
         * "sti; hlt" atomic: a command queued now cannot be slept through. */
        if (g.cmd_head == g.cmd_tail) {
            __asm__ volatile("sti; hlt; cli" ::: "memory");
        }
        return 0;
    case SYS_DISK:
        return (uint64_t)(int64_t)virtio_disk_io((uint32_t)a, b, (void *)c, d != 0);
    case SYS_REBOOT:
        outb(0xcf9, 0x06); /* system reset + reset CPU */
        return 0;
    default:
        return (uint64_t)-1;
    }
}

void isr_dispatch(struct frame *f)
{
    if (f->vector == 6 && (f->cs & 3) == 3 && *(const uint16_t *)f->rip == 0x80cd) {
        /* `int $0x80` from ring 3, delivered as #UD (see entry.S). */
        f->rip += 2;
        f->rax = syscall_dispatch(f->rdi, f->rsi, f->rdx, f->r10, f->rax);
    } else if (f->vector < 32) {
        fatal_exception(f);
    } else {
        unsigned irq = (unsigned)f->vector - 32;
        if (irq == 0) {
            timer_irq();
        } else if (irq == 4) {
            serial_irq();
        }
        if (irq >= 8) {
            outb(0xa0, 0x20);
        }
        outb(0x20, 0x20);
    }
}
