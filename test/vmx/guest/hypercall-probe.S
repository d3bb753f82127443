/*
 * Guest probe for the vmx e2e suite: one VMCALL with the registers the host set
 * (RAX = hypercall number, RBX/RCX/RDX/RSI = arguments), then reports RAX as the
 * program's 64-bit result and exits with code 0.
 * Linked with native/guest/linker.ld (entry _start at 1 MiB, 64-bit, CPL 0, IF = 0).
 */
#define PORT_EXIT      0x500
#define PORT_RESULT_LO 0x504
#define PORT_RESULT_HI 0x508

    .section .text.start, "ax"
    .globl _start
_start:
    .globl vmcall_site
vmcall_site:
    vmcall
    movq %rax, %rsi
    movw $PORT_RESULT_LO, %dx
    movl %esi, %eax
    outl %eax, %dx
    shrq $32, %rsi
    movw $PORT_RESULT_HI, %dx
    movl %esi, %eax
    outl %eax, %dx
    xorl %eax, %eax
    movw $PORT_EXIT, %dx
    outl %eax, %dx
    ud2
