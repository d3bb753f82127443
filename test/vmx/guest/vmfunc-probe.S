/*
 * Guest probe for the vmx e2e suite: executes VMFUNC with EAX = 0 (EPTP switching)
 * and ECX = 0 (EPTP-list slot 0, the VM's own EPT after an ELISA activation).
 * If the instruction completes, the program exits with code 1. If it faults (#UD
 * when VM functions are not enabled for this VM), the host's exception stubs report
 * the fault at the symbol vmfunc_site.
 * Linked with native/guest/linker.ld (entry _start at 1 MiB, 64-bit, CPL 0, IF = 0).
 */
#define PORT_EXIT 0x500

    .section .text.start, "ax"
    .globl _start
_start:
    xorl %eax, %eax
    xorl %ecx, %ecx
    .globl vmfunc_site
vmfunc_site:
    vmfunc
    movl $1, %eax
    movw $PORT_EXIT, %dx
    outl %eax, %dx
    ud2
