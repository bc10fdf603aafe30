/*
 * Entry point and interrupt stubs of the built-in guest.
 *
 * snapvm enters _start directly in 64-bit long mode (paging on, identity
 * map, flat code/data descriptors in the hidden segment state) with RDI
 * pointing to the boot-info page.  We load our own GDT so that the selectors
 * we later put in the IDT and in iretq frames refer to descriptors that live
 * in guest RAM (and therefore survive a snapshot), then call kmain().
 *
 * Every interrupt and exception goes through one common stub that saves the
 * general-purpose registers into a struct frame (guest.h) and calls
 * isr_dispatch().
 *
 * System calls are `int $0x80` from ring 3.  This host delivers a software
 * interrupt from ring 3 as #UD at the `int` instruction, so the #UD handler
 * recognises the two bytes and runs the system call (kernel.c).  SYSCALL is
 * no alternative: it reaches the kernel in a mode where `sti` faults.
 * Either way the handler runs through an interrupt gate with IF clear, so a
 * system call is atomic with respect to interrupts (a reply line is never
 * split by a tick line) until SYS_WAIT enables them.
 */
#define KERNEL_CS 0x08
#define KERNEL_DS 0x10

    .section .header, "a"
    .long 0x54534756            /* GUEST_IMAGE_MAGIC */
    .long 1
    .quad _start
    .quad __file_end - 0x100000
    .quad __mem_end - 0x100000

    .section .text.start, "ax"
    .code64
    .globl _start
_start:
    cli
    mov kernel_stack_top_ptr, %rsp
    mov %rdi, %rbx
    lgdt gdt_desc
    /* Reload CS through a far return: a plain mov cannot load CS. */
    pushq $KERNEL_CS
    pushq $1f
    lretq
1:  mov $KERNEL_DS, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov %rbx, %rdi
    call kmain
2:  hlt
    jmp 2b

/* Drop to ring 3: enter_user(rip, rsp).  IF is set in the new RFLAGS. */
    .globl enter_user
enter_user:
    pushq $0x1b                 /* user data selector | RPL 3 */
    pushq %rsi
    pushq $0x202
    pushq $0x23                 /* user code selector | RPL 3 */
    pushq %rdi
    iretq

.macro ISR_NOERR vec
    .globl isr_\vec
isr_\vec:
    pushq $0
    pushq $\vec
    jmp isr_common
.endm

.macro ISR_ERR vec
    .globl isr_\vec
isr_\vec:
    pushq $\vec
    jmp isr_common
.endm

isr_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    cld
    mov %rsp, %rdi
    call isr_dispatch
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    add $16, %rsp
    iretq

ISR_NOERR 0
ISR_NOERR 1
ISR_NOERR 2
ISR_NOERR 3
ISR_NOERR 4
ISR_NOERR 5
ISR_NOERR 6
ISR_NOERR 7
ISR_ERR 8
ISR_NOERR 9
ISR_ERR 10
ISR_ERR 11
ISR_ERR 12
ISR_ERR 13
ISR_ERR 14
ISR_NOERR 15
ISR_NOERR 16
ISR_ERR 17
ISR_NOERR 18
ISR_NOERR 19
ISR_NOERR 20
ISR_ERR 21
ISR_NOERR 22
ISR_NOERR 23
ISR_NOERR 24
ISR_NOERR 25
ISR_NOERR 26
ISR_NOERR 27
ISR_NOERR 28
ISR_ERR 29
ISR_ERR 30
ISR_NOERR 31
ISR_NOERR 32
ISR_NOERR 33
ISR_NOERR 34
ISR_NOERR 35
ISR_NOERR 36
ISR_NOERR 37
ISR_NOERR 38
ISR_NOERR 39
ISR_NOERR 40
ISR_NOERR 41
ISR_NOERR 42
ISR_NOERR 43
ISR_NOERR 44
ISR_NOERR 45
ISR_NOERR 46
ISR_NOERR 47

/* Table of stub addresses for vectors 0..47, used by idt_init(). */
    .section .rodata
    .globl isr_table
    .balign 8
isr_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
    .quad isr_\v
    .endr

    .section .note.GNU-stack, "", @progbits
