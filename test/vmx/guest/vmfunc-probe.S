/*
 * Guest probe for the vmx e2e suite: executes VMFUNC with EAX = 0 (EPTP switching)
 * and ECX = the EPTP-list slot the host put in RCX, RBX times in a row (RBX = 0 counts
 * as 1), then exits with code 1. If VMFUNC faults (#UD when VM functions are not
 * enabled for this vCPU, or when the slot is empty and KVM reflects the VMFUNC exit),
 * the host's exception stubs report the fault at the symbol vmfunc_site.
 * Linked with native/guest/linker.ld (entry _start at 1 MiB, 64-bit, CPL 0, IF = 0).
 */
#define PORT_EXIT 0x500

    .section .text.start, "ax"
    .globl _start
_start:
    movq %rbx, %rsi
    testq %rsi, %rsi
    jnz 1f
    movl $1, %esi
1:
    xorl %eax, %eax
    .globl vmfunc_site
vmfunc_site:
    vmfunc
    decq %rsi
    jnz 1b
    movl $1, %eax
    movw $PORT_EXIT, %dx
    outl %eax, %dx
    ud2
