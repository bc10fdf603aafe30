"""-kernel with a PVH ELF: a tiny PVH kernel, assembled here, checks the
hvm_start_info magic and prints its command line and initrd on COM1.
(Linux itself, bzImage and PVH, is booted by scripts/linux-smoke.sh and
tests/functional/test_linux_boot.py; see docs/machine.md.)"""
import os
import subprocess

import pytest

from vm import VM, run_snapvm

pytestmark = pytest.mark.kvm

KERNEL_S = r"""
    .section .note.Xen, "a", @note
    .balign 4
    .long 4, 4, 18              /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start

    .text
    .code32
    .globl pvh_start
pvh_start:                      /* 32-bit protected mode, paging off, ebx = start_info */
    cli
    mov $stack_top, %esp
    cmpl $0x336ec578, (%ebx)    /* magic */
    jne bad
    mov $msg_ok, %esi
    call puts
    mov 24(%ebx), %esi          /* cmdline_paddr */
    call puts
    mov $nl, %esi
    call puts
    cmpl $1, 12(%ebx)           /* nr_modules */
    jne 1f
    mov 16(%ebx), %edi          /* modlist_paddr */
    mov (%edi), %esi            /* modlist[0].paddr */
    call puts
    mov $nl, %esi
    call puts
1:  mov $msg_map, %esi
    call puts
    mov 48(%ebx), %eax          /* memmap_entries */
    add $'0', %al
    mov $0x3f8, %dx
    out %al, %dx
    mov $nl, %esi
    call puts
2:  hlt
    jmp 2b
bad:
    mov $msg_bad, %esi
    call puts
    jmp 2b
puts:                           /* print the string at esi on COM1 */
    mov $128, %ecx
3:  lodsb
    test %al, %al
    jz 4f
    mov $0x3f8, %dx
    out %al, %dx
    loop 3b
4:  ret

    .data
msg_ok:  .asciz "pvh: cmdline="
msg_map: .asciz "pvh: memmap entries="
msg_bad: .asciz "pvh: bad magic\n"
nl:      .asciz "\n"
    .bss
    .balign 16
    .skip 4096
stack_top:
"""


@pytest.fixture
def pvh_kernel(tmp_path):
    src = tmp_path / "k.S"
    src.write_text(KERNEL_S)
    obj, elf = tmp_path / "k.o", tmp_path / "k.elf"
    subprocess.run(["gcc", "-c", str(src), "-o", str(obj)], check=True)
    subprocess.run(["ld", "-m", "elf_x86_64", "-nostdlib", "-static", "-e", "pvh_start",
                    "-Ttext", "0x100000", "--no-warn-rwx-segments", "-o", str(elf), str(obj)],
                   check=True)
    return elf


def test_pvh_kernel_gets_cmdline_initrd_and_memmap(tmp_path, pvh_kernel):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"initrd-contents\0")
    with VM(["-m", "64", "-kernel", str(pvh_kernel), "-initrd", str(initrd),
             "-append", "console=ttyS0 quiet"]) as vm:
        assert vm.readline() == "pvh: cmdline=console=ttyS0 quiet"
        assert vm.readline() == "initrd-contents"
        # below 640 KiB, the BIOS area (reserved: the MP table), from 1 MiB
        assert vm.readline() == "pvh: memmap entries=3"
        assert vm.stop() == 0


def test_pvh_kernel_with_high_ram(tmp_path, pvh_kernel):
    with VM(["-m", "4G", "-kernel", str(pvh_kernel)]) as vm:
        assert vm.readline() == "pvh: cmdline="
        assert vm.readline() == "pvh: memmap entries=4"  # ..., below 3 GiB, above 4 GiB
        assert vm.stop() == 0


def test_kernel_errors(tmp_path, pvh_kernel):
    notkernel = tmp_path / "notkernel"
    notkernel.write_bytes(b"MZ" + b"\0" * 1024)
    nonote = tmp_path / "nonote.elf"
    obj = tmp_path / "n.o"
    (tmp_path / "n.S").write_text(".text\n.globl _start\n_start: hlt\n")
    subprocess.run(["gcc", "-c", str(tmp_path / "n.S"), "-o", str(obj)], check=True)
    subprocess.run(["ld", "-nostdlib", "-static", "-Ttext", "0x100000", "-o", str(nonote),
                    str(obj)], check=True)
    big = tmp_path / "big.initrd"
    with open(big, "wb") as f:
        f.truncate(8 << 20)
    cases = [
        (["-kernel", str(notkernel)], "is neither a bzImage (no 'HdrS' setup header) nor"),
        (["-kernel", str(nonote)], "has no PVH entry point"),
        (["-m", "4", "-kernel", str(pvh_kernel), "-initrd", str(big)], "does not fit"),
    ]
    for args, needle in cases:
        r = run_snapvm(args)
        assert r.returncode == 1, (args, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, r.stderr)
