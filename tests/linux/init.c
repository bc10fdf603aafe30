/*
 * The test initrd's /init: a static, freestanding program that says it
 * started and then exits.  On the PVM host a guest `syscall` from CPL3 never
 * enters the kernel, so this dies on its first system call there; the smoke
 * test only needs the kernel to reach "Run /init as init process".  On a host
 * with real VT-x/AMD-V it prints its line on the console and the kernel then
 * panics because init exited, which is as far as this test kernel goes.
 */
static long sys3(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

void _start(void)
{
    static const char msg[] = "snapvm-test-init: running\n";
    sys3(1 /* write */, 1, (long)msg, sizeof(msg) - 1);
    for (;;) {
        sys3(60 /* exit */, 0, 0, 0);
    }
}
