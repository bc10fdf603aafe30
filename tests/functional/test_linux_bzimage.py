"""-kernel with a bzImage: the x86 boot protocol, tested with a tiny fake
bzImage assembled here (a real setup header, and 64-bit code at the 64-bit
entry, load address + 0x200) that reports on COM1 what it was handed: the
segment selectors of the 64-bit boot protocol, the zero page's loader type,
command line, initrd and e820 map, and the MP table's CPU count and checksum.
A real Linux kernel is booted by scripts/linux-smoke.sh (minutes here)."""
import struct
import subprocess

import pytest

from vm import VM, run_snapvm

pytestmark = pytest.mark.kvm

LOAD = 0x200000

KERNEL_S = r"""
    .text
    .code64
    .skip 0x200                 /* the 64-bit entry is at load address + 0x200 */
    .globl entry64
entry64:
    lea stack_top(%rip), %rsp
    mov %rsi, %rbx              /* struct boot_params */
    lea msg_sel(%rip), %rdi
    call puts
    mov %cs, %ax
    call hex8
    mov %ds, %ax
    call hex8
    mov %ss, %ax
    call hex8
    call newline
    lea msg_loader(%rip), %rdi
    call puts
    movzbl 0x210(%rbx), %eax    /* type_of_loader */
    call hex8
    call newline
    lea msg_cmd(%rip), %rdi
    call puts
    movl 0x228(%rbx), %edi      /* cmd_line_ptr */
    call puts
    call newline
    movl 0x21c(%rbx), %ecx      /* ramdisk_size */
    test %ecx, %ecx
    jz 1f
    lea msg_rd(%rip), %rdi
    call puts
    movl 0x218(%rbx), %edi      /* ramdisk_image */
    call puts
    call newline
1:  lea msg_e820(%rip), %rdi
    call puts
    movzbl 0x1e8(%rbx), %eax    /* e820_entries */
    call hex8
    call newline
    /* The MP table: floating pointer at 0xf0000, its config table. */
    lea msg_mp(%rip), %rdi
    call puts
    cmpl $0x5f504d5f, 0xf0000   /* "_MP_" */
    jne bad
    movl 0xf0004, %esi          /* config table */
    cmpl $0x504d4350, (%rsi)    /* "PCMP" */
    jne bad
    movzwl 4(%rsi), %ecx        /* length: the checksum covers it all */
    xor %eax, %eax
    mov %rsi, %rdi
2:  addb (%rdi), %al
    inc %rdi
    loop 2b
    test %al, %al
    jnz bad
    movzwl 0x22(%rsi), %ecx     /* entry count */
    lea 44(%rsi), %rdi
    xor %edx, %edx              /* processors */
3:  cmpb $0, (%rdi)
    jne 4f
    inc %edx
    add $20, %rdi
    jmp 5f
4:  add $8, %rdi
5:  loop 3b
    mov %edx, %eax
    call hex8
    call newline
halt:
    hlt
    jmp halt
bad:
    lea msg_bad(%rip), %rdi
    call puts
    jmp halt

puts:                           /* the NUL-terminated string at rdi */
    movb (%rdi), %al
    test %al, %al
    jz 6f
    mov $0x3f8, %dx
    out %al, %dx
    inc %rdi
    jmp puts
6:  ret
hex8:                           /* al as two hex digits */
    push %rax
    shr $4, %al
    call nibble
    pop %rax
nibble:
    and $0xf, %al
    add $'0', %al
    cmp $'9', %al
    jbe 7f
    add $('a' - '9' - 1), %al
7:  mov $0x3f8, %dx
    out %al, %dx
    ret
newline:
    mov $'\n', %al
    mov $0x3f8, %dx
    out %al, %dx
    ret

msg_sel:    .asciz "bz: cs ds ss="
msg_loader: .asciz "bz: loader="
msg_cmd:    .asciz "bz: cmdline="
msg_rd:     .asciz "bz: initrd="
msg_e820:   .asciz "bz: e820="
msg_mp:     .asciz "bz: mp cpus="
msg_bad:    .asciz "bad\n"
    .balign 16
    .skip 4096
stack_top:
"""


def setup_header(pm_len, version=0x020F, xloadflags=1, setup_sects=1, init_size=0x40000):
    """A boot sector and setup header as Documentation/x86/boot.rst lays
    them out (offsets from the start of the file)."""
    h = bytearray(512 * (setup_sects + 1))
    end = 0x268  # the end of the 2.12+ header (init_size ends at 0x264)
    h[0x1F1] = setup_sects
    struct.pack_into("<I", h, 0x1F4, (pm_len + 15) // 16)  # syssize
    struct.pack_into("<H", h, 0x1FE, 0xAA55)  # boot_flag
    h[0x200] = 0xEB  # jump over the header
    h[0x201] = end - 0x202
    h[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", h, 0x206, version)
    struct.pack_into("<I", h, 0x22C, 0x7FFFFFFF)  # initrd_addr_max
    struct.pack_into("<I", h, 0x230, 0x200000)  # kernel_alignment
    h[0x234] = 1  # relocatable_kernel
    struct.pack_into("<H", h, 0x236, xloadflags)
    struct.pack_into("<I", h, 0x238, 2047)  # cmdline_size
    struct.pack_into("<Q", h, 0x258, LOAD)  # pref_address
    struct.pack_into("<I", h, 0x260, init_size)
    return bytes(h)


@pytest.fixture
def pm_code(tmp_path):
    src, obj, elf, flat = (tmp_path / n for n in ("k.S", "k.o", "k.elf", "k.bin"))
    src.write_text(KERNEL_S)
    subprocess.run(["gcc", "-c", str(src), "-o", str(obj)], check=True)
    subprocess.run(["ld", "-m", "elf_x86_64", "-nostdlib", "-static", "-e", "entry64",
                    "-Ttext", hex(LOAD), "-o", str(elf), str(obj)], check=True)
    subprocess.run(["objcopy", "-O", "binary", str(elf), str(flat)], check=True)
    return flat.read_bytes()


@pytest.fixture
def bzimage(tmp_path, pm_code):
    path = tmp_path / "bzImage"
    path.write_bytes(setup_header(len(pm_code)) + pm_code)
    return path


def test_bzimage_boot_protocol(tmp_path, bzimage):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"initrd-contents\0")
    with VM(["-m", "64", "-smp", "3", "-kernel", str(bzimage), "-initrd", str(initrd),
             "-append", "console=ttyS0 noxsave"]) as vm:
        assert vm.readline() == "bz: cs ds ss=101818"  # __BOOT_CS, __BOOT_DS
        assert vm.readline() == "bz: loader=ff"
        assert vm.readline() == "bz: cmdline=console=ttyS0 noxsave"
        assert vm.readline() == "bz: initrd=initrd-contents"
        # below 640 KiB, the BIOS area (reserved: the MP table), from 1 MiB
        assert vm.readline() == "bz: e820=03"
        assert vm.readline() == "bz: mp cpus=03"
        assert vm.stop() == 0


def test_bzimage_high_ram_and_no_initrd(bzimage):
    with VM(["-m", "4G", "-kernel", str(bzimage)]) as vm:
        assert vm.readline() == "bz: cs ds ss=101818"
        assert vm.readline() == "bz: loader=ff"
        assert vm.readline() == "bz: cmdline="
        assert vm.readline() == "bz: e820=04"  # ..., below 3 GiB, above 4 GiB
        assert vm.readline() == "bz: mp cpus=01"
        assert vm.stop() == 0


def test_bzimage_errors(tmp_path, pm_code):
    old = tmp_path / "old"
    old.write_bytes(setup_header(len(pm_code), version=0x020A) + pm_code)
    no64 = tmp_path / "no64"
    no64.write_bytes(setup_header(len(pm_code), xloadflags=0) + pm_code)
    short = tmp_path / "short"
    short.write_bytes(setup_header(len(pm_code), setup_sects=40)[:2048])
    good = tmp_path / "good"
    good.write_bytes(setup_header(len(pm_code)) + pm_code)
    huge = tmp_path / "huge"  # needs 2 MiB + 8 MiB of RAM from where it runs
    huge.write_bytes(setup_header(len(pm_code), init_size=8 << 20) + pm_code)
    big = tmp_path / "big.initrd"
    with open(big, "wb") as f:
        f.truncate(8 << 20)
    cases = [
        (["-kernel", str(old)], "has boot protocol 2.10; the 64-bit entry needs 2.12 or later"),
        (["-kernel", str(no64)], "has boot protocol 2.15 without a 64-bit entry"),
        (["-kernel", str(short)], "40 setup sectors, but the file has only 2048 bytes"),
        (["-m", "4", "-kernel", str(good), "-initrd", str(big)], "does not fit in guest RAM"),
        (["-m", "8", "-kernel", str(huge)], "-m: too small for -kernel '%s' (it needs RAM up to "
         "10 MiB)" % huge),
        (["-kernel", str(good), "-append", "x" * 2048], "-append: 2048 bytes, but -kernel"),
    ]
    for args, needle in cases:
        r = run_snapvm(args)
        assert r.returncode == 1, (args, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, r.stderr)
